import hashlib
import io
import json
import os
import pickle
import random
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from fastai.data.load import DataLoader
from fastai.distributed import DistributedDL
from torchvision.datasets import CIFAR100

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


def write_train_bytes(folder, content: bytes):
    "Replace train.npz with `content` and record its checksum, so only the content is wrong."
    (folder/'train.npz').write_bytes(content)
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


def npy_bytes():
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((2, 32, 32, 3), np.uint8))
    return buffer.getvalue()


@pytest.mark.parametrize('content', [pickle.dumps({'images': [1, 2]}), npy_bytes(), b'not an archive'],
                         ids=['serialised-python-object', 'npy-array', 'text'])
def test_npz_that_is_not_a_zip_file(tmp_path, content):
    folder = write_synthetic_cifar100(tmp_path)['npz']
    write_train_bytes(folder, content)
    with pytest.raises(CIFARDataError, match=r'not an npz archive \(it is not a zip file\)') as error:
        load_split(find_cifar100(folder), 'train')
    assert 'pickle' not in str(error.value).lower()
    assert_names_fix(error, folder/'train.npz')


def test_npz_holding_python_objects_gives_no_advice_to_allow_them(tmp_path):
    folder = write_synthetic_cifar100(tmp_path)['npz']
    rewrite_npz(folder, images=np.array([{}, 1], dtype=object), fine_labels=np.zeros(2, np.uint8))
    with pytest.raises(CIFARDataError, match='not plain numeric arrays') as error:
        load_split(find_cifar100(folder), 'train')
    assert 'pickle' not in str(error.value).lower()


@pytest.mark.parametrize('layout', ['npz', 'pickle'])
def test_empty_split_is_reported(tmp_path, layout):
    folders = write_synthetic_cifar100(tmp_path)
    if layout == 'npz':
        rewrite_npz(folders['npz'], images=np.zeros((0, 32, 32, 3), np.uint8), fine_labels=np.zeros(0, np.uint8))
        path = folders['npz']/'train.npz'
    else:
        path = folders['pickle']/'cifar-100-python'/'train'
        with open(path, 'wb') as f: pickle.dump(dict(data=np.zeros((0, 3072), np.uint8), fine_labels=[]), f)
        manifest = json.loads((path.parent/'synthetic.json').read_text())
        manifest['md5']['train'] = hashlib.md5(path.read_bytes()).hexdigest()
        (path.parent/'synthetic.json').write_text(json.dumps(manifest))
    with pytest.raises(CIFARDataError, match=r'split is empty \(it holds 0 images\)') as error:
        cifar100_dataloaders(folders[layout], device='cpu')
    assert_names_fix(error, path)


def test_wrong_checksum_in_meta_blames_meta(tmp_path):
    folder = write_synthetic_cifar100(tmp_path)['npz']
    meta = json.loads((folder/'meta.json').read_text())
    meta['files']['train.npz']['sha256'] = '0' * 64
    (folder/'meta.json').write_text(json.dumps(meta))
    with pytest.raises(CIFARDataError) as error:
        load_split(find_cifar100(folder), 'train')
    message = str(error.value)
    assert message.startswith("meta.json's SHA-256 for train.npz is wrong: train.npz itself is intact")
    assert f"fix or restore {folder/'meta.json'}" in message and 'corrupt' not in message
    assert len(load_split(find_cifar100(folder), 'test')) == 100  # the other file's checksum still holds


def test_damaged_npz_is_blamed_with_the_reason(tmp_path):
    folder = write_synthetic_cifar100(tmp_path)['npz']
    path = folder/'train.npz'
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF  # inside the stored (uncompressed) image array
    path.write_bytes(bytes(content))
    with pytest.raises(CIFARDataError, match=r'corrupt or truncated .*images.npy inside it fails its zip CRC check') as error:
        load_split(find_cifar100(folder), 'train')
    assert_names_fix(error, path)
    np.savez(path, images=np.zeros((10, 32, 32, 3), np.uint8), fine_labels=np.zeros(10, np.uint8))  # another archive
    with pytest.raises(CIFARDataError, match='corrupt or truncated .*it holds 10 images, meta.json lists 200'):
        load_split(find_cifar100(folder), 'train')


