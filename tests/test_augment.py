import math
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.autoaugment as autoaugment
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from cifar_study.augment import (ERASING, TRIVIAL_AUGMENT_OPS, BatchAugment, apply_trivial_augment, erase_rectangles,
                                 horizontal_flip, normalize, padded_crop, random_crop, random_erasing,
                                 random_erasing_params, random_horizontal_flip, trivial_augment_params,
                                 trivial_augment_space, trivial_augment_wide)

MEAN, STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


@pytest.fixture
def images():
    return torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_crop_at_given_offsets_equals_torchvision_crop_of_the_padded_image(images):
    top, left = torch.randint(0, 9, (16,)), torch.randint(0, 9, (16,))
    top[:2], left[:2] = torch.tensor([0, 8]), torch.tensor([8, 0])  # the extreme offsets are included
    cropped = padded_crop(images, top, left)
    for image, out, i, j in zip(images, cropped, top.tolist(), left.tolist()):
        assert torch.equal(out, TF.crop(TF.pad(image, 4), i, j, 32, 32))
        pil = Image.fromarray(image.permute(1, 2, 0).numpy())
        assert torch.equal(out.permute(1, 2, 0), torch.from_numpy(np.array(TF.crop(TF.pad(pil, 4), i, j, 32, 32))))


def test_one_image_draws_exactly_what_torchvision_draws(images):
    # for a batch of one, crop then flip consume torch's generator as RandomCrop then RandomHorizontalFlip do
    pipeline = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    for seed in range(30):
        torch.manual_seed(seed)
        expected = pipeline(images[0])
        torch.manual_seed(seed)
        assert torch.equal(random_horizontal_flip(random_crop(images[:1]))[0], expected)


def test_each_image_draws_its_own_uniform_offsets():
    # channel 0 holds each pixel's row + 1, channel 1 its column + 1: the crop's centre pixel reads
    # image pixel (top + 12, left + 12), always inside the image, so it tells each image's offsets
    n = 9000
    position = torch.stack(torch.meshgrid(torch.arange(1, 33), torch.arange(1, 33), indexing='ij')).to(torch.uint8)
    torch.manual_seed(0)
    cropped = random_crop(position.expand(n, -1, -1, -1))
    top, left = cropped[:, 0, 16, 16].long() - 13, cropped[:, 1, 16, 16].long() - 13
    assert torch.equal(cropped, padded_crop(position.expand(n, -1, -1, -1), top, left))
    for offsets in (top, left):
        counts = torch.bincount(offsets, minlength=9)
        assert len(counts) == 9 and counts.min() > 0.85 * n / 9 and counts.max() < 1.15 * n / 9
    assert len(set(zip(top[:16].tolist(), left[:16].tolist()))) > 8  # images of one batch differ
    assert (top != left).float().mean() > 0.8  # top and left are drawn separately


def test_flip_at_given_choices_equals_torchvision_hflip(images):
    choice = torch.arange(16) % 3 == 0
    flipped = horizontal_flip(images, choice)
    for image, out, flip in zip(images, flipped, choice.tolist()):
        assert torch.equal(out, TF.hflip(image) if flip else image)


def test_flip_rate_and_independence(images):
    torch.manual_seed(0)
    batch = images[:1].expand(4000, -1, -1, -1)
    flipped = random_horizontal_flip(batch)
    was_flipped = (flipped == images[0].flip(-1)).flatten(1).all(1)
    assert (was_flipped | (flipped == images[0]).flatten(1).all(1)).all()
    assert abs(was_flipped.float().mean().item() - 0.5) < 0.03
    assert 0 < was_flipped[:16].sum() < 16  # one batch mixes flipped and unflipped images
    assert not random_horizontal_flip(batch[:100], p=0.0).ne(batch[:100]).any()


