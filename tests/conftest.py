import pytest

from cifar_study.data import write_synthetic_cifar100


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory):
    "Synthetic CIFAR-100-format data in both layouts: {'pickle': folder, 'npz': folder}."
    return write_synthetic_cifar100(tmp_path_factory.mktemp('synthetic'), n_train=200, n_test=100)


@pytest.fixture(scope='session')
def smoke_results(synthetic_data, tmp_path_factory):
    """A small study of smoke runs on synthetic data, laid out as `cifar-study run` writes it: ResNet-20 seed 0 by the
    runner (with its executed run notebook), seeds 1 and 2 and two more models by `train_model` (faster: no kernel),
    one failed run, one pending job, and one short run under the `full` profile for the claims audit."""
    import subprocess
    import sys
    from pathlib import Path

    from fastai.callback.core import Callback

    from cifar_study.plans import make_job
    from cifar_study.runner import create_job_file
    from cifar_study.training import RunFailedError, train_model

    class FailOnFirstBatch(Callback):
        def before_batch(self): raise RuntimeError('failed on purpose by the test fixture')

    out, data = tmp_path_factory.mktemp('study')/'results', synthetic_data['npz']
    def train(model, seed, profile='smoke', **overrides):
        return train_model(model, profile=profile, seed=seed, data_dir=data, run_dir=make_job(model, seed, profile).run_dir(out),
                           **overrides)

    runner = subprocess.Popen([str(Path(sys.executable).parent/'cifar-study'), 'run', 'demo', '--models', 'resnet_20',
                               '--profile', 'smoke', '--seeds', '0', '--out', str(out), '--data-dir', str(data)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # its kernel starts while we train
    for model, seed in (('resnet_20', 1), ('resnet_20', 2), ('ghost_resnet_20', 0), ('ghost_resnet_20', 1), ('ecanet20_k5', 0)):
        train(model, seed)
    with pytest.raises(RunFailedError): train('improved_resnet20_convnext', 0, cbs=[FailOnFirstBatch()])
    pending = make_job('ghost_resnet_20_r4', 0, 'smoke')
    create_job_file(pending, pending.run_dir(out))
    train('resnet_20', 0, profile='full', epochs=1, batch_size=32, train_limit=64, test_limit=64)
    _, errors = runner.communicate(timeout=600)
    assert runner.returncode == 0, errors[-3000:]
    return out
