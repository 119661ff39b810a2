import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastai.callback.core import Callback

from cifar_study.cli import main
from cifar_study.plans import PLANS, expand_plans, make_job, shard
from cifar_study.recipes import overrides_hash
from cifar_study.records import load_run_record, repo_root
from cifar_study.run_folder import RunFolder, holder_alive, read_job_file, read_lock
from cifar_study.runner import BatchOptions, batch_slots, gpu_groups, job_description, notebook_parameters, run_side_by_side
from cifar_study.training import train_model

BIN = Path(sys.executable).parent
GHOST_RATIO = PLANS['ablation-ghost-ratio'].models


def run_command(out, data, *args) -> list[str]:
    "The `cifar-study run` command line on synthetic data."
    return [str(BIN/'cifar-study'), 'run', *map(str, args), '--out', str(out), '--data-dir', str(data)]


def start(command) -> subprocess.Popen:
    "Start a runner; one torch thread per kernel keeps runs side by side on two cores from slowing each other down."
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))


def plan_file(folder, text) -> Path:
    path = Path(folder)/'plan.toml'
    path.write_text('profile = "smoke"\n' + text)
    return path


def wait_until(condition, timeout_s=240, what='the condition'):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def live_lock_holder(run_dir) -> int | None:
    "The pid of the live process holding the run folder's lock (the kernel), or None."
    holder = read_lock(run_dir)
    return holder['pid'] if holder and holder_alive(holder) else None


def training_with_checkpoint(run_dir) -> bool:
    "Whether the run in `run_dir` is training and has saved a checkpoint (so that a resume continues from it)."
    try: record = json.loads((Path(run_dir)/'record.json').read_text())
    except (OSError, json.JSONDecodeError): return False
    return record['status'] == 'running' and (Path(run_dir)/'checkpoint.pt').exists()


def one_line_refusal(capsys, argv, *phrases):
    "`main(argv)` ends with status 2 and one line on stderr naming each phrase."
    with pytest.raises(SystemExit) as ended: main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 2 and len(lines) == 1, lines
    for phrase in phrases: assert phrase in lines[0], lines[0]


@pytest.fixture(scope='module')
def ghost_batch(synthetic_data, tmp_path_factory):
    "The ghost-ratio ablation on the smoke profile, run by two runners started at once on one --out."
    out = tmp_path_factory.mktemp('ghost')/'results'
    command = run_command(out, synthetic_data['npz'], 'ablation-ghost-ratio', '--profile', 'smoke', '--seeds', '0')
    runners = [start(command) for _ in range(2)]
    outputs = [runner.communicate(timeout=600) for runner in runners]
    results = [(runner.returncode, *output) for runner, output in zip(runners, outputs)]
    return out, command, results


def test_ablation_batch_writes_executed_notebooks_and_records(ghost_batch):
    out, _, results = ghost_batch
    assert [code for code, _, _ in results] == [0, 0], [stderr[-3000:] for _, _, stderr in results]
    for model in GHOST_RATIO:
        run_dir = out/'smoke'/model/'seed0'
        record = load_run_record(run_dir)
        assert (record.status, record.model, len(record.epochs)) == ('completed', model, 2)
        cells = json.loads((run_dir/'run.ipynb').read_text())['cells']
        injected = [cell for cell in cells if 'injected-parameters' in cell['metadata'].get('tags', [])]
        assert len(injected) == 1 and f'model = "{model}"' in ''.join(injected[0]['source'])
        assert f"{record.run_name} epoch 2/2" in (run_dir/'run.log').read_text()


def test_two_runners_at_once_run_every_job_exactly_once(ghost_batch):
    out, _, results = ghost_batch
    finished = [line for _, stdout, _ in results for line in stdout.splitlines() if line.startswith('completed')]
    assert len(finished) == len(GHOST_RATIO), finished
    for model in GHOST_RATIO:
        run_dir = out/'smoke'/model/'seed0'
        assert [a['outcome'] for a in read_job_file(run_dir)['attempts']] == ['completed']
        assert load_run_record(run_dir).resumed_at_epochs == []
        assert not list(run_dir.glob('*.replaced-*'))


def test_rerun_starts_no_kernel(ghost_batch):
    out, command, _ = ghost_batch
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert '4 of 4 runs already completed: skipped (no kernel started)' in rerun.stdout
    for model in GHOST_RATIO: assert len(read_job_file(out/'smoke'/model/'seed0')['attempts']) == 1


