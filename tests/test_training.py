import contextlib
import errno
import hashlib
import io
import itertools
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision.transforms.functional as TF
from fastai.callback.core import Callback

import cifar_study.models
import cifar_study.records as records
import cifar_study.training as training
from cifar_study.cli import main
from cifar_study.learner import create_run_model
from cifar_study.data import CIFAR100_MEAN, CIFAR100_STD, find_cifar100, load_split, write_synthetic_cifar100
from cifar_study.distributed import device_settings, precision_used
from cifar_study.learner import BatchMixUp, InferenceModeEval, MetricsOnDevice, build_learner, lr_in_seconds, lr_schedule
from cifar_study.models import create_model
from cifar_study.recipes import config_overrides, overrides_hash, resolve_config, run_folder_path
from cifar_study.records import RunRecordError, load_run_record
from cifar_study.training import BudgetProbe, RunExistsError, RunFailedError, plan_budget, plan_run, run, train_model

BIN = Path(sys.executable).parent
EPOCH_METRICS = ('steps', 'train_loss', 'test_loss', 'top1', 'top5', 'lr')
RUN = 'resnet_20-smoke-seed0'


def run_dir(out) -> Path:
    "The folder of the one ResNet-20 smoke run under `out` (`smoke/resnet_20[-<hash of its overrides>]/seed0`)."
    found = list(Path(out).glob('smoke/resnet_20*/seed0'))
    assert len(found) <= 1, found
    return found[0] if found else Path(out)/'smoke'/'resnet_20'/'seed0'


def smoke(out, data, **overrides):
    "A short smoke run on synthetic data."
    return train_model('resnet_20', profile='smoke', data_dir=data, out=out, **overrides)


def cli(*args) -> subprocess.CompletedProcess:
    "The command line's exit status, stdout and stderr, run in this process (`main`, the console script's own code)."
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try: code = main(list(map(str, args))) or 0
        except SystemExit as ended: code = ended.code if isinstance(ended.code, int) else int(ended.code is not None)
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def cli_train(out, data, *args):
    return cli('train', 'resnet_20', '--profile', 'smoke', '--data-dir', data, '--out', out, *args)


def assert_one_line_refusal(result, *phrases, status=2):
    "Exit status `status`, one line on stderr naming each phrase, no traceback."
    lines = [line for line in result.stderr.splitlines() if line.startswith('cifar-study')]
    assert result.returncode == status, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr and len(lines) == 1, result.stderr[-2000:]
    for phrase in phrases: assert phrase in lines[0], lines[0]


def evaluate_checkpoint(run_dir, data_dir, test_limit=None) -> tuple[float, float]:
    "Top-1 and top-5 of a checkpoint's weights on the test split, computed here with plain torch (eval mode)."
    checkpoint = torch.load(Path(run_dir)/'checkpoint.pt', weights_only=False)
    model = create_model(checkpoint['config']['model'])
    model.load_state_dict(checkpoint['model'])
    split = load_split(find_cifar100(data_dir), 'test')
    images = torch.from_numpy(split.images[:test_limit]).permute(0, 3, 1, 2).float().div(255)
    labels = torch.from_numpy(split.labels[:test_limit])
    with torch.no_grad(): top5 = model.eval()(TF.normalize(images, CIFAR100_MEAN, CIFAR100_STD)).topk(5).indices
    return (top5[:, 0] == labels).float().mean().item(), (top5 == labels[:, None]).any(1).float().mean().item()


class InterruptMidEpoch(Callback):
    "Simulate Ctrl-C in the middle of epoch `epoch`."
    def __init__(self, epoch): self.at = epoch
    def before_batch(self):
        if self.training and self.epoch == self.at and self.iter == 3: raise KeyboardInterrupt


class ChannelsLastSeen(Callback):
    "Note whether the stem's weights and its output are channels-last in every training batch."
    def __init__(self): self.weights, self.activations = [], []
    def before_fit(self):
        def note(module, inputs, output):
            if self.training: self.activations.append(output.is_contiguous(memory_format=torch.channels_last))
        self.hook = self.model.stem.register_forward_hook(note)
    def before_batch(self):
        if self.training: self.weights.append(self.model.stem[0].weight.is_contiguous(memory_format=torch.channels_last))
    def after_fit(self): self.hook.remove()


def test_smoke_run_writes_a_complete_record(tmp_path, synthetic_data):
    record = smoke(tmp_path, synthetic_data['npz'], epochs=4, train_limit=200)
    folder = run_dir(tmp_path)
    assert (folder/'checkpoint.pt').exists()
    loaded = load_run_record(folder)
    assert loaded.status == 'completed' and len(loaded.epochs) == 4 and loaded.schema_version == records.SCHEMA_VERSION
    assert loaded.epochs[-1]['train_loss'] < loaded.epochs[0]['train_loss']
    assert loaded.params == 278_324 and loaded.flops_per_image > 0
    assert loaded.data['name'] == 'synthetic (CIFAR-100 format)' and loaded.data['format'] == 'npz-arrays'
    assert loaded.augmentation['train'][0] == 'random_crop(padding=4, per image, batched)'
    env = loaded.environment
    assert env['torch'] == torch.__version__ and env['device'] == 'cpu'
    meta = json.loads((synthetic_data['npz']/'meta.json').read_text())
    assert loaded.data['checksums'] == {name: f"sha256:{entry['sha256']}" for name, entry in meta['files'].items()}
    assert loaded.config['seed'] == 0 and loaded.config['optimizer'] == 'sgd_nesterov'
    assert loaded.config_hash == plan_run('resnet_20', profile='smoke', data_dir=synthetic_data['npz'], out=tmp_path/'x',
                                          epochs=4, train_limit=200).config_hash
    assert loaded.precision == dict(requested='fp32', used='fp32', note=None)
    assert loaded.images_per_second > 0 and loaded.peak_memory['bytes'] > 0
    assert [row['steps'] for row in loaded.epochs] == [6] * 4  # 200 images, batches of 32, last partial batch dropped
    assert loaded.best['top1'] == max(row['top1'] for row in loaded.epochs)
    assert loaded.train_seconds == round(sum(row['train_seconds'] for row in loaded.epochs), 2)
    assert loaded.eval_seconds >= sum(row['eval_seconds'] for row in loaded.epochs) - 0.01
    assert loaded.setup_seconds > 0 and loaded.wall_seconds >= loaded.train_seconds + loaded.eval_seconds - 0.1
    assert record.final == loaded.final and loaded.final['test_images'] == 100


