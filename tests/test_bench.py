import json
import math

import pytest
import torch

from cifar_study.bench import cosine_lr, peak_tflops, plain_budget_run
from cifar_study.cli import main
from cifar_study.plans import PLANS


def test_plain_budget_run_stops_on_its_budget_and_reports(synthetic_data):
    run = plain_budget_run('resnet_20', budget_s=2.0, data_dir=synthetic_data['npz'], batch_size=32)
    assert set(run) == {'model', 'budget_s', 'train_seconds', 'eval_seconds', 'steps', 'epochs', 'images_per_second',
                        'top1', 'top5', 'test_images'}
    assert (run['model'], run['budget_s'], run['test_images']) == ('resnet_20', 2.0, 100)
    assert run['train_seconds'] >= 2.0 and run['eval_seconds'] > 0 and run['steps'] >= 1
    assert run['epochs'] == round(run['steps'] * 32 / 200, 3)
    assert run['images_per_second'] == round(run['steps'] * 32 / run['train_seconds'], 1)  # a relative bound fails when slow
    assert 0 <= run['top1'] <= run['top5'] <= 1


def test_cosine_over_the_budget():
    assert cosine_lr(0.0, 0.1, 1e-6) == 0.1 and cosine_lr(1.0, 0.1, 1e-6) == 1e-6
    assert math.isclose(cosine_lr(0.5, 0.1, 1e-6), (0.1 + 1e-6) / 2)
    assert cosine_lr(0.25, 0.1, 0.0) > cosine_lr(0.5, 0.1, 0.0) > cosine_lr(0.75, 0.1, 0.0)


def test_batch_larger_than_the_train_split_is_refused(synthetic_data):
    with pytest.raises(ValueError, match='batch size 256 is more than the 200 train images'):
        plain_budget_run(budget_s=1.0, data_dir=synthetic_data['npz'], batch_size=256)


@pytest.mark.parametrize('name, entry', [('NVIDIA H200', ('H200', 989.4)), ('NVIDIA H100 PCIe', ('H100 PCIe', 756.0)),
                                         ('NVIDIA H100 80GB HBM3', ('H100', 989.4)), ('NVIDIA A10', ('A10', 125.0)),
                                         ('NVIDIA A100-SXM4-80GB', ('A100', 312.0)), ('Tesla V100-SXM2-16GB', ('V100', 125.0)),
                                         ('NVIDIA GeForce GTX 1080', None)])
def test_peak_table_matches_the_most_specific_name(monkeypatch, name, entry):
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: name)
    assert peak_tflops('cuda') == entry
    assert peak_tflops('cpu') is None


def test_data_path_bench_command(tmp_path, capsys):
    main(['bench', '--data-paths', '--models', 'resnet_20', '--batch-size', '8', '--steps', '1', '--warmup', '0',
          '--out', str(tmp_path/'paths.json')])
    printed = capsys.readouterr().out
    result = json.loads((tmp_path/'paths.json').read_text())
    assert result['projected']['runs'] == len(PLANS['all'].jobs()) and result['projected']['runs_measured'] == 3
    assert result['rows'][0]['per_image_ips'] > 0 and result['rows'][0]['batched_ips'] > 0
    assert 'per-image' in printed and 'batched' in printed and 'projected:' in printed


def test_budget_check_command_tabulates_every_model_it_trains(tmp_path, capsys, synthetic_data):
    main(['bench', '--budget-check', '2', '--models', 'resnet_20', 'ghost_resnet_20', '--data-dir',
          str(synthetic_data['npz']), '--out', str(tmp_path/'check.json')])
    printed = capsys.readouterr().out
    rows = json.loads((tmp_path/'check.json').read_text())['rows']
    assert [row['model'] for row in rows] == ['resnet_20', 'ghost_resnet_20']
    for row in rows:  # each row is its run's record: the runs lie beside the table, named like it
        record = json.loads(next((tmp_path/'check').glob(f"cpu-budget/{row['model']}*/seed0/record.json")).read_text())
        assert (row['steps'], row['share_used']) == (record['budget']['steps'], record['budget']['share_used'])
        assert row['setup_seconds'] == record['setup_seconds'] and row['steps'] >= row['probe_steps'] >= 2  # a loaded machine's probe may fill the whole budget
        assert record['config']['corruption_images'] == 0 and record['final']['test_images'] == 100
    table = [line.split()[0] for line in printed.splitlines() if line.endswith('%') or 'of budget' in line]
    assert table == ['model', 'resnet_20', 'ghost_resnet_20']  # a heading, then a row as each run ends


@pytest.mark.parametrize('seconds', ['0', '-5', 'inf', 'nan'])
def test_budget_check_refuses_a_budget_that_is_not_a_positive_time(seconds, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(['bench', '--budget-check', seconds])
    assert exit_.value.code == 2 and 'finite number of seconds above 0' in capsys.readouterr().err
