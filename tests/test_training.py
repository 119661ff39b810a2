import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fastai.callback.core import Callback

from cifar_study.data import CIFARDataset, eval_transforms, find_cifar100, load_split, write_synthetic_cifar100
from cifar_study.models import create_model
from cifar_study.recipes import resolve_config
from cifar_study.records import RunRecordError, load_run_record
from cifar_study.training import (BatchMixUp, RunExistsError, build_learner, lr_schedule, plan_budget,
                                  precision_used, train_model)

BIN = Path(sys.executable).parent
EPOCH_METRICS = ('train_loss', 'test_loss', 'top1', 'top5', 'lr')


def smoke(out, data, **overrides):
    "A short smoke run on synthetic data."
    return train_model('resnet_20', profile='smoke', data_dir=data, out=out, **overrides)


class InterruptMidEpoch(Callback):
    "Simulate Ctrl-C in the middle of epoch `epoch`."
    def __init__(self, epoch): self.at = epoch
    def before_batch(self):
        if self.training and self.epoch == self.at and self.iter == 3: raise KeyboardInterrupt


def test_smoke_run_writes_a_complete_record(tmp_path, synthetic_data):
    record = smoke(tmp_path, synthetic_data['npz'], epochs=4, train_limit=200)
    run_dir = tmp_path/'resnet_20-smoke-seed0'
    assert (run_dir/'checkpoint.pt').exists()
    loaded = load_run_record(run_dir)
    assert loaded.status == 'completed' and len(loaded.epochs) == 4
    assert loaded.epochs[-1]['train_loss'] < loaded.epochs[0]['train_loss']
    assert loaded.params == 278_324 and loaded.flops_per_image > 0
    assert loaded.data['name'] == 'synthetic (CIFAR-100 format)' and loaded.data['format'] == 'npz-arrays'
    assert loaded.augmentation['train'][0] == 'RandomCrop(size=(32, 32), padding=4)'
    env = loaded.environment
    assert env['torch'] == torch.__version__ and env['device'] == 'cpu' and 'commit' in env['git']
    assert loaded.config['seed'] == 0 and loaded.config['optimizer'] == 'sgd_nesterov'
    assert loaded.precision == dict(requested='fp32', used='fp32', note=None)
    assert loaded.images_per_second > 0 and loaded.peak_memory['bytes'] > 0
    assert loaded.best['top1'] == max(row['top1'] for row in loaded.epochs)
    assert record.final == loaded.final


def test_resumed_run_repeats_an_uninterrupted_one(tmp_path, synthetic_data):
    heavy = dict(epochs=3, augment='original', mixup_alpha=0.2, mixup_prob=0.5, schedule_step='epoch')
    straight = smoke(tmp_path/'straight', synthetic_data['npz'], **heavy)
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path/'resumed', synthetic_data['npz'], cbs=[InterruptMidEpoch(1)], **heavy)
    interrupted = load_run_record(tmp_path/'resumed'/'resnet_20-smoke-seed0')
    assert interrupted.status == 'interrupted' and len(interrupted.epochs) == 1
    with pytest.raises(RunExistsError, match='pass --resume'):
        smoke(tmp_path/'resumed', synthetic_data['npz'], **heavy)
    resumed = smoke(tmp_path/'resumed', synthetic_data['npz'], resume=True, **heavy)
    assert resumed.status == 'completed' and resumed.resumed_at_epochs == [1]
    for a, b in zip(straight.epochs, resumed.epochs, strict=True):
        assert {k: a[k] for k in EPOCH_METRICS} == {k: b[k] for k in EPOCH_METRICS}


def test_resume_keeps_the_stored_config(tmp_path, synthetic_data):
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, synthetic_data['npz'], cbs=[InterruptMidEpoch(1)])
    with pytest.raises(ValueError, match=r"lr=0.5 \(stored 0.1\)"):
        smoke(tmp_path, synthetic_data['npz'], resume=True, lr=0.5)


def test_finished_run_is_never_overwritten_unless_forced(tmp_path, synthetic_data):
    first = smoke(tmp_path, synthetic_data['npz'], epochs=1)
    with pytest.raises(RunExistsError, match='completed run: pass --force'):
        smoke(tmp_path, synthetic_data['npz'], epochs=1)
    with pytest.raises(RunExistsError):
        smoke(tmp_path, synthetic_data['npz'], epochs=1, resume=True)
    smoke(tmp_path, synthetic_data['npz'], epochs=1, force=True)
    kept = list((tmp_path/'resnet_20-smoke-seed0').glob('record.replaced-*.json'))
    assert len(kept) == 1 and json.loads(kept[0].read_text())['started_at'] == first.started_at