def test_data_checksums_identify_the_files(tmp_path):
    folders = write_synthetic_cifar100(tmp_path)
    npz = find_cifar100(folders['npz'])
    assert data.data_checksums(npz) == {name: 'sha256:' + hashlib.sha256((npz.root/name).read_bytes()).hexdigest()
                                        for name in ('train.npz', 'test.npz')}
    pickles = folders['pickle']/'cifar-100-python'
    assert data.data_checksums(find_cifar100(folders['pickle'])) == {
        split: 'md5:' + hashlib.md5((pickles/split).read_bytes()).hexdigest() for split in ('train', 'test')}
    (pickles/'synthetic.json').unlink()  # now it claims to be the official data: the official MD5s identify it
    official = dict(CIFAR100.train_list + CIFAR100.test_list)
    assert data.data_checksums(find_cifar100(folders['pickle'])) == {split: f'md5:{official[split]}' for split in ('train', 'test')}


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
    assert dls.transforms['test'] == [f'normalize(mean={CIFAR100_MEAN}, std={CIFAR100_STD})']
    assert dls.transforms['train'][3:5] == ['ToTensor()', f'Normalize(mean={CIFAR100_MEAN}, std={CIFAR100_STD})']


@pytest.mark.parametrize('option,value', [('train_limit', 0), ('test_limit', -5), ('epoch_test_images', 0)])
def test_limits_below_one_are_refused(synthetic_data, option, value):
    flag = '--' + option.replace('_', '-')
    with pytest.raises(ValueError, match=f'^{flag} must be at least 1, got {value}$'):
        cifar100_dataloaders(synthetic_data['npz'], device='cpu', **{option: value})


def test_tensor_path_gives_the_torchvision_images_without_augmentation(synthetic_data):
    dls = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, seed=3, augment='none', device='cpu')
    assert isinstance(dls.train.dataset, data.CIFARTensors) and isinstance(dls.valid.dataset, data.CIFARTensors)
    assert dls.transforms == dict(train=[f'normalize(mean={CIFAR100_MEAN}, std={CIFAR100_STD})'],
                                  test=[f'normalize(mean={CIFAR100_MEAN}, std={CIFAR100_STD})'])
    # the per-image torchvision pipeline, shuffled by the same seeded order, gives the same batches bit for bit
    train = data.CIFARDataset(load_split(dls.source, 'train'), eval_transforms())
    reference = DataLoader(train, bs=16, shuffle=True, drop_last=True)
    reference.rng = random.Random(3)
    batches = list(dls.train)
    assert len(batches) == 12  # 200 images in batches of 16, the last partial one dropped
    for (x, y), (x_ref, y_ref) in zip(batches, reference, strict=True):
        assert x.dtype == torch.float32 and torch.equal(x, x_ref) and torch.equal(y, y_ref)


def test_tensor_path_crops_and_flips_each_batch_after_gathering(synthetic_data):
    from cifar_study.augment import normalize
    light = lambda: cifar100_dataloaders(synthetic_data['pickle'], batch_size=32, seed=1, augment='light', device='cpu')
    dls, raw = light(), light()
    assert dls.transforms['train'] == ['random_crop(padding=4, per image, batched)',
                                       'random_horizontal_flip(p=0.5, per image, batched)',
                                       f'normalize(mean={CIFAR100_MEAN}, std={CIFAR100_STD})']
    augment, states = dls.train.after_batch, []
    def recording(batch):  # torch's generator state as each batch reaches the augmentation
        states.append(torch.get_rng_state())
        return augment(batch)
    dls.train.after_batch, raw.train.after_batch = recording, lambda batch: batch
    augmented, gathered = list(dls.train), list(raw.train)  # the same seeded order
    assert gathered[0][0].dtype == torch.uint8 and gathered[0][0].shape == (32, 3, 32, 32)
    for (x, y), batch, state in zip(augmented, gathered, states, strict=True):
        torch.set_rng_state(state)
        expected = augment(batch)
        assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])
    assert not torch.equal(augmented[0][0], normalize(gathered[0][0], CIFAR100_MEAN, CIFAR100_STD))  # it did augment


def test_data_order_is_restorable_from_the_train_rng(synthetic_data):
    dls = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, augment='light', device='cpu')
    state = dls.train.rng.getstate()
    first = torch.cat([y for _, y in dls.train])
    dls.train.rng.setstate(state)
    assert torch.equal(first, torch.cat([y for _, y in dls.train]))


def test_original_preset_keeps_the_per_image_pipeline(synthetic_data):
    dls = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, augment='original', device='cpu')
    assert isinstance(dls.train.dataset, data.CIFARDataset) and isinstance(dls.valid.dataset, data.CIFARTensors)
    assert dls.transforms['train'] == data.describe_transforms(train_transforms('original'))
    assert dls.train.one_batch()[0].dtype == torch.float32