def test_status_lists_the_runs_without_importing_torch(ghost_batch):
    out = ghost_batch[0]
    code = ("import sys\nfrom cifar_study.cli import main\n"
            f"main(['status', '--out', {str(out)!r}, '--plan', 'ablation-ghost-ratio', '--json'])\n"
            "assert 'torch' not in sys.modules")
    status = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr[-3000:]
    report = json.loads(status.stdout)
    assert sorted(row['model'] for row in report['runs']) == sorted(GHOST_RATIO)
    assert all(row['status'] == 'completed' and row['epochs'] == row['planned_epochs'] == 2 and row['top1'] is not None
               and 'ablation-ghost-ratio' in row['plans'] for row in report['runs'])
    assert report['totals']['completed'] == 4


def test_killed_runner_restarts_and_completes_without_redoing_finished_runs(synthetic_data, tmp_path):
    plan = plan_file(tmp_path, 'models = ["resnet_20", "ghost_resnet_20"]\n[overrides.ghost_resnet_20]\nepochs = 6\n')
    out = tmp_path/'results'
    command = run_command(out, synthetic_data['npz'], '--plan-file', plan)
    first = out/'smoke'/'resnet_20'/'seed0'
    runner = start(command)
    second_dir = lambda: next((out/'smoke').glob('ghost_resnet_20-*/seed0'), None)
    wait_until(lambda: second_dir() and training_with_checkpoint(second_dir()), what='the second run to train')
    kernel = live_lock_holder(second_dir())
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    wait_until(lambda: not holder_alive(dict(host=read_lock(second_dir())['host'], pid=kernel)), timeout_s=30,
               what='the orphaned kernel to exit')
    started_at = load_run_record(first).started_at
    restarted = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert load_run_record(first).started_at == started_at and len(read_job_file(first)['attempts']) == 1
    resumed = load_run_record(second_dir())
    assert resumed.status == 'completed' and len(resumed.epochs) == 6 and resumed.resumed_at_epochs


def test_killed_kernel_is_recorded_failed_and_retried_while_the_others_complete(synthetic_data, tmp_path):
    plan = plan_file(tmp_path, 'models = ["ghost_resnet_20", "resnet_20"]\n[overrides.ghost_resnet_20]\nepochs = 4\n')
    out = tmp_path/'results'
    runner = start(run_command(out, synthetic_data['npz'], '--plan-file', plan))
    victim = lambda: next((out/'smoke').glob('ghost_resnet_20-*/seed0'), None)
    killed = []
    def kill_a_training_kernel():
        pid = victim() and training_with_checkpoint(victim()) and live_lock_holder(victim())
        # the runner itself holds the lock for a moment when it marks a dead kernel's record failed: spare it
        if pid and pid != runner.pid and pid not in killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return len(killed) == 2 or runner.poll() is not None
    wait_until(kill_a_training_kernel, what='two training kernels to kill')
    stdout, stderr = runner.communicate(timeout=600)
    assert runner.returncode == 1 and len(killed) == 2, stderr[-3000:]
    assert '1 of 2 runs failed' in stderr
    assert [a['outcome'] for a in read_job_file(victim())['attempts']] == ['kernel died', 'kernel died']
    failed = load_run_record(victim())
    assert failed.status == 'failed' and 'the kernel died' in failed.error
    assert load_run_record(out/'smoke'/'resnet_20'/'seed0').status == 'completed'
    assert any(line.startswith('failed') and 'ghost_resnet_20' in line for line in stdout.splitlines())


@pytest.mark.parametrize('text, phrases', [
    ('models = ["resnet_20"]\n[overrides.resnet_20]\nlrr = 0.05\n', ('plan plan', 'Unknown config field(s) lrr')),
    ('models = ["resnet_20", "ghost_resnet20"]\n', ('plan plan', "Unknown model 'ghost_resnet20'", 'ghost_resnet_20')),
])
def test_plan_file_typo_fails_before_any_run_starts(synthetic_data, tmp_path, capsys, text, phrases):
    out = tmp_path/'results'
    one_line_refusal(capsys, run_command(out, synthetic_data['npz'], '--plan-file', plan_file(tmp_path, text))[1:], *phrases)
    assert not out.exists()


