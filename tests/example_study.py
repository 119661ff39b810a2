"""A small study written directly as `cifar-study run` and `train_model` would lay it out, without training: records for
the analysis and the report to read (the runner and the training engine are tested on their own, with real runs)."""
import json
from functools import cache
from pathlib import Path

import nbformat

from cifar_study.data import SYNTHETIC_NAME
from cifar_study.models import model_info
from cifar_study.plans import make_job
from cifar_study.recipes import config_hash, resolve_config
from cifar_study.records import SCHEMA_VERSION, migrate_record, repo_root, validate_run_record

SOURCE = repo_root()/'runs'/'resnet_20-cpu-budget-seed0'/'record.json'  # a real record: environment, augmentation, memory

# Top-1 images correct per epoch (the last epoch is the final evaluation: smoke runs evaluate the whole test split)
SMOKE_CORRECT = {
    ('resnet_20', 0): (7, 10), ('resnet_20', 1): (13, 12), ('resnet_20', 2): (9, 11),  # final 10, 12, 11: mean 11, std 1
    ('ghost_resnet_20', 0): (4, 6), ('ghost_resnet_20', 1): (9, 8),
    ('ecanet20_k5', 0): (5, 7, 9),  # three epochs: enough for a training curve
}
FULL_CORRECT = {('resnet_20', 0): (2,)}
FULL_OVERRIDES = dict(epochs=1, batch_size=32, train_limit=64, test_limit=64)
FAILED = ('improved_resnet20_convnext', 0)
FAILURE = ('RuntimeError: failed on purpose by the test fixture\nTraceback (most recent call last):\n'
           '  File "training.py", line 1, in before_batch\nRuntimeError: failed on purpose by the test fixture\n')
PENDING = ('ghost_resnet_20_r4', 0)
# evaluated beyond top-1: every resnet_20 seed (seed 2 without the corrupted set), one of ghost_resnet_20's two seeds;
# ecanet20_k5 is not evaluated
EVALUATED = {('resnet_20', 0): True, ('resnet_20', 1): True, ('resnet_20', 2): False, ('ghost_resnet_20', 0): True}
CORRUPTION_NAMES = ('gaussian_noise', 'shot_noise', 'impulse_noise', 'defocus_blur', 'glass_blur', 'motion_blur', 'zoom_blur',
                    'snow', 'frost', 'fog', 'brightness', 'contrast', 'elastic_transform', 'pixelate', 'jpeg_compression')
BY_RUNNER = ('resnet_20', 0)  # the run `cifar-study run` executed: a job file and an executed run notebook
SMOKE_TEST_IMAGES = resolve_config('resnet_20', 'smoke').test_limit


@cache
def _model_costs(model: str) -> tuple[int, int]:
    info = model_info(model, flops=True)
    return info['params'], info['flops']


def _timestamp(index: int, minute: int = 0) -> str: return f"2026-01-{1 + index:02d}T10:{minute:02d}:00+00:00"


