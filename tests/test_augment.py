import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from cifar_study.augment import (BatchAugment, horizontal_flip, normalize, padded_crop, random_crop,
                                 random_horizontal_flip)

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