def test_slurm_without_slurm_is_one_line(synthetic_data, tmp_path, capsys):
    argv = run_command(tmp_path/'results', synthetic_data['npz'], 'demo', '--executor', 'slurm')[1:]
    one_line_refusal(capsys, argv, 'SLURM is not available here', '--executor local')


def test_shards_cover_the_plan_exactly_once(synthetic_data, tmp_path, capsys):
    jobs = expand_plans([PLANS['all']], profile='smoke')
    shards = [shard(jobs, i, 3) for i in (1, 2, 3)]
    assert sorted(map(len, shards)) == [len(jobs) // 3] * 3 and set().union(*shards) == set(jobs)
    assert sum(map(len, shards)) == len(set().union(*shards))
    main(run_command(tmp_path/'results', synthetic_data['npz'], 'ablation-ghost-ratio', '--profile', 'smoke',
                     '--shard', '2/2', '--dry-run')[1:])
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:-2]]
    assert listed == [f'smoke/{model}/seed{seed}' for seed in (0, 1, 2) for model in GHOST_RATIO][1::2]
    assert not (tmp_path/'results').exists()


def test_run_notebooks_are_given_paths_relative_to_the_repository(tmp_path):
    "The kernel works in the repository root: folders in it or beside it are passed relative to it, others as they are."
    root = repo_root()
    job = make_job('resnet_20', 0, 'smoke', {})
    given = notebook_parameters(job, BatchOptions(out=str(root/'results'), data_dir=str(root.parent/'shared'/'data'/'cifar100')))
    assert (given['out'], given['data_dir']) == ('results', '../shared/data/cifar100')
    assert notebook_parameters(job, BatchOptions(out=str(tmp_path)))['out'] == str(tmp_path)


def test_gpu_assignment_without_gpus(monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '0,1,2,3,4')
    assert batch_slots(gpus_per_run=2) == ['0,1', '2,3']
    assert batch_slots(gpus_per_run=1, parallelism=2) == ['0', '1']
    assert batch_slots(parallelism=2) == ['0,1,2,3,4'] * 2
    with pytest.raises(ValueError, match='5 GPU'): gpu_groups(['0', '1', '2', '3', '4'], 6)

    class Handle:
        "A job that finishes after its second poll."
        def __init__(self, job, slot): self.slot, self.polls = slot, 0
        def done(self):
            self.polls += 1
            return self.polls > 2
        def cancel(self): pass

    running, seen = set(), []
    def submit(job, slot):
        assert not running & set(slot.split(',')), (running, slot)
        running.update(slot.split(','))
        seen.append(slot)
        return Handle(job, slot)
    def finish(job, handle): running.difference_update(handle.slot.split(','))
    run_side_by_side(range(7), batch_slots(gpus_per_run=2), submit, finish, poll_s=0)
    assert len(seen) == 7 and set(seen) == {'0,1', '2,3'}


class InterruptAtEpoch(Callback):
    "Ctrl-C in the middle of epoch `epoch`."
    def __init__(self, epoch): self.at = epoch
    def before_batch(self):
        if self.training and self.epoch == self.at and self.iter == 2: raise KeyboardInterrupt


def next_steps(stdout: str, out) -> dict:
    "The dry run's 'next' column by run folder (relative to `out`)."
    rows = [line for line in stdout.splitlines() if line.startswith('smoke/')]
    return {line.split()[0]: line.rsplit('  ', 1)[-1].strip() for line in rows}


def write_lock(folder, pid):
    folder.mkdir(parents=True, exist_ok=True)
    started = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[19]
    (folder/'run.lock').write_text(json.dumps(dict(host=socket.gethostname(), pid=pid, pid_start=started, since='now')))


