import json
import os
import pickle
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.transforms as T

import cifar_study.data as data
from cifar_study.cli import main
from cifar_study.data import (CIFAR100_MEAN, CIFAR100_STD, SYNTHETIC_NAME, CIFARDataError, channel_stats, check_data,
                              cifar100_dataloaders, find_cifar100, load_split, train_transforms, eval_transforms,
                              write_synthetic_cifar100)

THREE_WAYS = ('--data-dir', 'CIFAR_STUDY_DATA', 'download')


def assert_names_fix(error, path):
    message = str(error.value)
    assert str(path) in message
    assert all(way in message for way in THREE_WAYS), message


@pytest.mark.parametrize('layout,fmt', [('pickle', 'torchvision-pickle'), ('npz', 'npz-arrays')])
def test_both_layouts_load_with_shapes_dtypes_and_labels(synthetic_data, layout, fmt):
    source = find_cifar100(synthetic_data[layout])
    assert (source.format, source.name) == (fmt, SYNTHETIC_NAME)
    for split, n in (('train', 200), ('test', 100)):
        loaded = load_split(source, split)
        assert loaded.images.shape == (n, 32, 32, 3) and loaded.images.dtype == np.uint8
        assert loaded.labels.dtype == np.int64 and loaded.labels.min() == 0 and loaded.labels.max() == 99


def test_layouts_hold_identical_images(synthetic_data):
    pickle_split = load_split(find_cifar100(synthetic_data['pickle']), 'train')
    npz_split = load_split(find_cifar100(synthetic_data['npz']), 'train')
    np.testing.assert_array_equal(pickle_split.images, npz_split.images)
    np.testing.assert_array_equal(pickle_split.labels, npz_split.labels)


def test_synthetic_data_is_deterministic(tmp_path):
    first = write_synthetic_cifar100(tmp_path/'a', seed=3)
    second = write_synthetic_cifar100(tmp_path/'b', seed=3)
    assert (first['npz']/'train.npz').read_bytes() == (second['npz']/'train.npz').read_bytes()


def test_search_order_explicit_env_then_repo_then_download(synthetic_data, tmp_path, monkeypatch):
    monkeypatch.setenv('CIFAR_STUDY_DATA', str(synthetic_data['npz']))
    assert find_cifar100().root == synthetic_data['npz']
    assert find_cifar100(synthetic_data['pickle']).format == 'torchvision-pickle'
    monkeypatch.delenv('CIFAR_STUDY_DATA')
    monkeypatch.setattr(data, 'default_data_dir', lambda: synthetic_data['pickle'])
    assert find_cifar100().format == 'torchvision-pickle'
    empty = tmp_path/'empty_repo_data'
    empty.mkdir()
    monkeypatch.setattr(data, 'default_data_dir', lambda: empty)
    downloads = []
    def offline(root, train, download):
        downloads.append((root, train, download))
        raise urllib.error.URLError('offline')
    monkeypatch.setattr(data, 'CIFAR100', offline)
    with pytest.raises(CIFARDataError, match='could not be downloaded') as error:
        find_cifar100()
    assert downloads == [(empty, True, True)]
    assert_names_fix(error, empty)


def test_explicit_folder_without_data_is_an_error(tmp_path):
    with pytest.raises(CIFARDataError, match='not found') as error:
        find_cifar100(tmp_path)
    assert_names_fix(error, tmp_path)
    with pytest.raises(CIFARDataError, match='does not exist'):
        find_cifar100(tmp_path/'missing')


@pytest.mark.parametrize('layout,file', [('npz', 'train.npz'), ('pickle', 'cifar-100-python/train')])
def test_truncated_file_is_reported(tmp_path, layout, file):
    folder = write_synthetic_cifar100(tmp_path)[layout]
    path = folder/file
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CIFARDataError, match='corrupt or truncated') as error:
        load_split(find_cifar100(folder), 'train')
    assert_names_fix(error, path)


def rewrite_npz(folder, **arrays):
    "Replace train.npz with `arrays` and record its checksum, so only the content is wrong."
    np.savez(folder/'train.npz', **arrays)
    meta = json.loads((folder/'meta.json').read_text())
    meta['files']['train.npz']['sha256'] = data._sha256(folder/'train.npz')
    (folder/'meta.json').write_text(json.dumps(meta))


def test_wrong_shapes_and_out_of_range_labels(tmp_path):
    folder = write_synthetic_cifar100(tmp_path)['npz']
    labels = np.zeros(10, np.uint8)
    rewrite_npz(folder, images=np.zeros((10, 32, 32), np.uint8), fine_labels=labels)
    with pytest.raises(CIFARDataError, match=r'expected \[N,32,32,3\] uint8'):
        load_split(find_cifar100(folder), 'train')
    rewrite_npz(folder, images=np.zeros((10, 32, 32, 3), np.uint8), fine_labels=labels + 100)
    with pytest.raises(CIFARDataError, match='labels range from 100 to 100'):
        load_split(find_cifar100(folder), 'train')
    rewrite_npz(folder, images=np.zeros((10, 32, 32, 3), np.uint8), fine_labels=np.zeros(9, np.uint8))
    with pytest.raises(CIFARDataError, match='9 labels for 10 images'):
        load_split(find_cifar100(folder), 'train')
    rewrite_npz(folder, pictures=np.zeros((10, 32, 32, 3), np.uint8))
    with pytest.raises(CIFARDataError, match='cannot be read'):
        load_split(find_cifar100(folder), 'train')