def test_batch_augment_takes_the_original_preset_onto_the_tensor_path(synthetic_data):
    dls = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, augment='original', device='cpu', batch_augment=True)
    assert isinstance(dls.train, data.TensorBatchDL) and isinstance(dls.train.dataset, data.CIFARTensors)
    assert dls.transforms['train'] == dls.train.after_batch.describe()
    assert [step.split('(')[0] for step in dls.transforms['train']] == [
        'random_crop', 'random_horizontal_flip', 'trivial_augment_wide', 'normalize', 'random_erasing']
    images, labels = dls.train.one_batch()
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32 and labels.dtype == torch.int64


def test_tensor_path_keeps_the_images_on_the_training_device(synthetic_data):
    # 'meta' stands in for a GPU here: the images are stored there once, and batches are gathered there
    on_device = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, device='meta', batch_augment=True)
    assert on_device.train.dataset.images.device.type == on_device.valid.dataset.labels.device.type == 'meta'
    assert on_device.train.create_batch([3, 1, 2])[0].device.type == 'meta'
    # worker processes cannot index device tensors: with workers the images stay on the CPU
    with_workers = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, device='meta', num_workers=1, augment='light')
    assert with_workers.train.dataset.images.device.type == 'cpu'


def test_distributed_wrapper_gives_each_process_its_own_augmented_share(synthetic_data):
    shares = []
    for rank in (0, 1):  # one loader per process, as under torchrun; the order comes from the same seed
        dls = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, seed=0, augment='none', device='cpu')
        distributed = DistributedDL(dls.train, rank=rank, world_size=2)
        distributed._broadcast = lambda t, rank: t  # no process group here: rank 0's order is everyone's
        batches = list(distributed)
        assert len(batches) == len(distributed) == 6 and all(x.dtype == torch.float32 for x, _ in batches)
        shares.append({x.numpy().tobytes() for xb, _ in batches for x in xb})
    everything = {x.numpy().tobytes() for x, _ in data.CIFARDataset(load_split(dls.source, 'train'), eval_transforms())}
    assert len(shares[0]) == len(shares[1]) == 96 and not shares[0] & shares[1]
    assert shares[0] | shares[1] <= everything


def test_class_balanced_indices():
    labels = np.array([3, 3, 1, 2, 1, 3, 2])
    assert data.class_balanced_indices(labels, 3).tolist() == [0, 2, 3]  # each class's first image
    assert data.class_balanced_indices(labels, 4).tolist() == [0, 1, 2, 3]  # then the earliest second image
    assert data.class_balanced_indices(labels, 7).tolist() == list(range(7))


def test_epoch_valid_is_a_fixed_class_balanced_subset(tmp_path, synthetic_data):
    dls = cifar100_dataloaders(synthetic_data['npz'], batch_size=16, device='cpu')
    assert dls.epoch_valid is dls.valid and dls.epoch_valid_rule is None
    folder = write_synthetic_cifar100(tmp_path, n_test=300)['npz']  # labels 0..99 three times over
    dls = cifar100_dataloaders(folder, batch_size=16, epoch_test_images=150, device='cpu')
    assert (len(dls.valid.dataset), len(dls.epoch_valid.dataset)) == (300, 150)
    assert torch.bincount(dls.epoch_valid.dataset.labels).tolist() == [2] * 50 + [1] * 50
    test = load_split(dls.source, 'test')
    assert torch.equal(dls.epoch_valid.dataset.images, torch.from_numpy(test.images[:150]).permute(0, 3, 1, 2))
    assert dls.epoch_valid_rule == ("class-balanced fixed subset: 150 of 300 test images, "
                                    "each class's first images in stored order")
    x, y = next(iter(dls.epoch_valid))
    assert x.dtype == torch.float32 and torch.equal(y, torch.arange(16))  # in stored order, not shuffled
    whole = cifar100_dataloaders(folder, epoch_test_images=301, device='cpu')  # more than the split: the whole split
    assert whole.epoch_valid is whole.valid and whole.epoch_valid_rule is None


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
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and 'Traceback' not in err
    assert err.startswith('cifar-study: error: CIFAR-100 not found') and str(tmp_path) in err
    assert '--data-dir' in err and 'CIFAR_STUDY_DATA' in err and 'download' in err


@pytest.mark.skipif(not os.environ.get('CIFAR_STUDY_DATA'), reason='real data only where CIFAR_STUDY_DATA is set')
def test_real_data_check():
    report = check_data()
    assert (report['train_images'], report['test_images'], report['classes']) == (50_000, 10_000, 100)
    np.testing.assert_allclose(report['train_mean'], CIFAR100_MEAN, atol=2e-3)