def test_normalize_equals_totensor_and_normalize_exactly(images):
    reference = T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)])
    expected = torch.stack([reference(Image.fromarray(image.permute(1, 2, 0).numpy())) for image in images])
    out = normalize(images, MEAN, STD)
    assert out.dtype == torch.float32 and torch.equal(out, expected)
    with pytest.raises(TypeError, match='uint8'):
        normalize(images.float(), MEAN, STD)


def test_reproducible_under_manual_seed(images):
    augment = BatchAugment(True, True, MEAN, STD)
    labels = torch.arange(16)
    torch.manual_seed(7)
    first = augment((images, labels))
    torch.manual_seed(7)
    second = augment((images, labels))
    third = augment((images, labels))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], labels)
    assert not torch.equal(second[0], third[0])


def test_batch_augment_steps_and_description(images):
    none = BatchAugment(False, False, MEAN, STD)
    assert torch.equal(none((images, None))[0], normalize(images, MEAN, STD))
    assert none.describe() == [f'normalize(mean={MEAN}, std={STD})']
    both = BatchAugment(True, True, MEAN, STD)
    assert both.describe() == ['random_crop(padding=4, per image, batched)',
                               'random_horizontal_flip(p=0.5, per image, batched)', f'normalize(mean={MEAN}, std={STD})']
    torch.manual_seed(3)
    expected = normalize(random_horizontal_flip(random_crop(images)), MEAN, STD)
    torch.manual_seed(3)
    assert torch.equal(both((images, None))[0], expected)



def chi_square_critical(dof: int, z: float = 3.09) -> float:
    "The chi-square value exceeded with probability ~0.001 (z = 3.09), by the Wilson-Hilferty approximation."
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


def assert_same_distribution(ours: list, theirs: list):
    "Two samples of a discrete variable: the same values, and a chi-square test of homogeneity that passes at p=0.001."
    a, b = Counter(ours), Counter(theirs)
    assert set(a) == set(b), sorted(set(a) ^ set(b))[:10]
    n_a, n_b = len(ours), len(theirs)
    statistic = 0.0
    for value in a:
        expected_a = (a[value] + b[value]) * n_a / (n_a + n_b)
        expected_b = (a[value] + b[value]) * n_b / (n_a + n_b)
        statistic += (a[value] - expected_a) ** 2 / expected_a + (b[value] - expected_b) ** 2 / expected_b
    if len(a) > 1: assert statistic < chi_square_critical(len(a) - 1), (statistic, len(a))


def test_op_table_is_torchvisions():
    ours, theirs = trivial_augment_space(31), T.TrivialAugmentWide()._augmentation_space(31)
    assert list(ours) == list(theirs) == list(TRIVIAL_AUGMENT_OPS)
    for name, (bins, signed) in ours.items():
        their_bins, their_signed = theirs[name]
        assert signed == their_signed
        if bins is None: assert their_bins.ndim == 0  # torchvision's mark for "no magnitude"
        else: assert bins.dtype == their_bins.dtype and torch.equal(bins, their_bins)


def every_magnitude(name: str) -> list[float]:
    "Every magnitude `TrivialAugmentWide` can give op `name`: each bin, and its negative for signed ops."
    bins, signed = trivial_augment_space(31)[name]
    if bins is None: return [0.0]
    values = [float(v) for v in bins.tolist()]
    return values + [-v for v in values] if signed else values