def test_record_carries_git_state_and_the_diff_of_a_dirty_tree(tmp_path, synthetic_data, monkeypatch):
    repo = tmp_path/'repo'
    (repo/'nbs').mkdir(parents=True)
    git = lambda *args: subprocess.run(['git', '-C', repo, *args], check=True, capture_output=True)
    git('init', '-q')
    git('-c', 'user.email=a@b.c', '-c', 'user.name=a', 'commit', '-q', '--allow-empty', '-m', 'start')
    monkeypatch.setattr(records, 'repo_root', lambda: repo)
    clean = smoke(tmp_path/'clean', synthetic_data['npz'], epochs=1)
    commit = subprocess.run(['git', '-C', repo, 'rev-parse', 'HEAD'], capture_output=True, text=True).stdout.strip()
    assert clean.environment['git'] == dict(commit=commit, dirty=False) and clean.source_diff is None
    (repo/'nbs'/'new_idea.py').write_text('LEARNING_RATE = 0.4\n')  # an untracked source file makes the tree dirty
    dirty = smoke(tmp_path/'dirty', synthetic_data['npz'], epochs=1)
    assert dirty.environment['git']['dirty'] is True and dirty.source_diff == 'source.diff'
    assert '+LEARNING_RATE = 0.4' in (run_dir(tmp_path/'dirty')/'source.diff').read_text()


def test_paths_beside_the_repository_are_stored_relative_to_it(tmp_path, synthetic_data, monkeypatch):
    monkeypatch.setattr(records, 'repo_root', lambda: tmp_path)  # the synthetic data lie beside it, runs inside it
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path/'runs', synthetic_data['npz'], cbs=[InterruptMidEpoch(1)])
    stored = json.loads((run_dir(tmp_path/'runs')/'record.json').read_text())
    beside = f"../{synthetic_data['npz'].parent.name}/npz"
    assert (stored['config']['out'], stored['config']['data_dir'], stored['data']['root']) == ('runs', beside, beside)
    assert str(tmp_path) not in json.dumps(stored)
    resumed = smoke(tmp_path/'runs', synthetic_data['npz'], resume=True)  # the stored relative paths resolve again
    assert resumed.status == 'completed' and resumed.resumed_at_epochs == [1]


def test_resumed_run_repeats_an_uninterrupted_one(tmp_path, synthetic_data):
    heavy = dict(epochs=3, augment='original', mixup_alpha=0.2, mixup_prob=0.5, schedule_step='epoch')
    straight = smoke(tmp_path/'straight', synthetic_data['npz'], **heavy)
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path/'resumed', synthetic_data['npz'], cbs=[InterruptMidEpoch(1)], **heavy)
    interrupted = load_run_record(run_dir(tmp_path/'resumed'))
    assert interrupted.status == 'interrupted' and len(interrupted.epochs) == 1
    with pytest.raises(RunExistsError, match='pass --resume'):
        smoke(tmp_path/'resumed', synthetic_data['npz'], **heavy)
    resumed = smoke(tmp_path/'resumed', synthetic_data['npz'], resume=True, **heavy)
    assert resumed.status == 'completed' and resumed.resumed_at_epochs == [1]
    for a, b in zip(straight.epochs, resumed.epochs, strict=True):
        assert {k: a[k] for k in EPOCH_METRICS} == {k: b[k] for k in EPOCH_METRICS}


def test_resume_restores_the_loss_scaler(tmp_path, synthetic_data):
    class FakeScaler:  # stands in for CUDA's GradScaler, which fastai creates only for fp16 on a GPU
        def __init__(self): self.state = dict(scale=1024.0)
        def state_dict(self): return dict(self.state)
        def load_state_dict(self, state): self.state = dict(state)
    class AttachScaler(Callback):
        order = 20
        def before_fit(self):
            self.learn.scaler = FakeScaler()
        def after_train(self):  # not called for the epochs that a resumed run skips
            self.learn.scaler.state['scale'] /= 2
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, synthetic_data['npz'], epochs=3, cbs=[AttachScaler(), InterruptMidEpoch(1)])
    assert torch.load(run_dir(tmp_path)/'checkpoint.pt', weights_only=False)['scaler'] == dict(scale=512.0)
    smoke(tmp_path, synthetic_data['npz'], epochs=3, resume=True, cbs=[AttachScaler()])
    assert torch.load(run_dir(tmp_path)/'checkpoint.pt', weights_only=False)['scaler'] == dict(scale=128.0)