def test_failed_run_is_recorded_with_its_error(tmp_path, synthetic_data):
    class Boom(Callback):
        def after_epoch(self): raise RuntimeError('disk on fire')
    with pytest.raises(RuntimeError):
        smoke(tmp_path, synthetic_data['npz'], cbs=[Boom()])
    record = load_run_record(tmp_path/'resnet_20-smoke-seed0')
    assert record.status == 'failed' and 'disk on fire' in record.error


def test_budget_plans_epochs_to_fit(tmp_path, synthetic_data):
    record = smoke(tmp_path, synthetic_data['npz'], budget_s=30.0)
    planned = record.budget['epochs']
    assert planned >= 1 and len(record.epochs) == planned == record.config['epochs']
    # the plan fits the budget; the time really used is recorded (not asserted: wall time is no test)
    budget = record.budget
    assert budget['budget_s'] == 30.0 and budget['setup_seconds'] + planned * budget['epoch_seconds'] <= 30.0
    assert budget['seconds_used'] == record.wall_seconds > 0
    assert plan_budget(600, 30, dict(train=300, eval=1000), 50_000, 10_000, 128)['epochs'] == 2
    with pytest.raises(ValueError, match='raise --budget-s'):
        plan_budget(20, 10, dict(train=300, eval=1000), 50_000, 10_000, 128)


def test_precision_on_cpu_is_recorded_as_it_ran(tmp_path, synthetic_data):
    assert precision_used('bf16', torch.device('cpu'))['used'] == 'fp32'
    record = smoke(tmp_path, synthetic_data['npz'], epochs=1, precision='fp16')
    assert record.precision['used'] == 'fp32' and 'needs CUDA' in record.precision['note']


def test_optimizers_and_weight_decay_groups(synthetic_data):
    from cifar_study.data import cifar100_dataloaders
    from cifar_study.models import create_model
    dls = cifar100_dataloaders(synthetic_data['npz'], batch_size=16)
    for model, kind in (('resnet_20', torch.optim.SGD), ('mlp_mixer_tiny', None)):
        config = resolve_config(model, 'smoke')
        learn = build_learner(create_model(model), dls, config, precision_used('fp32', torch.device('cpu')))
        hypers = learn.opt.hypers
        assert [h['wd'] for h in hypers] == [config.weight_decay, 0.0]
        biases = {id(p) for n, p in learn.model.named_parameters() if n.endswith('bias')}
        assert {id(p) for p in learn.opt.param_lists[1]} == biases
        if kind: assert learn.opt.opt.param_groups[0]['nesterov'] is True
        else: assert learn.opt.hypers[0]['sqr_mom'] == 0.999 and learn.opt.hypers[0]['eps'] == 1e-8


def test_schedules():
    per_epoch = lr_schedule(resolve_config('resnet_20', epochs=10))
    assert per_epoch(0.0) == per_epoch(0.099) != per_epoch(0.1)
    warm = lr_schedule(resolve_config('resnet_20', epochs=10, warmup_epochs=2, schedule_step='batch'))
    assert warm(0.0) == 0 and abs(warm(0.2) - 0.1) < 1e-9 and warm(0.1) == pytest.approx(0.05)


def test_batch_mixup_uses_one_lambda_per_batch():
    class FakeLearner:
        xb, yb = (torch.arange(8.).view(4, 2),), (torch.arange(4),)
        @property
        def x(self): return self.xb[0]
        @property
        def y(self): return self.yb[0]
    mixup = BatchMixUp(alpha=0.2, p=1.0)
    mixup.learn = FakeLearner()
    torch.manual_seed(0)
    mixup.before_batch()
    assert mixup.lam.unique().numel() == 1
    lam = mixup.lam[0]
    order = [int(torch.nonzero(FakeLearner.yb[0] == y)[0]) for y in mixup.yb1[0]]
    expected = lam * FakeLearner.xb[0] + (1 - lam) * FakeLearner.xb[0][order]
    torch.testing.assert_close(mixup.learn.xb[0], expected)
    never = BatchMixUp(alpha=0.2, p=0.0)
    never.learn = FakeLearner()
    never.before_batch()
    torch.testing.assert_close(never.learn.xb[0], FakeLearner.xb[0])


