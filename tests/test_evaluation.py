"""Evaluation beyond top-1 on a real (smoke) run: what a new record holds, `cifar-study evaluate` on an old record,
its refusals, and the explore notebook executed on the run."""
import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest

from cifar_study.corruptions import CORRUPTED_SET_NAME, CORRUPTIONS
from cifar_study.records import load_run_record
from cifar_study.training import train_model
from test_training import assert_one_line_refusal, cli, evaluate_checkpoint


@pytest.fixture(scope='module')
def evaluated_run(tmp_path_factory, synthetic_data):
    "One completed smoke run of ResNet-20 (one epoch) on the synthetic data: its folder."
    out = tmp_path_factory.mktemp('evaluated')
    train_model('resnet_20', profile='smoke', data_dir=synthetic_data['npz'], out=out, epochs=1)
    [folder] = Path(out).glob('smoke/resnet_20*/seed0')
    return folder


def copy_run(folder: Path, to: Path, checkpoint: bool = True) -> Path:
    shutil.copytree(folder, to, ignore=shutil.ignore_patterns(*(() if checkpoint else ('checkpoint.pt',)), 'run.lock', '*.guard'))
    return to


def test_a_new_run_records_its_evaluation(evaluated_run, synthetic_data):
    record = load_run_record(evaluated_run)
    evaluation, test_images = record.evaluation, record.final['test_images']
    assert record.schema_version == 4 and evaluation['test_images'] == test_images == 100
    assert evaluation['top1'] == pytest.approx(evaluate_checkpoint(evaluated_run, synthetic_data['npz'])[0], abs=1e-6)
    assert len(evaluation['per_class']) == 100 and len(evaluation['classes']) == 100
    assert len(evaluation['per_superclass']) == len(evaluation['superclass_accuracy']) == len(evaluation['superclasses']) == 20
    assert evaluation['fine_to_coarse'] == [k // 5 for k in range(100)]  # the synthetic data's superclasses
    bins = evaluation['calibration']
    assert len(bins['count']) == len(bins['confidence']) == len(bins['accuracy']) == 15 and sum(bins['count']) == test_images
    assert 0 <= evaluation['ece'] <= 1 and evaluation['nll'] > 0
    assert len(evaluation['confusions']) <= 20 and all(true != predicted for true, predicted, _ in evaluation['confusions'])
    corruptions = evaluation['corruptions']
    assert corruptions['set']['name'] == CORRUPTED_SET_NAME and corruptions['set']['images'] == 20
    assert list(corruptions['accuracy']) == list(CORRUPTIONS) and all(len(row) == 5 for row in corruptions['accuracy'].values())
    assert corruptions['mean'] == pytest.approx(np.mean(list(corruptions['accuracy'].values())), abs=1e-6)
    assert evaluation['seconds'] > 0 and len((evaluated_run/'record.json').read_bytes()) < 60_000  # kilobytes, not megabytes


def test_evaluate_fills_an_old_record_leaving_its_training_fields(evaluated_run, tmp_path):
    folder = copy_run(evaluated_run, tmp_path/'run')
    raw = json.loads((folder/'record.json').read_text())
    evaluated = raw.pop('evaluation')
    (folder/'record.json').write_text(json.dumps(dict(raw, schema_version=3), indent=1))  # as the previous version wrote it
    result = cli('evaluate', folder)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'top-1' in result.stdout and 'ECE' in result.stdout
    after = json.loads((folder/'record.json').read_text())
    added = after.pop('evaluation')
    assert after == dict(raw, schema_version=4)  # every training field, the config and its hash as they were
    timings = ('seconds', 'test_seconds', 'evaluated_at', 'command')
    strip = lambda evaluation: {k: v for k, v in evaluation.items() if k not in timings + ('corruptions',)}
    assert strip(added) == strip(evaluated)
    same = lambda c: {k: v for k, v in c.items() if k != 'seconds'}
    assert same(added['corruptions']) == same(evaluated['corruptions'])  # the same set, the same model: the same numbers
    assert added['command'] == 'cifar-study evaluate'
    again = cli('evaluate', folder)
    assert again.returncode == 0 and 'evaluated already' in again.stdout + again.stderr


def test_evaluate_refuses_a_run_without_a_readable_checkpoint(evaluated_run, tmp_path):
    folder = copy_run(evaluated_run, tmp_path/'no-checkpoint', checkpoint=False)
    before = (folder/'record.json').read_bytes()
    assert_one_line_refusal(cli('evaluate', folder, '--force'), 'no checkpoint.pt', 'train the run again')
    corrupt = copy_run(evaluated_run, tmp_path/'corrupt')
    (corrupt/'checkpoint.pt').write_bytes(b'not a checkpoint')
    assert_one_line_refusal(cli('evaluate', corrupt, '--force'), 'checkpoint.pt cannot be read', 'train the run again')
    assert (folder/'record.json').read_bytes() == before and (corrupt/'record.json').read_bytes() == before


def test_explore_notebook_shows_the_run(evaluated_run, tmp_path):
    folder = copy_run(evaluated_run, tmp_path/'explored')
    result = cli('explore', folder)
    assert result.returncode == 0, result.stderr[-3000:]
    notebook = nbformat.read(folder/'explore.ipynb', as_version=4)
    outputs = [output for cell in notebook.cells if cell.cell_type == 'code' for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == 'error']
    figures = [output for output in outputs if 'image/png' in output.get('data', {})]
    assert len(figures) >= 7  # curves, superclasses, reliability, confusions, mistakes, Grad-CAM, corruptions
    text = (folder/'explore.ipynb').read_text()
    assert 'Grad-CAM hooks `stages' in text and str(tmp_path) not in text
    assert_one_line_refusal(cli('explore', copy_run(evaluated_run, tmp_path/'bare', checkpoint=False)), 'no checkpoint.pt')