def example_evaluation(top1: float, index: int, corruptions: bool) -> dict:
    "An `evaluation` as `evaluate_model` writes it, its numbers made from `top1` and `index` (no model is run)."
    shift = 0.01 * index
    bins = dict(count=[0] * 12 + [40, 50, 38], confidence=[None] * 12 + [0.82, 0.88, 0.95],
                accuracy=[None] * 12 + [round(0.6 - shift, 6), round(0.7 - shift, 6), round(0.8 - shift, 6)])
    per_superclass = [round((s % 7) / 10 + shift, 6) for s in range(20)]
    result = dict(version=1, test_images=SMOKE_TEST_IMAGES, top1=top1, nll=round(4.1 + shift, 6), ece=round(0.12 + shift, 6),
                  calibration=bins, per_class=[round((k % 3) / 4, 6) for k in range(100)], per_superclass=per_superclass,
                  superclass_top1=round(top1 + 0.05, 6), superclass_accuracy=per_superclass,
                  confusions=[[3, 7, 4], [10, 2, 3]], classes=[f'class_{k:02d}' for k in range(100)],
                  superclasses=[f'superclass_{s:02d}' for s in range(20)], fine_to_coarse=[k // 5 for k in range(100)],
                  test_seconds=0.5, corruptions=None, seconds=0.5, evaluated_at=_timestamp(index, minute=2))
    if corruptions:
        accuracy = {name: [round(0.09 - 0.01 * severity - 0.002 * i + shift, 6) for severity in range(5)]
                    for i, name in enumerate(CORRUPTION_NAMES)}
        mean = float(sum(sum(row) for row in accuracy.values()) / 75)
        result['corruptions'] = dict(set=dict(name='CIFAR-100-C-style (generated here)', images=100, seed=0, sha256='0' * 64),
                                     clean_top1=0.1 + shift, accuracy=accuracy, mean=mean, relative=mean / (0.1 + shift),
                                     seconds=1.0)
    return result


def write_record(out: Path, model: str, seed: int, profile: str = 'smoke', correct=(), error: str | None = None,
                 index: int = 0, **overrides) -> Path:
    "Write a current-schema record whose epochs got `correct` top-1 images each (failed, without epochs, given an `error`)."
    run_dir = make_job(model, seed, profile, overrides).run_dir(out)  # where `cifar-study train` and `run` put it
    config = resolve_config(model, profile, seed=seed, data_dir=str(out.parent/'synthetic'/'npz'), out=str(out), **overrides)
    train_images, test_images = config.train_limit, config.test_limit
    steps = -(-train_images // config.batch_size)
    epochs = []
    for epoch, top1 in enumerate(correct):
        train_seconds, eval_seconds = round(0.9 + 0.3 * index + 0.11 * seed + 0.05 * epoch, 2), round(0.2 + 0.01 * seed, 2)
        epochs.append(dict(epoch=epoch, steps=steps, train_loss=round(4.7 - 0.15 * epoch - 0.01 * seed, 4),
                           test_loss=round(4.65 - 0.02 * top1, 4), top1=top1 / test_images,
                           top5=(top1 + 14 + 3 * epoch) / test_images, lr=config.lr / (1 + epoch),
                           train_seconds=train_seconds, eval_seconds=eval_seconds,
                           seconds=round(train_seconds + eval_seconds, 2)))
    last, best = (epochs[-1], max(epochs, key=lambda row: row['top1'])) if epochs else (None, None)
    train_seconds = round(sum(row['train_seconds'] for row in epochs), 2)
    params, flops = _model_costs(model)
    raw = dict(migrate_record(json.loads(SOURCE.read_text())),
               run_name=config.run_name, model=model, status='failed' if error else 'completed',
               config=config.to_dict(), config_hash=config_hash(config), command=None,
               data=dict(name=SYNTHETIC_NAME, format='npz-arrays', root=config.data_dir, checksums={},
                         train_images=train_images, test_images=test_images, epoch_test_images=test_images,
                         epoch_test_rule=None),
               params=params, flops_per_image=flops,
               device_settings={name: dict(requested=False, used=False) for name in ('channels_last', 'compile')},
               epochs=epochs,
               best=best and dict(top1=best['top1'], top5=best['top5'], epoch=best['epoch']),
               final=last and dict(top1=last['top1'], top5=last['top5'], loss=last['test_loss'], epoch=last['epoch'],
                                   test_images=test_images, seconds=last['eval_seconds']),
               setup_seconds=1.5, train_seconds=train_seconds,
               eval_seconds=round(sum(row['eval_seconds'] for row in epochs), 2),
               wall_seconds=round(1.5 + sum(row['seconds'] for row in epochs), 2),
               images_per_second=round(train_images * len(epochs) / train_seconds, 1) if epochs else None,
               budget=None, distributed=None, resumed_at_epochs=[], source_diff=None, error=error,
               evaluation=example_evaluation(last['top1'], index, EVALUATED[(model, seed)])
               if profile == 'smoke' and (model, seed) in EVALUATED else None,
               started_at=_timestamp(index), finished_at=_timestamp(index, minute=1), schema_version=SCHEMA_VERSION)
    validate_run_record(raw, run_dir/'record.json').save(run_dir/'record.json')
    return run_dir


def write_job_file(run_dir: Path, model: str, seed: int, profile: str, attempts: list):
    "The runner's job file (its format: cifar_study.runner.job_description plus the attempts)."
    (run_dir/'job.json').write_text(json.dumps(dict(model=model, seed=seed, profile=profile, overrides={},
                                                    attempts=attempts), indent=1))


def write_run_notebook(run_dir: Path, top1: float):
    "A small executed run notebook, as papermill leaves one beside the record."
    output = nbformat.v4.new_output('stream', name='stdout', text=f"final top-1 {top1:.4f}\n")
    cell = nbformat.v4.new_code_cell("record = train_model(model, profile=profile, seed=seed)", execution_count=1,
                                     outputs=[output])
    kernel = dict(name='cifar-study', display_name='cifar-study', language='python')
    notebook = nbformat.v4.new_notebook(cells=[cell], metadata=dict(kernelspec=kernel))
    nbformat.validate(notebook)
    nbformat.write(notebook, run_dir/'run.ipynb')


def write_example_study(out) -> Path:
    """Under `out`: six completed smoke runs of three models (resnet_20 seed 0 by the runner, with its job file and
    executed notebook), one failed run, one pending job, and one short run of resnet_20 under `full`."""
    out = Path(out)
    models = sorted({model for model, _ in SMOKE_CORRECT})
    for (model, seed), correct in SMOKE_CORRECT.items():
        write_record(out, model, seed, correct=correct, index=models.index(model) + 3 * seed)
    write_record(out, *FAILED, error=FAILURE, index=9)
    for (model, seed), correct in FULL_CORRECT.items():
        write_record(out, model, seed, profile='full', correct=correct, index=10, **FULL_OVERRIDES)
    run_dir = make_job(*BY_RUNNER, 'smoke').run_dir(out)
    attempt = dict(host='vm', pid=4242, gpus=None, started_at=_timestamp(0), outcome='completed',
                   finished_at=_timestamp(0, minute=1), error=None)
    write_job_file(run_dir, *BY_RUNNER, 'smoke', [attempt])
    write_run_notebook(run_dir, SMOKE_CORRECT[BY_RUNNER][-1] / SMOKE_TEST_IMAGES)
    pending = make_job(*PENDING, 'smoke').run_dir(out)
    pending.mkdir(parents=True)
    write_job_file(pending, *PENDING, 'smoke', [])
    return out
