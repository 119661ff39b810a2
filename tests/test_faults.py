"""The held-out fault audit (issue 20): each bad input is one line naming the cause and the fix, exit 2, and nothing
recorded changes; a fault during a run marks its record failed with its cause."""
import json
import math
import shutil

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback

from cifar_study.analysis import load_study
from cifar_study.cli import main
from cifar_study.data import CIFARDataError, data_checksums, find_cifar100, load_split, write_synthetic_cifar100
from cifar_study.records import RunRecordError, load_run_record
from cifar_study.run_folder import read_job_file
from test_data import rewrite_npz
from test_training import InterruptMidEpoch, assert_one_line_refusal, cli, cli_train, run_dir, smoke


def strict_load(path):
    "Parse JSON as RFC 8259 does: NaN and Infinity are not JSON."
    def refuse(constant): raise ValueError(f"{path} holds {constant}, which strict JSON parsers reject")
    return json.loads(path.read_text(), parse_constant=refuse)


def folder_bytes(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.fixture()
def interrupted(tmp_path, synthetic_data):
    "A smoke run stopped in its second epoch: one epoch recorded and checkpointed."
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, synthetic_data['npz'], cbs=[InterruptMidEpoch(1)])
    return run_dir(tmp_path)


def test_a_run_that_diverges_is_failed_and_its_record_is_strict_json(tmp_path, synthetic_data):
    result = cli_train(tmp_path, synthetic_data['npz'], '--lr', '1e6', '--grad-clip', 'none', '--epochs', '3')
    assert result.returncode == 1 and 'diverged' in result.stderr and 'lower --lr' in result.stderr
    record = strict_load(run_dir(tmp_path)/'record.json')
    assert record['status'] == 'failed' and 'DivergedError' in record['error']
    # the epoch whose loss became NaN is neither recorded nor checkpointed: record and checkpoint agree
    checkpoint = torch.load(run_dir(tmp_path)/'checkpoint.pt', weights_only=False) if record['epochs'] else None
    assert all(math.isfinite(row['train_loss']) for row in record['epochs'])
    assert checkpoint is None or checkpoint['epoch'] == record['epochs'][-1]['epoch']
    report = cli('status', '--out', tmp_path, '--json')
    assert [row['status'] for row in json.loads(report.stdout)['runs']] == ['failed']


def test_records_never_hold_nan_or_infinity(tmp_path, synthetic_data):
    record = smoke(tmp_path, synthetic_data['npz'], epochs=1)
    record.final['loss'], record.epochs[0]['test_loss'] = float('nan'), float('inf')
    record.save(tmp_path/'record.json')
    saved = strict_load(tmp_path/'record.json')
    assert saved['final']['loss'] is None and saved['epochs'][0]['test_loss'] is None


def test_resuming_on_other_data_is_refused_unless_forced(tmp_path, synthetic_data, interrupted):
    other = write_synthetic_cifar100(tmp_path/'other', n_train=200, n_test=100, seed=1)['npz']
    before = folder_bytes(interrupted)
    result = cli_train(tmp_path, other, '--resume')
    assert_one_line_refusal(result, 'other data', 'checksums differ', '--force')
    assert folder_bytes(interrupted) == before
    assert cli_train(tmp_path, synthetic_data['npz'], '--resume').returncode == 0  # the data it started on
    restarted = cli_train(tmp_path, other, '--force')
    assert restarted.returncode == 0, restarted.stderr
    assert load_run_record(interrupted).data['checksums'] == data_checksums(find_cifar100(other))


def test_a_checkpoint_without_a_training_state_is_refused_and_nothing_changes(tmp_path, synthetic_data, interrupted):
    torch.save({'epoch': 1}, interrupted/'checkpoint.pt')
    before = folder_bytes(interrupted)
    result = cli_train(tmp_path, synthetic_data['npz'], '--resume')
    assert_one_line_refusal(result, 'checkpoint.pt is not a training checkpoint', 'lacks config, rng, model', '--force')
    assert folder_bytes(interrupted) == before


@pytest.mark.parametrize('corrupt', ['garbage', 'future'])
def test_an_unreadable_record_is_named_by_status_and_report(tmp_path, smoke_results, corrupt):
    results = tmp_path/'results'
    shutil.copytree(smoke_results, results)
    path = next(results.glob('smoke/*/seed0/record.json'))
    if corrupt == 'garbage': path.write_text('{"run_name": ')
    else: path.write_text(json.dumps(dict(json.loads(path.read_text()), schema_version=99)))
    for command in (['status', '--out', results], ['status', '--out', results, '--profile', 'smoke', '--json']):
        result = cli(*command)
        assert result.returncode == 2 and str(path) in result.stderr and 'restore it' in result.stderr
        assert 'unreadable' in result.stdout
    with pytest.raises(RunRecordError, match='a report needs every record: .*record.json.*restore it'):
        load_study(results, 'smoke')