def test_the_dry_run_and_the_run_agree_for_every_folder_state(synthetic_data, tmp_path, capsys):
    data, out = synthetic_data['npz'], tmp_path/'results'
    folder = lambda seed: make_job('resnet_20', seed, 'smoke').run_dir(out)
    train = lambda seed, **more: train_model('resnet_20', profile='smoke', seed=seed, data_dir=data, out=out, **more)
    RunFolder(folder(1)).create_job_file(job_description(make_job('resnet_20', 1, 'smoke')))  # pending
    done = train(2)                                                                             # completed
    train(3)                                                                                    # completed, stale:
    stale = json.loads((folder(3)/'record.json').read_text())                                   # as after a profile
    (folder(3)/'record.json').write_text(json.dumps(dict(stale, config=dict(stale['config'], lr=0.05))))  # changed
    with pytest.raises(KeyboardInterrupt): train(4, cbs=[InterruptAtEpoch(1)])                  # a checkpoint of epoch 1
    with pytest.raises(KeyboardInterrupt): train(5, cbs=[InterruptAtEpoch(0)])                  # killed before its first
    killed = json.loads((folder(5)/'record.json').read_text())                                  # checkpoint
    (folder(5)/'record.json').write_text(json.dumps(dict(killed, status='running')))
    sleeper = subprocess.Popen(['sleep', '600'])
    try:
        write_lock(folder(6), sleeper.pid)                                                      # busy
        command = run_command(out, data, '--plan-file', plan_file(tmp_path, 'models = ["resnet_20"]\nseeds = [0, 1, 2, 3, 4, 5, 6]\n'))
        main([*command[1:], '--dry-run'])
        shown = next_steps(capsys.readouterr().out, out)
        assert shown == {f'smoke/resnet_20/seed{seed}': step for seed, step in enumerate(
            ['start', 'start', 'skip', 'skip (stale)', 'resume from epoch 2', 'restart', 'refuse (busy)'])}, shown
        ran = subprocess.run(command, capture_output=True, text=True, timeout=900)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert ran.returncode == 0, ran.stderr[-3000:]
    for seed in (0, 1):  # start
        assert load_run_record(folder(seed)).status == 'completed' and not load_run_record(folder(seed)).resumed_at_epochs
    assert load_run_record(folder(2)).started_at == done.started_at and not read_job_file(folder(2))['attempts']  # skip
    assert load_run_record(folder(3)).config['lr'] == 0.05 and not read_job_file(folder(3))['attempts']  # skip, stale
    assert 'stale' in ran.stdout and 'lr: 0.05 -> 0.1' in ran.stdout
    resumed = load_run_record(folder(4))
    assert resumed.status == 'completed' and resumed.resumed_at_epochs == [1]                   # resume from epoch 2
    assert load_run_record(folder(5)).status == 'completed' and list(folder(5).glob('record.replaced-*.json'))  # restart
    assert not (folder(6)/'record.json').exists() and any(line.startswith('busy') and 'seed6' in line
                                                           for line in ran.stdout.splitlines())   # refuse (busy)


def test_a_batch_with_a_run_that_cannot_start_is_refused_whole_and_its_dry_run_says_so(synthetic_data, tmp_path, capsys):
    data, out = synthetic_data['npz'], tmp_path/'results'
    folder = lambda seed: make_job('resnet_20', seed, 'smoke').run_dir(out)
    with pytest.raises(KeyboardInterrupt):
        train_model('resnet_20', profile='smoke', seed=0, data_dir=data, out=out, cbs=[InterruptAtEpoch(1)])
    interrupted = json.loads((folder(0)/'record.json').read_text())  # an unfinished run of another config
    (folder(0)/'record.json').write_text(json.dumps(dict(interrupted, config=dict(interrupted['config'], lr=0.05))))
    folder(1).mkdir(parents=True)
    (folder(1)/'record.json').write_text('{"status": ')  # unreadable
    before = {path: path.read_bytes() for path in out.rglob('*') if path.is_file()}
    command = run_command(out, data, '--plan-file', plan_file(tmp_path, 'models = ["resnet_20"]\nseeds = [0, 1, 2]\n'))[1:]
    main([*command, '--dry-run'])
    printed = capsys.readouterr().out
    assert next_steps(printed, out) == {'smoke/resnet_20/seed0': 'refuse (other-config)',
                                        'smoke/resnet_20/seed1': 'refuse (unreadable)', 'smoke/resnet_20/seed2': 'start'}
    assert 'run would refuse the batch and start nothing (2 cannot start)' in printed
    one_line_refusal(capsys, command, '2 of 3 runs cannot start, so none was started', 'another config (lr: 0.05 -> 0.1)',
                     '--force')
    assert {path: path.read_bytes() for path in out.rglob('*') if path.is_file()} == before and not folder(2).exists()


