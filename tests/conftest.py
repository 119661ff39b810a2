import pytest

from cifar_study.data import write_synthetic_cifar100


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory):
    "Synthetic CIFAR-100-format data in both layouts: {'pickle': folder, 'npz': folder}."
    return write_synthetic_cifar100(tmp_path_factory.mktemp('synthetic'), n_train=200, n_test=100)


@pytest.fixture(scope='session')
def smoke_results(tmp_path_factory):
    """A small study laid out as `cifar-study run` writes it, its records written directly (see example_study.py): six
    completed smoke runs of three models, one failed, one pending job, one short run under `full` for the claims audit."""
    from example_study import write_example_study
    return write_example_study(tmp_path_factory.mktemp('study')/'results')