@pytest.mark.parametrize('labels, problem', [
    (np.full(10, np.nan), 'labels are float64 values, expected integers 0..99'),
    (np.full(10, 3.5), 'labels are float64 values'),
    (np.full(10, 3.0, np.float32), 'labels are float32 values'),
])
def test_labels_must_be_integers(tmp_path, labels, problem):
    folder = write_synthetic_cifar100(tmp_path)['npz']
    rewrite_npz(folder, images=np.zeros((10, 32, 32, 3), np.uint8), fine_labels=labels)
    with pytest.raises(CIFARDataError, match=problem):
        load_split(find_cifar100(folder), 'train')
    assert_one_line_refusal(cli('data', 'check', '--data-dir', folder), problem)


def test_meta_json_must_list_each_file_with_its_count(tmp_path):
    folder = write_synthetic_cifar100(tmp_path)['npz']
    meta = json.loads((folder/'meta.json').read_text())
    (folder/'meta.json').write_text(json.dumps(dict(meta, files=list(meta['files']))))
    assert_one_line_refusal(cli('data', 'check', '--data-dir', folder), '"files" maps each npz name')
    meta['files']['train.npz']['count'] = 199
    (folder/'meta.json').write_text(json.dumps(meta))
    assert_one_line_refusal(cli('data', 'check', '--data-dir', folder), 'lists 199 images for train.npz, which holds 200')


@pytest.mark.parametrize('option, value, problem', [
    ('--weight-decay', '-1', 'weight_decay must be 0 or more'),
    ('--lr', 'inf', 'lr must be a finite number, got inf'),
    ('--lr', 'nan', 'lr must be a finite number, got nan'),
    ('--momentum', '-1', 'momentum must be in [0, 1)'),
    ('--budget-s', 'inf', 'budget_s must be a finite number (or none), got inf'),
])
def test_bad_values_are_refused_before_the_run(tmp_path, synthetic_data, option, value, problem):
    assert_one_line_refusal(cli_train(tmp_path, synthetic_data['npz'], option, value), problem)
    assert not (tmp_path/'smoke').exists()


@pytest.mark.parametrize('settings, problem', [
    ('epochs = 1.5', 'epochs must be an integer, got 1.5'),
    ('lr = "abc"', "lr must be a finite number, got 'abc'"),
    ('batch_size = "x"', "batch_size must be an integer, got 'x'"),
])
def test_plan_values_of_the_wrong_type_are_refused(tmp_path, synthetic_data, settings, problem):
    plan = tmp_path/'plan.toml'
    plan.write_text(f'profile = "smoke"\nmodels = ["resnet_20"]\n[overrides.resnet_20]\n{settings}\n')
    result = cli('run', '--plan-file', plan, '--out', tmp_path/'out', '--data-dir', synthetic_data['npz'], '--dry-run')
    assert_one_line_refusal(result, problem)
    assert not (tmp_path/'out').exists()


@pytest.mark.parametrize('text, problem', [
    ('models = ["resnet_20"]\noverrides = 5\n', '`overrides` must be tables of config fields'),
    ('models = ["resnet_20"]\nprofile = "nope"\n', "unknown profile 'nope': use one of smoke"),
    (b'\x80\x81\xfe\xff', 'is not text'),
])
def test_plan_files_that_are_not_plans_are_refused(tmp_path, text, problem):
    plan = tmp_path/'plan.toml'
    plan.write_bytes(text) if isinstance(text, bytes) else plan.write_text(text)
    assert_one_line_refusal(cli('run', '--plan-file', plan, '--out', tmp_path/'out', '--dry-run'), problem)


def test_a_dry_run_checks_the_data(tmp_path, synthetic_data):
    data = tmp_path/'data'
    shutil.copytree(synthetic_data['npz'], data)
    (data/'train.npz').write_bytes((data/'train.npz').read_bytes()[:4000])  # truncated
    result = cli('run', 'ablation-ghost-ratio', '--profile', 'smoke', '--out', tmp_path/'out', '--data-dir', data, '--dry-run')
    assert_one_line_refusal(result, 'train.npz', 'corrupt or truncated')


@pytest.mark.parametrize('command, known', [
    (['report', '--profile', 'nope'], 'use one of smoke, cpu-budget, cpu-epochs'),
    (['status', '--profile', 'nope'], 'use one of smoke, cpu-budget, cpu-epochs'),
    (['evaluate', '--profile', 'nope'], 'use one of smoke, cpu-budget, cpu-epochs'),
    (['run', 'comparison', '--profile', 'nope'], 'use one of smoke, cpu-budget, cpu-epochs'),
    (['models', '--group', 'nope'], 'use one of basic ResNet, attention, lightweight'),
])
def test_unknown_names_are_refused_naming_the_known_ones(command, known, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:  # with folders of its own: code that took the name would write nowhere real
        main(command + {'report': ['--results', str(tmp_path), '--out', str(tmp_path/'docs')],
                        'run': ['--out', str(tmp_path), '--dry-run']}.get(command[0], ['--out', str(tmp_path)]
                                                                             if command[0] in ('status', 'evaluate') else []))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith('cifar-study')]  # after argparse's usage
    assert exit_.value.code == 2 and len(lines) == 1 and "'nope'" in lines[0] and known in lines[0]


