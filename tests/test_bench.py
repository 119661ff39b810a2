import math

import pytest

from cifar_study.bench import cosine_lr, plain_budget_run


def test_plain_budget_run_stops_on_its_budget_and_reports(synthetic_data):
    run = plain_budget_run('resnet_20', budget_s=2.0, data_dir=synthetic_data['npz'], batch_size=32)
    assert set(run) == {'model', 'budget_s', 'train_seconds', 'eval_seconds', 'steps', 'epochs', 'images_per_second',
                        'top1', 'top5', 'test_images'}
    assert (run['model'], run['budget_s'], run['test_images']) == ('resnet_20', 2.0, 100)
    assert run['train_seconds'] >= 2.0 and run['eval_seconds'] > 0 and run['steps'] >= 1
    assert run['epochs'] == round(run['steps'] * 32 / 200, 3)
    assert math.isclose(run['images_per_second'], run['steps'] * 32 / run['train_seconds'], rel_tol=0.01)
    assert 0 <= run['top1'] <= run['top5'] <= 1


def test_cosine_over_the_budget():
    assert cosine_lr(0.0, 0.1, 1e-6) == 0.1 and cosine_lr(1.0, 0.1, 1e-6) == 1e-6
    assert math.isclose(cosine_lr(0.5, 0.1, 1e-6), (0.1 + 1e-6) / 2)
    assert cosine_lr(0.25, 0.1, 0.0) > cosine_lr(0.5, 0.1, 0.0) > cosine_lr(0.75, 0.1, 0.0)


def test_batch_larger_than_the_train_split_is_refused(synthetic_data):
    with pytest.raises(ValueError, match='batch size 256 is more than the 200 train images'):
        plain_budget_run(budget_s=1.0, data_dir=synthetic_data['npz'], batch_size=256)