def test_missing_meta_and_bad_split(tmp_path):
    folder = write_synthetic_cifar100(tmp_path)['npz']
    (folder/'meta.json').unlink()
    with pytest.raises(CIFARDataError, match='meta.json is missing'):
        find_cifar100(folder)
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_split(data.DataSource(folder, 'npz-arrays', 'x'), 'valid')


def test_pickle_with_wrong_content_is_reported(tmp_path):
    folder = write_synthetic_cifar100(tmp_path)['pickle']/'cifar-100-python'
    with open(folder/'train', 'wb') as f: pickle.dump({'data': np.zeros((3, 3072), np.uint8)}, f)
    manifest = json.loads((folder/'synthetic.json').read_text())
    manifest['md5']['train'] = data.hashlib.md5((folder/'train').read_bytes()).hexdigest()
    (folder/'synthetic.json').write_text(json.dumps(manifest))
    with pytest.raises(CIFARDataError, match="cannot be read .*KeyError"):
        load_split(find_cifar100(folder.parent), 'train')


def test_official_pickles_are_checked_against_torchvision_md5(tmp_path):
    folder = write_synthetic_cifar100(tmp_path)['pickle']/'cifar-100-python'
    (folder/'synthetic.json').unlink()  # now it claims to be the official data, and its checksums do not match
    source = find_cifar100(folder.parent)
    assert source.name == 'CIFAR-100'
    with pytest.raises(CIFARDataError, match='MD5 differs'):
        load_split(source, 'train')


def test_original_augmentation_exactly():
    steps = train_transforms().transforms
    assert [type(s) for s in steps] == [T.RandomCrop, T.RandomHorizontalFlip, T.TrivialAugmentWide, T.ToTensor,
                                        T.Normalize, T.RandomErasing]
    crop, flip, _, _, normalize, erasing = steps
    assert (crop.size, crop.padding) == ((32, 32), 4)
    assert flip.p == 0.5
    assert (tuple(normalize.mean), tuple(normalize.std)) == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    assert (erasing.p, erasing.scale, erasing.ratio, erasing.value) == (0.5, (0.02, 0.33), (0.3, 3.3), 0)
    assert [type(s) for s in eval_transforms().transforms] == [T.ToTensor, T.Normalize]


@pytest.mark.parametrize('switch,removed', [('random_crop', T.RandomCrop), ('horizontal_flip', T.RandomHorizontalFlip),
                                            ('trivial_augment', T.TrivialAugmentWide), ('random_erasing', T.RandomErasing)])
def test_each_train_step_can_be_switched_off(switch, removed):
    types = [type(s) for s in train_transforms({switch: False}).transforms]
    assert removed not in types and len(types) == 5


def test_unknown_augmentation_preset():
    with pytest.raises(ValueError, match='original, light, none'):
        train_transforms('heavy')


def test_normalisation_statistics(synthetic_data):
    images = load_split(find_cifar100(synthetic_data['npz']), 'train').images
    mean, std = channel_stats(images, chunk=7)
    pixels = images.reshape(-1, 3) / 255
    np.testing.assert_allclose(mean, pixels.mean(0), atol=1e-4)
    np.testing.assert_allclose(std, pixels.std(0), atol=1e-4)
    x, _ = data.CIFARDataset(load_split(find_cifar100(synthetic_data['npz']), 'train'), eval_transforms())[0]
    expected = (torch.tensor(images[0]).permute(2, 0, 1) / 255 - torch.tensor(CIFAR100_MEAN)[:, None, None]) \
        / torch.tensor(CIFAR100_STD)[:, None, None]
    torch.testing.assert_close(x, expected)


def test_dataloaders_batches_seed_and_limits(synthetic_data):
    dls = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, seed=0, train_limit=64, test_limit=50)
    assert (len(dls.train.dataset), len(dls.valid.dataset)) == (64, 50)
    xb, yb = dls.train.one_batch()
    assert xb.shape == (16, 3, 32, 32) and yb.dtype == torch.int64
    assert len(list(dls.valid)) == 4  # 50 test images in batches of 16, none dropped
    epoch = lambda seed: torch.cat([y for _, y in cifar100_dataloaders(synthetic_data['npz'], batch_size=16, seed=seed).train])
    assert torch.equal(epoch(5), epoch(5))
    assert not torch.equal(epoch(5), epoch(6))
    assert dls.source.name == SYNTHETIC_NAME and dls.augment.trivial_augment
    assert dls.transforms['test'][0] == 'ToTensor()'


def test_dataloaders_with_workers(synthetic_data):
    dls = cifar100_dataloaders(synthetic_data['pickle'], batch_size=20, num_workers=2, augment='light')
    assert sum(len(y) for _, y in dls.train) == 200


def test_data_check_command(synthetic_data, capsys):
    main(['data', 'check', '--data-dir', str(synthetic_data['npz'])])
    out = capsys.readouterr().out
    assert '200 train / 100 test' in out and SYNTHETIC_NAME in out and 'npz-arrays' in out
    main(['data', 'check', '--json', '--data-dir', str(synthetic_data['pickle'])])
    report = json.loads(capsys.readouterr().out)
    assert report['format'] == 'torchvision-pickle' and report['seconds'] >= 0


def test_data_check_command_fails_cleanly(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(['data', 'check', '--data-dir', str(tmp_path)])
    assert exit_.value.code == 2
    assert 'Traceback' not in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get('CIFAR_STUDY_DATA'), reason='real data only where CIFAR_STUDY_DATA is set')
def test_real_data_check():
    report = check_data()
    assert (report['train_images'], report['test_images'], report['classes']) == (50_000, 10_000, 100)
    np.testing.assert_allclose(report['train_mean'], CIFAR100_MEAN, atol=2e-3)