@pytest.mark.parametrize('name', TRIVIAL_AUGMENT_OPS)
def test_each_op_at_every_magnitude_equals_torchvisions_tensor_op(name):
    # exact, pixel for pixel: the same matrices, grids, blends and look-up tables as torchvision's tensor functions
    magnitudes = every_magnitude(name)
    images = torch.randint(0, 256, (len(magnitudes), 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(TRIVIAL_AUGMENT_OPS.index(name)))
    images[0, 1] = 77  # a flat channel: autocontrast and equalize keep it
    op = torch.full((len(magnitudes),), TRIVIAL_AUGMENT_OPS.index(name))
    out = apply_trivial_augment(images, op, torch.tensor(magnitudes, dtype=torch.float64))
    for image, result, magnitude in zip(images, out, magnitudes):
        expected = autoaugment._apply_op(image, name, magnitude, InterpolationMode.NEAREST, None)
        assert torch.equal(result, expected), (name, magnitude, (result != expected).sum().item())


def test_ops_of_one_batch_differ_and_leave_the_others_alone(images):
    # a batch mixing all ops gives each image exactly what its op alone gives it
    op = torch.arange(16) % len(TRIVIAL_AUGMENT_OPS)
    some = lambda values: values[len(values) // 3 * 2]  # a negative one, for signed ops
    magnitude = torch.tensor([some(every_magnitude(TRIVIAL_AUGMENT_OPS[i])) for i in op.tolist()], dtype=torch.float64)
    out = apply_trivial_augment(images, op, magnitude)
    for i in range(16):
        assert torch.equal(out[i], apply_trivial_augment(images[i:i + 1], op[i:i + 1], magnitude[i:i + 1])[0])
    assert torch.equal(out[0], images[0])  # Identity
    with pytest.raises(TypeError, match='uint8'):
        apply_trivial_augment(images.float(), op, magnitude)


PIL_AGREEMENT = {  # op: (largest difference in intensity, smallest share of equal pixels) against the PIL op
    'Rotate': (255, 0.97),  # nearest-neighbour picks differ where a sampling point falls near a pixel boundary
    'Color': (1, 0.4), 'Contrast': (1, 0.0), 'Sharpness': (1, 0.9),  # PIL rounds the blends, torchvision truncates
}


def test_ops_against_pil_as_the_per_image_pipeline_runs_them(images):
    # the study's per-image path applies TrivialAugmentWide to PIL images: ten ops give the same pixels as PIL
    # does, Color, Contrast and Sharpness are within one intensity level, Rotate differs at a few boundary pixels
    pil_images = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images[:4]]
    for name in TRIVIAL_AUGMENT_OPS:
        largest, equal_share = PIL_AGREEMENT.get(name, (0, 1.0))
        for magnitude in every_magnitude(name):
            op = torch.full((4,), TRIVIAL_AUGMENT_OPS.index(name))
            ours = apply_trivial_augment(images[:4], op, torch.full((4,), magnitude, dtype=torch.float64)).int()
            for pil, out in zip(pil_images, ours):
                theirs = torch.from_numpy(np.array(autoaugment._apply_op(pil, name, magnitude, InterpolationMode.NEAREST, None)))
                difference = (out.permute(1, 2, 0) - theirs.int()).abs()
                assert difference.max() <= largest and (difference == 0).float().mean() >= equal_share, (name, magnitude)


def torchvision_draws(n: int) -> list[tuple[str, float]]:
    "The (op, magnitude) that `TrivialAugmentWide` draws for `n` images, caught where it applies them."
    draws, apply_op = [], autoaugment._apply_op
    def record(img, op_name, magnitude, **kwargs):
        draws.append((op_name, magnitude))
        return img
    autoaugment._apply_op = record
    try:
        augment, image = T.TrivialAugmentWide(), torch.zeros(3, 4, 4, dtype=torch.uint8)
        for _ in range(n): augment(image)
    finally: autoaugment._apply_op = apply_op
    return draws


def test_op_and_magnitude_frequencies_match_torchvisions_draws():
    n = 28_000
    torch.manual_seed(0)
    theirs = torchvision_draws(n)
    op, magnitude = trivial_augment_params(n)
    ours = [(TRIVIAL_AUGMENT_OPS[i], m) for i, m in zip(op.tolist(), magnitude.tolist())]
    assert_same_distribution([name for name, _ in ours], [name for name, _ in theirs])
    for name in TRIVIAL_AUGMENT_OPS:  # each op's magnitudes: the same values (bins and signs), equally often
        assert_same_distribution([m for o, m in ours if o == name], [m for o, m in theirs if o == name])
    counts = Counter(name for name, _ in ours)
    assert all(abs(count - n / 14) < 4 * math.sqrt(n / 14) for count in counts.values())  # uniform over the 14 ops
    negative = [m < 0 for o, m in ours if trivial_augment_space()[o][1] and m != 0]
    assert abs(sum(negative) / len(negative) - 0.5) < 0.02


def test_trivial_augment_draws_per_image_and_reproducibly(images):
    batch = images[:1].expand(64, -1, -1, -1)
    torch.manual_seed(5)
    first = trivial_augment_wide(batch)
    torch.manual_seed(5)
    assert torch.equal(first, trivial_augment_wide(batch))
    assert len({out.numpy().tobytes() for out in first}) > 40  # one image, many different results in one batch


def test_erase_at_given_rectangles_equals_torchvision_erase():
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rectangles = [(0, 0, 31, 5), (3, 9, 10, 20), (31, 31, 1, 1), (5, 5, 0, 0), (12, 0, 7, 31), (0, 17, 2, 15)]
    top, left, height, width = (torch.tensor(v) for v in zip(*rectangles))
    out = erase_rectangles(images, top, left, height, width)
    for image, result, (i, j, h, w) in zip(images, out, rectangles):
        assert torch.equal(result, TF.erase(image, i, j, h, w, torch.tensor(0.0)))


def erased_rectangle(image: torch.Tensor):
    "(top, left, height, width) of the zeros in an image of ones, or None when nothing was erased."
    rows, cols = (image[0] == 0).any(1).nonzero().flatten(), (image[0] == 0).any(0).nonzero().flatten()
    if len(rows) == 0: return None
    return rows[0].item(), cols[0].item(), len(rows), len(cols)


def test_erasing_rate_sizes_and_positions_match_torchvisions():
    n = 8000
    torch.manual_seed(0)
    erase = T.RandomErasing(**ERASING)
    theirs = [erased_rectangle(erase(torch.ones(3, 32, 32))) for _ in range(n)]
    ours = [erased_rectangle(image) for image in random_erasing(torch.ones(n, 3, 32, 32), **ERASING)]
    for sample in (ours, theirs): assert abs(sum(r is not None for r in sample) / n - 0.5) < 0.02
    ours, theirs = [r for r in ours if r], [r for r in theirs if r]
    area = lambda r: min(r[2] * r[3] // 40, 8)  # 40-pixel bins (the areas run from about 20 to 338 pixels)
    shape = lambda r: round(math.log(r[2] / r[3]) * 2)  # log aspect ratio in half units
    place = lambda r: (r[0] * 4 // (33 - r[2]), r[1] * 4 // (33 - r[3]))  # position within the free range, quarters
    for feature in (area, shape, place, lambda r: r[2], lambda r: r[3]):
        assert_same_distribution([feature(r) for r in ours], [feature(r) for r in theirs])
    assert all(h < 32 and w < 32 for _, _, h, w in ours)


def test_erasing_params_are_per_image_and_keep_inside_the_image():
    torch.manual_seed(0)
    top, left, height, width = random_erasing_params(5000, 32, 32)
    assert ((top + height <= 32) & (left + width <= 32)).all()
    assert len(set(zip(height[:16].tolist(), width[:16].tolist()))) > 4
    assert (height == 0).equal(width == 0)


def test_batch_augment_runs_the_studys_order():
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    augment = BatchAugment(True, True, MEAN, STD, trivial_augment=True, random_erasing=True)
    torch.manual_seed(9)
    expected = random_erasing(normalize(trivial_augment_wide(random_horizontal_flip(random_crop(images))), MEAN, STD),
                              **ERASING)
    torch.manual_seed(9)
    assert torch.equal(augment((images, None))[0], expected)
    assert augment.describe() == [
        'random_crop(padding=4, per image, batched)', 'random_horizontal_flip(p=0.5, per image, batched)',
        'trivial_augment_wide(num_magnitude_bins=31, interpolation=nearest, fill=0, per image, batched)',
        f'normalize(mean={MEAN}, std={STD})',
        'random_erasing(p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, per image, batched)']