def test_a_lock_that_names_no_process_says_how_to_clear_it(tmp_path, synthetic_data, interrupted):
    (interrupted/'run.lock').write_text('garbage')
    result = cli_train(tmp_path, synthetic_data['npz'], '--resume')
    assert_one_line_refusal(result, 'run.lock cannot be read (it names no process)', 'delete it')
    assert 'pid None' not in result.stderr


class KeepRecordAtEpoch(Callback):
    "Keep the record as it stands when epoch `epoch` starts: what kill -9 during that epoch leaves behind."
    order = 100
    def __init__(self, path, epoch): self.path, self.at, self.kept = path, epoch, None
    def before_epoch(self):
        if self.epoch == self.at: self.kept = self.path.read_bytes()


def test_wall_time_covers_training_after_a_kill_and_a_resume(tmp_path, synthetic_data):
    keep = KeepRecordAtEpoch(run_dir(tmp_path)/'record.json', 1)
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path, synthetic_data['npz'], cbs=[keep, InterruptMidEpoch(1)])
    (run_dir(tmp_path)/'record.json').write_bytes(keep.kept)  # no final save: the process was killed
    assert json.loads(keep.kept)['status'] == 'running'
    resumed = smoke(tmp_path, synthetic_data['npz'], resume=True)
    assert resumed.wall_seconds >= resumed.train_seconds + resumed.eval_seconds - 0.1


def test_a_corrupt_record_can_be_set_aside_with_force(tmp_path, synthetic_data, interrupted):
    (interrupted/'record.json').write_text('{"run_name": ')
    refused = cli_train(tmp_path, synthetic_data['npz'], '--resume')
    assert_one_line_refusal(refused, 'record.json', '--force')
    result = cli_train(tmp_path, synthetic_data['npz'], '--force')
    assert result.returncode == 0, result.stderr
    assert load_run_record(interrupted).status == 'completed'
    assert any(p.name.startswith('record.replaced-') for p in interrupted.iterdir())


def test_more_gpus_than_the_machine_has_are_said_to_be_cpu_processes(tmp_path, synthetic_data):
    visible = torch.cuda.device_count()
    asked = max(2, visible + 1)  # one process is the default, and needs no GPU
    result = cli_train(tmp_path, synthetic_data['npz'], '--gpus', asked, '--dry-run')
    assert result.returncode == 0 and f'--gpus {asked}: {visible} GPU(s) visible here' in result.stderr
    assert f'starts {asked} CPU processes' in result.stderr and 'leave --gpus out' in result.stderr


def test_a_data_error_leaves_no_empty_out_folder(tmp_path):
    result = cli('train', 'resnet_20', '--profile', 'smoke', '--data-dir', tmp_path/'missing', '--out', tmp_path/'out')
    assert_one_line_refusal(result, 'missing', 'does not exist')
    assert not (tmp_path/'out').exists()


def test_the_attempt_of_a_killed_runner_is_closed_when_the_job_is_next_run(tmp_path, smoke_results):
    from cifar_study.plans import make_job
    from cifar_study.runner import BatchOptions, run_job
    results = tmp_path/'results'
    shutil.copytree(smoke_results, results)
    folder = results/'smoke'/'resnet_20'/'seed0'
    job_file = json.loads((folder/'job.json').read_text())
    dead = dict(host=__import__('socket').gethostname(), pid=2 ** 22 + 1, started_at='2026-12-05T23:53:50+00:00', outcome='running')
    (folder/'job.json').write_text(json.dumps(dict(job_file, attempts=[dead, *job_file['attempts']])))
    outcome = run_job(make_job('resnet_20', 0, 'smoke'), BatchOptions(out=str(results)))
    assert outcome.status == 'skipped'
    closed = read_job_file(folder)['attempts'][0]
    assert closed['outcome'] == 'interrupted' and 'killed' in closed['error']


def test_an_out_folder_that_cannot_be_made_names_the_fix(tmp_path, synthetic_data):
    result = cli('train', 'resnet_20', '--profile', 'smoke', '--data-dir', synthetic_data['npz'], '--out', '/proc/cifar-study-x')
    assert_one_line_refusal(result, '/proc/cifar-study-x', 'pass --out')


def test_a_command_started_in_another_checkout_is_refused(tmp_path, monkeypatch):
    checkout = tmp_path.resolve()  # a second clone or a git worktree: the imported code is not its code
    (checkout/'nbs').mkdir(); (checkout/'pyproject.toml').write_text('[project]\nname = "cifar_study"\n')
    monkeypatch.chdir(checkout)
    assert_one_line_refusal(cli('status', '--out', checkout/'results'), f'in the checkout {checkout}', f'PYTHONPATH={checkout}')
