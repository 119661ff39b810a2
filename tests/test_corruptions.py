import hashlib
import importlib.util
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

import cifar_study.corruptions as corruptions
from cifar_study.corruptions import (CORRUPTED_SET_NAME, CORRUPTION_GROUPS, CORRUPTIONS, SEVERITIES, contact_sheet,
                                     corrupt, corrupted_test_set, make_corrupted_set)
from cifar_study.data import CIFARSplit, find_cifar100, load_split, write_synthetic_cifar100

# operations that draw nothing at random, so that the seed cannot change them
NOT_RANDOM = {'defocus_blur', 'zoom_blur', 'brightness', 'contrast', 'pixelate', 'jpeg_compression'}

# With the reference's parameters two corruptions do not move the images further at every severity, in pixels:
# frost dims the image (weight 1 -> 0.75) as it adds more frost (0.2 -> 0.45), and the two changes partly cancel;
# elastic_transform's random affine part, its largest displacement, shrinks (2.56 -> 0.96 pixels) as its elastic
# field grows. Of these two the test asks only that every severity changes the images.
NOT_MONOTONE_IN_PIXELS = {'frost', 'elastic_transform'}
# Steps that raise only a parameter that barely moves pixels, where the distance may fall a little (by up to 10 %):
# glass blur's severities 2, 3 and 5 only raise the blur of severities 1, 2 and 4, and more blur also smooths away
# part of the jitter; motion blur's severity 4 adds to severity 3 kernel taps of weight below 0.3 %, so its random
# angles decide. Every other step must not bring the images closer.
STEP_TOLERANCE = {'glass_blur': 0.1, 'motion_blur': 0.1}


def textured_images(n: int = 32, seed: int = 0) -> np.ndarray:
    "Smooth, textured uint8 images of varied colours: a colour ramp, a disc, a rectangle, a ripple and a little noise."
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:32, 0:32] / 31
    images = []
    for _ in range(n):
        start, end = rng.uniform(0.1, 0.9, (2, 3))
        angle = rng.uniform(0, np.pi)
        image = start + (end - start) * ((np.cos(angle) * rows + np.sin(angle) * cols) / 1.5)[..., None]
        centre_row, centre_col, radius = rng.uniform(8, 24, 2).tolist() + [rng.uniform(4, 9)]
        image[(rows * 31 - centre_row) ** 2 + (cols * 31 - centre_col) ** 2 < radius ** 2] = rng.uniform(0, 1, 3)
        top, left = rng.integers(0, 20, 2)
        image[top:top + 10, left:left + 8] = rng.uniform(0, 1, 3)
        image += 0.1 * (np.sin(rows * rng.uniform(5, 20)) * np.cos(cols * rng.uniform(5, 20)))[..., None]
        images.append(np.clip(image + rng.normal(0, 0.02, image.shape), 0, 1))
    return (np.stack(images) * 255).astype(np.uint8)


@pytest.fixture(scope='module')
def images():
    return textured_images()


@pytest.mark.parametrize('name', CORRUPTIONS)
def test_every_severity_gives_uint8_images_of_the_input_shape(images, name):
    before = images.copy()
    for severity in SEVERITIES:
        out = corrupt(images[:4], name, severity)
        assert (out.dtype, out.shape) == (np.uint8, (4, 32, 32, 3)), severity
    np.testing.assert_array_equal(images, before)  # the input is left alone