def change_stored_config(run_dir, **changes):
    "Rewrite a record's stored config, as a profile whose defaults changed after the run would leave it."
    raw = json.loads((run_dir/'record.json').read_text())
    (run_dir/'record.json').write_text(json.dumps(dict(raw, config=dict(raw['config'], **changes))))


def test_resume_keeps_the_stored_config(tmp_path, synthetic_data):
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, synthetic_data['npz'], cbs=[InterruptMidEpoch(1)])
    change_stored_config(run_dir(tmp_path), lr=0.5)
    with pytest.raises(RunExistsError, match=r"holds a interrupted run of another config \(lr: 0.5 -> 0.1\): pass --force"):
        smoke(tmp_path, synthetic_data['npz'], resume=True)


def test_another_config_gets_its_own_folder_and_never_replaces_a_run_unless_forced(tmp_path, synthetic_data):
    smoke(tmp_path, synthetic_data['npz'], epochs=1)
    other = cli_train(tmp_path, synthetic_data['npz'], '--epochs', '1', '--lr', '0.05')
    assert other.returncode == 0, other.stderr
    folders = {load_run_record(path.parent).config['lr']: path.parent for path in tmp_path.glob('smoke/*/seed0/record.json')}
    assert sorted(folders) == [0.05, 0.1]
    ours = folders[0.1]
    change_stored_config(ours, lr=0.2)  # completed under a recipe that has changed since
    result = cli_train(tmp_path, synthetic_data['npz'], '--epochs', '1')
    assert_one_line_refusal(result, 'holds a completed run of another config (lr: 0.2 -> 0.1)', '--force')
    assert load_run_record(ours).config['lr'] == 0.2


def test_a_config_field_added_later_does_not_make_an_old_run_another_run(tmp_path, synthetic_data):
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, synthetic_data['npz'], cbs=[InterruptMidEpoch(1)])
    path = run_dir(tmp_path)/'record.json'
    older = json.loads(path.read_text())
    del older['config']['batch_augment']  # as written before the field existed, with the hash of that time
    path.write_text(json.dumps(dict(older, config_hash='0123456789abcdef')))
    plan = plan_run('resnet_20', profile='smoke', data_dir=synthetic_data['npz'], out=tmp_path, resume=True)
    assert plan.resume and plan.start_epoch == 1


def test_finished_run_is_never_overwritten_unless_forced(tmp_path, synthetic_data):
    first = smoke(tmp_path, synthetic_data['npz'], epochs=1)
    first_weights = (run_dir(tmp_path)/'checkpoint.pt').read_bytes()
    with pytest.raises(RunExistsError, match='completed run: pass --force'):
        smoke(tmp_path, synthetic_data['npz'], epochs=1)
    assert smoke(tmp_path, synthetic_data['npz'], epochs=1, resume=True).started_at == first.started_at  # skipped: done
    smoke(tmp_path, synthetic_data['npz'], epochs=1, force=True)
    kept_records = list((run_dir(tmp_path)).glob('record.replaced-*.json'))
    kept_checkpoints = list((run_dir(tmp_path)).glob('checkpoint.replaced-*.pt'))
    assert len(kept_records) == 1 and json.loads(kept_records[0].read_text())['started_at'] == first.started_at
    assert len(kept_checkpoints) == 1 and kept_checkpoints[0].read_bytes() == first_weights


def test_resume_with_nothing_to_resume_says_so_and_starts(tmp_path, synthetic_data):
    result = cli_train(tmp_path, synthetic_data['npz'], '--epochs', '1', '--resume')
    assert result.returncode == 0, result.stderr
    assert f"nothing to resume in {run_dir(tmp_path)}: starting a new run" in result.stdout
    assert load_run_record(run_dir(tmp_path)).status == 'completed'


def test_run_killed_before_its_first_checkpoint_starts_again_and_says_so(tmp_path, synthetic_data):
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, synthetic_data['npz'], cbs=[InterruptMidEpoch(0)])
    assert not (run_dir(tmp_path)/'checkpoint.pt').exists()
    (run_dir(tmp_path)/'.checkpoint.pt.x1y2.tmp').write_bytes(b'half of a killed write')
    result = cli_train(tmp_path, synthetic_data['npz'], '--resume')
    assert result.returncode == 0, result.stderr
    assert 'with no checkpoint to resume from (0 epochs recorded): starting it again' in result.stdout
    assert load_run_record(run_dir(tmp_path)).status == 'completed'
    assert len(list((run_dir(tmp_path)).glob('record.replaced-*.json'))) == 1
    assert not list((run_dir(tmp_path)).glob('.*.tmp'))  # the killed write's leftover is cleaned when the folder is locked


def test_failed_run_is_recorded_with_its_error(tmp_path, synthetic_data):
    class Boom(Callback):
        def after_epoch(self): raise RuntimeError('disk on fire')
    with pytest.raises(RunFailedError, match=f"(?s){RUN} failed: RuntimeError: .*disk on fire"):
        smoke(tmp_path, synthetic_data['npz'], cbs=[Boom()])
    record = load_run_record(run_dir(tmp_path))
    assert record.status == 'failed' and 'disk on fire' in record.error and 'Traceback' in record.error


