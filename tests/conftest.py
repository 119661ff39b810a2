import pytest

from cifar_study.data import write_synthetic_cifar100


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory):
    "Synthetic CIFAR-100-format data in both layouts: {'pickle': folder, 'npz': folder}."
    return write_synthetic_cifar100(tmp_path_factory.mktemp('synthetic'), n_train=200, n_test=100)