@pytest.mark.parametrize('name', CORRUPTIONS)
def test_same_seed_gives_same_images_and_another_seed_other_draws(images, name):
    first, again, other = (corrupt(images[:4], name, 3, seed) for seed in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert np.array_equal(first, other) == (name in NOT_RANDOM)


@pytest.mark.parametrize('name', CORRUPTIONS)
def test_higher_severity_moves_the_images_further(images, name):
    distance = [np.abs(corrupt(images, name, severity).astype(float) - images).mean() for severity in SEVERITIES]
    assert min(distance) > 0.5, distance
    if name not in NOT_MONOTONE_IN_PIXELS:
        assert distance[-1] > distance[0], distance
        floor = 1 - STEP_TOLERANCE.get(name, 0)
        assert all(later >= floor * earlier for earlier, later in zip(distance, distance[1:])), distance


def test_unknown_corruption_or_severity_names_the_choices(images):
    with pytest.raises(ValueError, match='gaussian_noise, shot_noise'):
        corrupt(images, 'speckle_noise', 1)
    with pytest.raises(ValueError, match='1, 2, 3, 4, 5'):
        corrupt(images, 'fog', 6)
    with pytest.raises(ValueError, match=r'uint8 \[N,32,32,3\]'):
        corrupt(images[0], 'fog', 1)


def test_groups_hold_the_15_corruptions_once_in_order():
    assert len(CORRUPTIONS) == 15
    assert [name for names in CORRUPTION_GROUPS.values() for name in names] == list(CORRUPTIONS)


def test_frost_without_its_photographs_says_how_to_install_them(images, monkeypatch):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *args: None)
    corruptions._frost_pictures.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match='pip install imagecorruptions'):
            corrupt(images, 'frost', 1)
    finally:
        corruptions._frost_pictures.cache_clear()


def test_set_is_a_class_balanced_subset_holding_what_corrupt_gives():
    images = textured_images(40, seed=1)
    labels = np.repeat(np.arange(10), 4)  # stored class by class, so a prefix would hold few classes
    corrupted = make_corrupted_set(CIFARSplit(images, labels), n_images=20, seed=2)
    assert np.bincount(corrupted.labels, minlength=10).tolist() == [2] * 10
    np.testing.assert_array_equal(corrupted.labels, labels[corrupted.indices])
    assert corrupted.images.shape == (15, 5, 20, 32, 32, 3)
    snow = list(CORRUPTIONS).index('snow')
    np.testing.assert_array_equal(corrupted.images[snow, 3], corrupt(images[corrupted.indices], 'snow', 4, seed=2))


def test_cache_is_written_loaded_and_made_again_when_damaged(tmp_path):
    source = find_cifar100(write_synthetic_cifar100(tmp_path/'data', n_train=10, n_test=100)['npz'], download=False)
    log = []
    make = lambda: corrupted_test_set(source, n_images=30, cache_dir=tmp_path/'cache', log=log.append)
    made = make()
    sidecar = made.path.with_suffix('.json')
    assert made.path.parent == tmp_path/'cache'
    written = json.loads(sidecar.read_text())
    assert written['npz_sha256'] == hashlib.sha256(made.path.read_bytes()).hexdigest()
    assert written['sha256'] == made.sha256
    test = load_split(source, 'test')
    np.testing.assert_array_equal(made.labels, test.labels[made.indices])

    log.clear()
    loaded = make()
    assert (loaded.sha256, loaded.path) == (made.sha256, made.path)
    np.testing.assert_array_equal(loaded.images, made.images)
    assert len(log) == 1 and log[0].startswith('loaded'), log  # read, not made again
    description = json.dumps(loaded.describe())
    assert json.loads(description)['name'] == CORRUPTED_SET_NAME and str(tmp_path) not in description

    damaged = bytearray(made.path.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    made.path.write_bytes(bytes(damaged))
    log.clear()
    assert make().sha256 == made.sha256
    assert 'fails its checksum' in log[0] and any('gaussian_noise' in line for line in log), log
    assert make().sha256 == made.sha256 and log[-1].startswith('loaded')

    sidecar.unlink()
    log.clear()
    assert make().sha256 == made.sha256
    assert 'no sidecar' in log[0] and sidecar.exists(), log


def test_contact_sheet_shows_clean_and_five_severities_per_corruption(images):
    fig = contact_sheet(images[0])
    try:
        assert len(fig.axes) == len(CORRUPTIONS) * (1 + len(SEVERITIES))
        assert [ax.get_ylabel() for ax in fig.axes[::6]] == [name.replace('_', ' ') for name in CORRUPTIONS]
        assert [ax.get_title() for ax in fig.axes[:6]] == ['clean'] + [f'severity {s}' for s in SEVERITIES]
    finally:
        plt.close(fig)