def test_cli_reports_a_failure_inside_the_loop_in_one_line(tmp_path, synthetic_data, monkeypatch, capsys):
    def explode(self): raise RuntimeError('gradient went somewhere odd')
    monkeypatch.setattr(training.EpochLog, 'after_epoch', explode)
    with pytest.raises(SystemExit) as exit_:
        main(['train', 'resnet_20', '--profile', 'smoke', '--data-dir', str(synthetic_data['npz']), '--out', str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 1 and len(err.splitlines()) == 1 and 'Traceback' not in err
    assert 'gradient went somewhere odd' in err and str(run_dir(tmp_path)/'record.json') in err
    assert 'Traceback' in load_run_record(run_dir(tmp_path)).error


def test_full_disk_marks_the_run_failed_and_says_what_to_do(tmp_path, synthetic_data, monkeypatch, capsys):
    write = training.atomic_write_bytes
    def full(path, data):
        if Path(path).name == 'checkpoint.pt': raise OSError(errno.ENOSPC, 'No space left on device', str(path))
        write(path, data)
    monkeypatch.setattr(training, 'atomic_write_bytes', full)
    with pytest.raises(SystemExit) as exit_:
        main(['train', 'resnet_20', '--profile', 'smoke', '--data-dir', str(synthetic_data['npz']), '--out', str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and 'Traceback' not in err
    assert 'no space left on the device' in err and 'checkpoint.pt' in err and '--out' in err
    record = load_run_record(run_dir(tmp_path))
    assert record.status == 'failed' and 'No space left' in record.error


def test_budget_plans_steps_that_fill_the_budget(tmp_path, synthetic_data):
    record = smoke(tmp_path, synthetic_data['npz'], budget_s=8.0, epoch_test_images=50)
    budget = record.budget
    steps_per_epoch = 200 // 32  # the synthetic train split
    assert budget['budget_s'] == 8.0 and budget['steps_per_epoch'] == steps_per_epoch
    # the probe is the run's first steps; then as many steps as the rest of the budget fits at their speed; the last
    # epoch may be partial (the recorded speed and seconds are rounded: one step either way); on a busy machine the
    # probe may use the whole budget, and then no step follows it
    rest = max(8.0 - budget['probe_seconds'], 0) * budget['probe_train_images_per_second'] / 32
    assert 1 < budget['probe_steps'] <= budget['steps'] and abs(budget['steps'] - budget['probe_steps'] - rest) <= 1
    assert budget['epochs'] == -(-budget['steps'] // steps_per_epoch) == len(record.epochs)
    assert sum(row['steps'] for row in record.epochs) == budget['steps']
    assert (record.config['steps'], record.config['epochs']) == (budget['steps'], budget['epochs'])
    # recorded, not asserted against the clock: the share of the budget used and whether it missed by more than 10 %
    assert budget['train_seconds_used'] == record.train_seconds > 0
    assert budget['share_used'] == round(record.train_seconds / 8.0, 3)
    assert budget['outside_tolerance'] == (abs(record.train_seconds / 8.0 - 1) > 0.10)
    # one cosine, over the budget's seconds until the probe settles, then over the settled steps
    assert record.config['lr'] >= record.epochs[0]['lr'] >= record.epochs[-1]['lr'] >= record.config['final_lr']
    assert record.epochs[-1]['lr'] < record.config['lr']  # one epoch or several (a busy machine fits fewer steps)
    # per-epoch evaluations on the named subset, the final one on the whole test split
    assert record.data['epoch_test_images'] == 50 and record.data['epoch_test_rule']
    assert record.final['test_images'] == 100 and record.final['seconds'] >= 0
    top1, top5 = evaluate_checkpoint(run_dir(tmp_path), synthetic_data['npz'])
    assert record.final['top1'] == pytest.approx(top1, abs=1e-6) and record.final['top5'] == pytest.approx(top5, abs=1e-6)


def fake_clock(monkeypatch, step_seconds):
    "training's clock: 0 at before_train, then the end of each step of `step_seconds`"
    ends = iter(itertools.accumulate([0.0, *step_seconds]))
    monkeypatch.setattr(training, 'time', SimpleNamespace(perf_counter=lambda: next(ends)))


def probe_steps(probe, steps: int):
    probe.learn = SimpleNamespace(training=True, yb=(torch.zeros(128),))
    probe.before_fit(), probe.before_train()
    for _ in range(steps): probe.after_batch()


def test_the_probe_times_from_its_ninth_step_and_a_tenth_of_the_budget(monkeypatch):
    # steps that keep speeding up for eight steps, then 0.25 s: of 40 s, the probe (16 s) times from step 8 (6.4 s) on,
    # not from a tenth of the budget (step 4, 4.35 s), while the steps still speed up
    fake_clock(monkeypatch, [2.0, 1.0, 0.75, 0.6, 0.55, 0.5, 0.5, 0.5] + [0.25] * 60)
    settled = []
    probe_steps(BudgetProbe(lambda *args: settled.append(args), budget_s=40.0), 60)
    (steps, seconds, images_per_second), = settled  # the first step at 16 s or more ends it
    assert (steps, seconds, images_per_second) == (47, pytest.approx(16.15), pytest.approx(128 / 0.25))


def test_a_budgeted_run_follows_its_schedule_in_seconds_until_the_probe_settles():
    config = resolve_config('resnet_20', 'cpu-budget')  # 120 s: warm-up over a fifth of them, then the cosine
    seconds = iter([0.0, 12.0, 24.0, 60.0, 120.0]).__next__
    lr = lr_in_seconds(config, seconds)
    cosine = config.final_lr + (config.lr - config.final_lr) * (1 + math.cos(math.pi * (0.5 - 0.2) / 0.8)) / 2
    assert [lr(0.0) for _ in range(5)] == pytest.approx([0.0, config.lr / 2, config.lr, cosine, config.final_lr])
    settled = lr_schedule(resolve_config('resnet_20', 'cpu-budget', steps=300, epochs=1), steps_per_epoch=390)
    assert settled(150 / 390) == pytest.approx(cosine)  # the settled schedule at half its steps: the same point


def test_a_slow_model_settles_its_budget_before_spending_it(monkeypatch):
    # one step of 18.5 s (mlp_mixer_b16 here) in a 60 s budget: too slow for eight steps in the probe's 24 s
    fake_clock(monkeypatch, [18.5] * 6)
    settled = []
    probe_steps(BudgetProbe(lambda *args: settled.append(args), budget_s=60.0), 6)
    (steps, seconds, images_per_second), = settled  # the first step never counts: the second starts the timing
    assert (steps, seconds, images_per_second) == (3, 55.5, pytest.approx(128 / 18.5))
    plan = plan_budget(60.0, images_per_second, 390, 128, steps, seconds)  # the rest fits 0.24 steps: to the nearest, 0
    assert plan['steps'] == 3 and plan['planned_train_seconds'] == 55.5


def test_planned_steps_end_inside_an_epoch(tmp_path, synthetic_data):
    record = smoke(tmp_path, synthetic_data['npz'], steps=11, epochs=5)
    assert [row['steps'] for row in record.epochs] == [6, 5] and record.status == 'completed'
    with pytest.raises(ValueError, match='raise --budget-s'):
        plan_budget(0.01, 300.0, 390, 128)


def test_precision_on_cpu_is_recorded_as_it_ran(tmp_path, synthetic_data):
    assert precision_used('bf16', torch.device('cpu'))['used'] == 'fp32'
    record = smoke(tmp_path, synthetic_data['npz'], epochs=1, precision='fp16')
    assert record.precision['used'] == 'fp32' and 'needs CUDA' in record.precision['note']


def test_optimizers_and_weight_decay_groups(synthetic_data):
    from cifar_study.data import cifar100_dataloaders
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
    described = resolve_config('convnext_tiny', described_warmup=True)  # 20 warm-up epochs, stepped per epoch
    epoch_lr = lr_schedule(described)
    assert epoch_lr(0.0) == pytest.approx(described.lr / 20)  # the first epoch learns
    assert epoch_lr(19 / 300) == pytest.approx(described.lr) == epoch_lr(20 / 300)


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


def test_cli_train_errors_are_one_line(tmp_path, synthetic_data, capsys):
    a_file = tmp_path/'a-file'
    a_file.write_text('not a folder')
    for args, message in ((['resnet_2O'], "Unknown model 'resnet_2O': did you mean"),
                          (['resnet_20', '--precision', 'fp8'], 'precision must be one of'),
                          (['resnet_20', '--profile', 'weekly'], 'use one of smoke, cpu-budget, cpu-epochs, full'),
                          (['resnet_20', '--train-limit', '-200'], 'train_limit must be at least 1 (got -200)'),
                          (['resnet_20', '--train-limit', '0'], 'train_limit must be at least 1 (got 0)'),
                          (['resnet_20', '--test-limit', '0'], 'test_limit must be at least 1 (got 0)'),
                          (['resnet_20', '--out', a_file/'runs'], 'is a file, not a folder'),
                          (['resnet_20', '--out', '/proc/sys/cifar-runs'], 'not writable')):
        out = [] if '--out' in args else ['--out', tmp_path]
        with pytest.raises(SystemExit) as exit_:  # in this process: the same main() as the console script
            main(['train', *map(str, args), '--data-dir', str(synthetic_data['npz']), *map(str, out)])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and 'Traceback' not in err, err
        assert err.startswith('cifar-study: error: ') and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a-file']  # nothing was written


def test_bad_data_ends_a_train_command_in_one_line(tmp_path, synthetic_data):
    import shutil
    broken = tmp_path/'not-a-zip'
    shutil.copytree(synthetic_data['npz'], broken)
    (broken/'train.npz').write_bytes(b'this is not a zip archive' * 10)
    meta = json.loads((broken/'meta.json').read_text())
    meta['files']['train.npz']['sha256'] = hashlib.sha256((broken/'train.npz').read_bytes()).hexdigest()
    (broken/'meta.json').write_text(json.dumps(meta))
    result = cli_train(tmp_path/'runs', broken)
    assert_one_line_refusal(result, 'train.npz')
    assert 'allow_pickle' not in result.stderr and not (run_dir(tmp_path/'runs')).exists()


def test_bench_rejects_a_batch_of_zero():
    result = cli('bench', '--models', 'resnet_20', '--batch-size', '0')
    assert result.returncode == 2 and '--batch-size: must be at least 1, got 0' in result.stderr
    assert 'Traceback' not in result.stderr


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, synthetic_data):
    result = cli_train(tmp_path/'runs', synthetic_data['npz'], '--epochs', '3', '--dry-run')
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    overrides = config_overrides(resolve_config('resnet_20', 'smoke', epochs=3))
    assert plan['run'] == f"resnet_20-{overrides_hash(overrides)}-smoke-seed0" and overrides == {'epochs': 3}
    assert plan['run_dir'] == str(tmp_path/'runs'/'smoke'/f"resnet_20-{overrides_hash(overrides)}"/'seed0')
    assert (plan['action'], plan['config']['epochs'], plan['start_epoch']) == ('start', 3, 0)
    assert plan['precision']['used'] == 'fp32' and plan['device'] == 'cpu' and len(plan['config_hash']) == 16
    assert not (tmp_path/'runs').exists()
    shown = json.loads(cli('train', 'resnet_20', '--show-profile', 'cpu-budget', '--out', tmp_path/'runs').stdout)
    assert shown['config']['budget_s'] == 120.0 and shown['settled_when_the_run_starts'] == ['steps', 'epochs']
    assert shown['config']['steps'] == shown['config']['epochs'] == training.SETTLED_BY_THE_PROBE


def test_command_line_starts_without_torch():
    code = ("import sys; from cifar_study.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'fastai', 'torchvision') if m in sys.modules))")
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == '[]', result.stderr


def test_corrupt_checkpoint_on_resume_is_refused_and_nothing_changes(tmp_path, synthetic_data):
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, synthetic_data['npz'], cbs=[InterruptMidEpoch(1)])
    checkpoint = run_dir(tmp_path)/'checkpoint.pt'
    checkpoint.write_bytes(checkpoint.read_bytes()[:5000])  # truncated
    before = {p.name: p.read_bytes() for p in (run_dir(tmp_path)).iterdir()}
    result = cli_train(tmp_path, synthetic_data['npz'], '--resume')
    assert_one_line_refusal(result, 'checkpoint.pt cannot be read', 'truncated or corrupt', '--force')
    assert {p.name: p.read_bytes() for p in (run_dir(tmp_path)).iterdir()} == before


def test_two_concurrent_runs_on_one_folder(tmp_path, synthetic_data):
    processes = [subprocess.Popen([BIN/'cifar-study', 'train', 'resnet_20', '--profile', 'smoke', '--epochs', '3',
                                   '--data-dir', str(synthetic_data['npz']), '--out', str(tmp_path)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=600), *p.communicate()) for p in processes]
    assert sorted(code for code, _, _ in results) == [0, 2], results
    _, _, refused = next(r for r in results if r[0] == 2)
    line = refused.strip().splitlines()[-1]
    assert line.startswith('cifar-study: error: ') and 'Traceback' not in refused
    assert any(reason in line for reason in ('is in use by pid', 'holds a running run', 'holds a completed run',
                                             'changed after this run was planned')), line
    record = load_run_record(run_dir(tmp_path))
    assert record.status == 'completed' and [row['epoch'] for row in record.epochs] == [0, 1, 2]
    assert not (run_dir(tmp_path)/'run.lock').exists()


def test_a_live_lock_is_refused_and_a_dead_one_taken_over(tmp_path, synthetic_data):
    folder = run_folder_path(resolve_config('resnet_20', 'smoke', epochs=1), tmp_path)
    folder.mkdir(parents=True)
    sleeper = subprocess.Popen(['sleep', '60'])
    try:
        started = Path(f'/proc/{sleeper.pid}/stat').read_text().rsplit(')', 1)[1].split()[19]
        holder = dict(host=socket.gethostname(), pid=sleeper.pid, pid_start=started, since='now', command=['sleep', '60'])
        (folder/'run.lock').write_text(json.dumps(holder))
        assert_one_line_refusal(cli_train(tmp_path, synthetic_data['npz'], '--epochs', '1'),
                                f'is in use by pid {sleeper.pid} on {socket.gethostname()}')
    finally:
        sleeper.kill()
        sleeper.wait()
    result = cli_train(tmp_path, synthetic_data['npz'], '--epochs', '1')
    assert result.returncode == 0, result.stderr
    assert f'taking over the lock of pid {sleeper.pid}' in result.stdout
    assert load_run_record(folder).status == 'completed' and not (folder/'run.lock').exists()


def test_killed_cli_run_resumes_to_completion(tmp_path, synthetic_data):
    command = [BIN/'cifar-study', 'train', 'resnet_20', '--profile', 'smoke', '--epochs', '12',
               '--data-dir', str(synthetic_data['npz']), '--out', str(tmp_path)]
    folder = run_folder_path(resolve_config('resnet_20', 'smoke', epochs=12), tmp_path)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    def checkpointed():  # the checkpoint is written just after the record: wait for it
        return (folder/'checkpoint.pt').exists()
    while not checkpointed() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = load_run_record(folder)
    assert killed.status == 'running' and 1 <= len(killed.epochs) < 12
    assert json.loads((folder/'run.lock').read_text())['pid'] == process.pid  # left behind by the killed process
    result = subprocess.run([*command, '--resume'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f'taking over the lock of pid {process.pid}' in result.stdout
    record = load_run_record(folder)
    assert record.status == 'completed' and [row['epoch'] for row in record.epochs] == list(range(12))
    assert record.resumed_at_epochs and record.resumed_at_epochs[0] >= 1
    assert record.command[:3] == ['cifar-study', 'train', 'resnet_20']


def test_two_process_cpu_ddp(tmp_path):
    data = write_synthetic_cifar100(tmp_path/'data', n_train=256, n_test=128)['npz']
    out = tmp_path/'out'
    env = dict(os.environ, ACCELERATE_USE_CPU='true', OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node=2',
                             str(Path(__file__).parent/'ddp_worker.py'), str(out), str(data)],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == ['seen-rank0.json', 'seen-rank1.json', 'smoke']
    assert {'checkpoint.pt', 'record.json'} <= {p.name for p in (run_dir(out)).iterdir()}
    assert result.stdout.count('epoch 1/2') == 1  # only rank 0 logs
    record = load_run_record(run_dir(out))
    assert record.status == 'completed' and record.distributed['world_size'] == 2
    assert record.distributed['backend'] == 'gloo' and record.distributed['train_samples_per_process'] == [128, 128]
    seen = [set(json.loads((out/f'seen-rank{rank}.json').read_text())) for rank in (0, 1)]
    train = load_split(find_cifar100(data), 'train')
    everything = {hashlib.sha1(image.tobytes()).hexdigest() for image in train.images}
    assert len(everything) == 256 and len(seen[0]) == len(seen[1]) == 128
    assert not seen[0] & seen[1] and seen[0] | seen[1] == everything  # each process saw its own half
    top1, top5 = evaluate_checkpoint(run_dir(out), data)  # metrics gathered over both processes match a plain evaluation
    assert record.final['test_images'] == 128
    assert record.final['top1'] == pytest.approx(top1, abs=1e-6) and record.final['top5'] == pytest.approx(top5, abs=1e-6)


def test_record_loader_rejects_bad_records_and_migrates_old_ones(tmp_path, synthetic_data):
    smoke(tmp_path, synthetic_data['npz'], epochs=1)
    path = run_dir(tmp_path)/'record.json'
    raw = json.loads(path.read_text())
    for broken, message in ((dict(raw, schema_version=99), 'schema version 99, this code reads 1 to 4'),
                            (dict(raw, params='many'), "'params' should be int"),
                            (dict(raw, epochs=[{'epoch': 0}]), 'epoch row 0 needs'),
                            (dict(raw, surprise=1), "unknown field 'surprise'")):
        path.write_text(json.dumps(broken))
        with pytest.raises(RunRecordError, match=message):
            load_run_record(path)
    path.write_text('{"truncated": ')
    with pytest.raises(RunRecordError, match='not valid JSON'):
        load_run_record(path)
    version_1 = {k: v for k, v in raw.items()
                 if k not in ('config_hash', 'command', 'setup_seconds', 'eval_seconds', 'source_diff', 'device_settings')}
    version_1['epochs'] = [{k: v for k, v in row.items() if k not in ('steps', 'train_seconds', 'eval_seconds')} for row in raw['epochs']]
    path.write_text(json.dumps(dict(version_1, schema_version=1)))
    migrated = load_run_record(path)
    assert migrated.schema_version == records.SCHEMA_VERSION and migrated.evaluation is None
    assert migrated.config_hash is None and migrated.epochs[0]['steps'] is None
    assert migrated.device_settings is None
    assert migrated.final == raw['final']


def test_channels_last_run(tmp_path, synthetic_data):
    seen = ChannelsLastSeen()
    record = smoke(tmp_path, synthetic_data['npz'], epochs=1, channels_last=True, cbs=[seen])
    assert record.status == 'completed' and record.config['channels_last'] is True
    assert len(seen.weights) == len(seen.activations) == 6 and all(seen.weights) and all(seen.activations)


def test_a_type_error_from_a_model_is_not_blamed_on_drop_path(monkeypatch):
    def broken(name, **kwargs): raise TypeError("__init__() got multiple values for keyword argument 'depths'")
    monkeypatch.setattr(cifar_study.models, 'create_model', broken)
    with pytest.raises(TypeError, match='multiple values'):
        create_run_model(resolve_config('resnet_20', drop_path=0.1))


def test_compiled_run_checkpoints_plain_weights(tmp_path, synthetic_data):
    # torch.compile on CPU (inductor, ~40 s here): the checkpoint must load into an uncompiled model
    record = smoke(tmp_path, synthetic_data['npz'], epochs=1, compile=True)
    assert record.status == 'completed' and record.config['compile'] is True
    weights = torch.load(run_dir(tmp_path)/'checkpoint.pt', weights_only=False)['model']
    create_model('resnet_20').load_state_dict(weights)


class HostReads(Callback):
    "Counts `Tensor.cpu` and `Tensor.item` calls made while a training batch runs (each one waits for a GPU)."
    order = 100  # after the Recorder, whose per-batch reads are what this counts
    def __init__(self): self.calls, self.counting = 0, False
    def before_fit(self):
        self.originals = torch.Tensor.cpu, torch.Tensor.item
        def counted(original):
            def call(tensor, *args, **kwargs):
                if self.counting: self.calls += 1
                return original(tensor, *args, **kwargs)
            return call
        torch.Tensor.cpu, torch.Tensor.item = (counted(f) for f in self.originals)
    def before_batch(self): self.counting = self.training
    def after_batch(self): self.counting = False
    def after_fit(self): torch.Tensor.cpu, torch.Tensor.item = self.originals


def fit_smoke_learner(data, cbs=(), without=()):
    "Two epochs of a tiny resnet_20 Learner on synthetic data; returns the Learner."
    from cifar_study.data import cifar100_dataloaders
    torch.manual_seed(0)
    dls = cifar100_dataloaders(data, batch_size=32, augment='none', train_limit=96, test_limit=64, seed=0)
    learn = build_learner(create_model('resnet_20'), dls, resolve_config('resnet_20', 'smoke'),
                          precision_used('fp32', torch.device('cpu')))
    for kind in without: learn.remove_cb(kind)
    learn.fit(2, cbs=list(cbs))
    return learn


def test_metrics_stay_on_the_device_and_give_fastais_numbers(synthetic_data):
    reads = HostReads()
    learn = fit_smoke_learner(synthetic_data['npz'], cbs=[reads])
    assert reads.calls == 0  # no read of the loss or the metrics per training batch
    fastai_reads = HostReads()
    plain = fit_smoke_learner(synthetic_data['npz'], cbs=[fastai_reads], without=[MetricsOnDevice])
    assert fastai_reads.calls >= 6  # fastai's own meters read the loss after every batch
    assert learn.recorder.values == plain.recorder.values  # train loss, test loss, top-1, top-5: the same numbers
    assert learn.recorder.loss.__class__ is plain.recorder.loss.__class__  # fastai's meters are back after the fit


def test_evaluation_runs_in_inference_mode(synthetic_data):
    class ModeSeen(Callback):
        def __init__(self): self.modes = []
        def before_batch(self): self.modes.append((self.training, torch.is_inference_mode_enabled()))
    seen = ModeSeen()
    fit_smoke_learner(synthetic_data['npz'], cbs=[seen])
    assert {mode for training_batch, mode in seen.modes if not training_batch} == {True}
    assert {mode for training_batch, mode in seen.modes if training_batch} == {False}
    assert not torch.is_inference_mode_enabled()
    seen = ModeSeen()
    fit_smoke_learner(synthetic_data['npz'], cbs=[seen], without=[InferenceModeEval])
    assert not any(mode for _, mode in seen.modes)


@pytest.mark.parametrize('profile', ['full', 'fast'])
def test_full_and_fast_plan_the_batched_path_and_settle_auto_for_the_device(tmp_path, profile):
    plan = plan_run('resnet_20', profile=profile, out=tmp_path)
    assert plan.config.batch_augment and plan.config.augment == 'original'
    assert (plan.config.precision, plan.config.channels_last, plan.config.compile) == ('auto', 'auto', 'auto')
    # on the CPU nothing changes: fp32, the plain memory format, eager mode
    assert plan.precision == dict(requested='auto', used='fp32', note=None)
    assert plan.device_settings == dict(channels_last=dict(requested='auto', used=False),
                                        compile=dict(requested='auto', used=False))
    assert plan.describe()['device_settings'] == plan.device_settings
    on_cuda = device_settings(plan.config, torch.device('cuda'))
    assert on_cuda['channels_last']['used'] and on_cuda['compile']['used']
    forced = device_settings(replace(plan.config, compile=True, channels_last=False), torch.device('cpu'))
    assert forced['compile']['used'] and not forced['channels_last']['used']


def test_batched_original_run_records_what_ran(tmp_path, synthetic_data):
    record = smoke(tmp_path, synthetic_data['npz'], epochs=1, augment='original', batch_augment=True)
    assert record.status == 'completed' and record.config['batch_augment'] is True
    assert record.augmentation['train'][2].startswith('trivial_augment_wide(') and 'batched' in record.augmentation['train'][-1]
    assert record.device_settings == dict(channels_last=dict(requested=False, used=False),
                                          compile=dict(requested=False, used=False))
    per_image = smoke(tmp_path/'pil', synthetic_data['npz'], epochs=1, augment='original')
    assert per_image.augmentation['train'][2].startswith('TrivialAugmentWide(')


def test_switches_on_the_command_line(tmp_path, synthetic_data):
    plan = lambda *args: json.loads(cli_train(tmp_path, synthetic_data['npz'], '--dry-run', *args).stdout)
    assert plan('--compile')['device_settings']['compile'] == dict(requested=True, used=True)
    assert plan('--compile', 'auto', '--channels-last', 'no')['device_settings'] == dict(
        channels_last=dict(requested=False, used=False), compile=dict(requested='auto', used=False))
    assert plan('--batch-augment', '--precision', 'auto')['config']['batch_augment'] is True
    full = lambda *args: json.loads(cli('train', 'resnet_20', '--profile', 'full', '--out', tmp_path, '--dry-run', *args).stdout)
    assert full()['config']['batch_augment'] is True and full('--batch-augment', 'no')['config']['batch_augment'] is False
    refused = cli_train(tmp_path, synthetic_data['npz'], '--compile', 'maybe')
    assert refused.returncode == 2 and 'yes, no or auto' in refused.stderr


def test_a_run_in_the_old_layout_is_named_with_the_command_that_moves_it(tmp_path, synthetic_data):
    smoke(tmp_path, synthetic_data['npz'], epochs=1)
    old = tmp_path/'resnet_20-smoke-seed0'  # where earlier versions put it: <out>/<model>-<profile>-seed<k>
    run_dir(tmp_path).rename(old)
    result = cli_train(tmp_path, synthetic_data['npz'], '--epochs', '1')
    new = run_folder_path(resolve_config('resnet_20', 'smoke', epochs=1), tmp_path)
    assert_one_line_refusal(result, f'{old} holds this run in the old layout', f'mv {old} {new}')
    assert not new.exists() and load_run_record(old).status == 'completed'
    assert cli_train(tmp_path, synthetic_data['npz'], '--epochs', '2', '--dry-run').returncode == 0  # another run: no match


def test_a_run_of_fixed_epochs_is_the_same_on_a_busy_machine(tmp_path, synthetic_data):
    "Without a time budget the steps do not depend on the machine's speed: a run beside a busy process is bit-identical."
    quiet = smoke(tmp_path/'quiet', synthetic_data['npz'], epochs=2, corruption_images=0)
    burner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])  # one core kept busy for the whole run
    try: busy = smoke(tmp_path/'busy', synthetic_data['npz'], epochs=2, corruption_images=0)
    finally: burner.kill()
    measured = lambda record: [(row['steps'], row['train_loss'], row['test_loss'], row['top1'], row['lr']) for row in record.epochs]
    assert measured(busy) == measured(quiet) and busy.final['top1'] == quiet.final['top1']
    assert busy.evaluation['nll'] == quiet.evaluation['nll'] and busy.evaluation['per_class'] == quiet.evaluation['per_class']