def test_cli_train_errors_are_one_line(tmp_path, synthetic_data):
    for args, message in ((['resnet_2O'], "Unknown model 'resnet_2O': did you mean"),
                          (['resnet_20', '--precision', 'fp8'], 'precision must be one of'),
                          (['resnet_20', '--profile', 'weekly'], 'use one of smoke, cpu-budget, full')):
        result = subprocess.run([BIN/'cifar-study', 'train', *args, '--data-dir', str(synthetic_data['npz']),
                                 '--out', str(tmp_path)], capture_output=True, text=True)
        assert result.returncode == 2 and message in result.stderr and 'Traceback' not in result.stderr


def test_killed_cli_run_resumes_to_completion(tmp_path, synthetic_data):
    command = [BIN/'cifar-study', 'train', 'resnet_20', '--profile', 'smoke', '--epochs', '12',
               '--data-dir', str(synthetic_data['npz']), '--out', str(tmp_path)]
    run_dir = tmp_path/'resnet_20-smoke-seed0'
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    def epochs_recorded():  # the record is saved just after the checkpoint: wait for it, not the checkpoint
        return (run_dir/'record.json').exists() and len(load_run_record(run_dir).epochs) >= 1
    while not epochs_recorded() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = load_run_record(run_dir)
    assert killed.status == 'running' and 1 <= len(killed.epochs) < 12
    result = subprocess.run([*command, '--resume'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    record = load_run_record(run_dir)
    assert record.status == 'completed' and [row['epoch'] for row in record.epochs] == list(range(12))
    assert record.resumed_at_epochs and record.resumed_at_epochs[0] >= 1


def test_two_process_cpu_ddp(tmp_path):
    data = write_synthetic_cifar100(tmp_path/'data', n_train=256, n_test=128)['npz']
    out = tmp_path/'out'
    env = dict(os.environ, ACCELERATE_USE_CPU='true', OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node=2',
                             str(Path(__file__).parent/'ddp_worker.py'), str(out), str(data)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ['resnet_20-smoke-seed0', 'seen-rank0.json', 'seen-rank1.json']
    assert sorted(p.name for p in (out/'resnet_20-smoke-seed0').iterdir()) == ['checkpoint.pt', 'record.json']
    assert result.stdout.count('epoch 1/2') == 1  # only rank 0 logs
    record = load_run_record(out/'resnet_20-smoke-seed0')
    assert record.status == 'completed' and record.distributed['world_size'] == 2
    assert record.distributed['backend'] == 'gloo' and record.distributed['train_samples_per_process'] == [128, 128]
    seen = [set(json.loads((out/f'seen-rank{rank}.json').read_text())) for rank in (0, 1)]
    train = CIFARDataset(load_split(find_cifar100(data), 'train'), eval_transforms())
    everything = {hashlib.sha1(train[i][0].numpy().tobytes()).hexdigest() for i in range(len(train))}
    assert len(everything) == 256 and len(seen[0]) == len(seen[1]) == 128
    assert not seen[0] & seen[1] and seen[0] | seen[1] == everything  # each process saw its own half


def test_record_loader_rejects_bad_records(tmp_path, synthetic_data):
    smoke(tmp_path, synthetic_data['npz'], epochs=1)
    path = tmp_path/'resnet_20-smoke-seed0'/'record.json'
    raw = json.loads(path.read_text())
    for broken, message in ((dict(raw, schema_version=99), 'schema version 99'),
                            (dict(raw, params='many'), "'params' should be int"),
                            (dict(raw, epochs=[{'epoch': 0}]), 'epoch row 0 needs'),
                            (dict(raw, surprise=1), "unknown field 'surprise'")):
        path.write_text(json.dumps(broken))
        with pytest.raises(RunRecordError, match=message):
            load_run_record(path)
    path.write_text('{"truncated": ')
    with pytest.raises(RunRecordError, match='not valid JSON'):
        load_run_record(path)


def test_channels_last_run(tmp_path, synthetic_data):
    record = smoke(tmp_path, synthetic_data['npz'], epochs=1, channels_last=True)
    assert record.status == 'completed' and record.config['channels_last'] is True


def test_compiled_run_checkpoints_plain_weights(tmp_path, synthetic_data):
    # torch.compile on CPU (inductor, ~40 s here): the checkpoint must load into an uncompiled model
    record = smoke(tmp_path, synthetic_data['npz'], epochs=1, compile=True)
    assert record.status == 'completed' and record.config['compile'] is True
    weights = torch.load(tmp_path/'resnet_20-smoke-seed0'/'checkpoint.pt', weights_only=False)['model']
    create_model('resnet_20').load_state_dict(weights)