def test_train_and_run_write_one_layout(synthetic_data, tmp_path, capsys):
    data, out = synthetic_data['npz'], tmp_path/'results'
    trained = subprocess.run([BIN/'cifar-study', 'train', 'ghost_resnet_20', '--profile', 'smoke', '--epochs', '1',
                              '--data-dir', data, '--out', out], capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    plan = plan_file(tmp_path, 'models = ["ghost_resnet_20"]\n[overrides.ghost_resnet_20]\nepochs = 1\n')
    main([*run_command(out, data, '--plan-file', plan)[1:], '--dry-run'])
    [(folder, step)] = next_steps(capsys.readouterr().out, out).items()
    assert step == 'skip' and (out/folder/'record.json').exists()  # the run that `train` wrote
    assert folder == f"smoke/ghost_resnet_20-{overrides_hash({'epochs': 1})}/seed0"
    assert load_run_record(out/folder).run_name == f"ghost_resnet_20-{overrides_hash({'epochs': 1})}-smoke-seed0"


def test_gpus_per_run_trains_one_run_with_ddp_processes(synthetic_data, tmp_path):
    "Two 'GPUs' that this CPU machine does not have: the run trains with 2 CPU processes (gloo), started by its notebook."
    out = tmp_path/'results'
    plan = plan_file(tmp_path, 'models = ["resnet_20"]\n')
    runner = subprocess.run(run_command(out, synthetic_data['npz'], '--plan-file', plan, '--gpus-per-run', '2'),
                            capture_output=True, text=True, timeout=900,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES='0,1', OMP_NUM_THREADS='1'))
    assert runner.returncode == 0, runner.stderr[-3000:]
    run_dir = out/'smoke'/'resnet_20'/'seed0'
    record = load_run_record(run_dir)
    assert record.status == 'completed' and record.distributed['world_size'] == 2
    assert record.distributed['train_samples_per_process'] == [96, 96]  # 200 images: 6 batches of 32, 3 per process
    assert read_job_file(run_dir)['attempts'][0]['gpus'] == '0,1'
    log = (run_dir/'run.log').read_text()
    assert log.count('resnet_20-smoke-seed0 epoch 2/2') == 1 and 'gpus = 2' in (run_dir/'run.ipynb').read_text()


def test_a_local_executor_runs_each_run_in_its_own_process_and_stopping_it_stops_them(synthetic_data, tmp_path, capsys):
    """SIGTERM to a runner stops the run it started in a worker process; the same command then resumes it (its dry run
    says so: the dry run and the run agree, as tested above, and a killed runner's restart is run to its end above)."""
    plan = plan_file(tmp_path, 'models = ["resnet_20"]\n[overrides.resnet_20]\nepochs = 1000\ntrain_limit = 32\ntest_limit = 32\n')
    out = tmp_path/'results'
    command = run_command(out, synthetic_data['npz'], '--plan-file', plan, '--executor', 'local')
    runner = start(command)
    run_dir = lambda: next((out/'smoke').glob('resnet_20-*/seed0'), None)
    wait_until(lambda: run_dir() and training_with_checkpoint(run_dir()), what='the run to train')
    kernel = live_lock_holder(run_dir())
    runner.send_signal(signal.SIGTERM)
    runner.communicate(timeout=180)
    assert runner.returncode != 0
    wait_until(lambda: not holder_alive(dict(host=socket.gethostname(), pid=kernel)), timeout_s=30, what='the kernel to stop')
    worker = read_job_file(run_dir())['attempts'][-1]
    assert worker['pid'] != runner.pid  # the run ran in a process of its own
    assert worker['outcome'] == 'interrupted' and not holder_alive(dict(host=socket.gethostname(), pid=worker['pid']))
    stopped = load_run_record(run_dir())
    assert stopped.status in ('running', 'interrupted') and 1 <= len(stopped.epochs) < 1000
    main([*command[1:], '--dry-run'])
    assert next_steps(capsys.readouterr().out, out)[str(run_dir().relative_to(out))].startswith('resume from epoch ')


def test_the_dry_run_says_which_parts_of_a_budgeted_run_are_settled_when_it_starts(synthetic_data, tmp_path, capsys):
    main([*run_command(tmp_path/'results', synthetic_data['npz'], 'demo')[1:], '--dry-run'])
    printed = capsys.readouterr().out
    assert '3 of the runs that would start train to a time budget: their steps and epochs are settled' in printed
    assert 'dry run: 3 of 3 runs would start or resume; 3 start; nothing was started' in printed
    assert not (tmp_path/'results').exists()
