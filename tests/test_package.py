"""The package installed from a wheel, away from this checkout: it runs a plan and renders a report from any folder."""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from cifar_study.records import repo_root

PACKAGE_FILES = ('pyproject.toml', 'README.md', 'cifar_study')  # what the wheel is built from


def without_quarto(path: str) -> str:
    "PATH without the folders that hold a `quarto` (the report renders with nbconvert: the Quarto path is tested apart)."
    return os.pathsep.join(folder for folder in path.split(os.pathsep) if not (Path(folder)/'quarto').exists())


def run(command, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{command}: {done.stderr[-3000:]}"
    return done


def test_a_wheel_runs_a_plan_and_a_report_from_another_folder(tmp_path, synthetic_data):
    source = tmp_path/'source'  # a copy, so that building leaves nothing in the checkout
    source.mkdir()
    for name in PACKAGE_FILES:
        if (repo_root()/name).is_dir(): shutil.copytree(repo_root()/name, source/name, ignore=shutil.ignore_patterns('__pycache__'))
        else: shutil.copy(repo_root()/name, source/name)
    run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--quiet', '-w', tmp_path/'dist', source])
    [wheel] = (tmp_path/'dist').glob('cifar_study-*.whl')

    venv = tmp_path/'venv'  # a fresh environment: the wheel in it, the heavy dependencies (torch...) read from ours
    run([sys.executable, '-m', 'venv', '--without-pip', venv])
    python = venv/'bin'/'python'
    site = Path(run([python, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])']).stdout.strip())
    (site/'dependencies.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')  # a plain path: its .pth files stay unread
    run([sys.executable, '-m', 'pip', '--python', python, 'install', '--no-deps', '--no-index', '--quiet', wheel])
    run([python, '-m', 'ipykernel', 'install', '--sys-prefix', '--name', 'cifar-study'])
    installed = run([python, '-c', 'import cifar_study; print(cifar_study.__file__)'], cwd=tmp_path).stdout.strip()
    assert Path(installed).is_relative_to(site), installed

    templates = tmp_path/'jupyter'  # nbconvert's templates, which lie beside the dependencies (the kernel: in the venv)
    templates.mkdir()
    (templates/'nbconvert').symlink_to(Path(sys.prefix)/'share'/'jupyter'/'nbconvert')
    elsewhere = tmp_path/'elsewhere'
    elsewhere.mkdir()
    env = dict(os.environ, PATH=without_quarto(f"{venv/'bin'}{os.pathsep}{os.environ['PATH']}"), OMP_NUM_THREADS='1',
               JUPYTER_PATH=str(templates))
    for inherited in ('CIFAR_STUDY_DATA', 'CIFAR_STUDY_ROOT'): env.pop(inherited, None)  # as a user's shell would have it
    study = run([venv/'bin'/'cifar-study', 'run', 'demo', '--profile', 'smoke', '--data-dir', synthetic_data['npz']],
                cwd=elsewhere, env=env)
    assert '3 runs: 3 completed' in study.stdout, study.stdout
    record = json.loads((elsewhere/'results'/'smoke'/'resnet_20'/'seed0'/'record.json').read_text())
    assert record['status'] == 'completed' and record['config']['out'] == 'results'  # stored relative to where it ran
    report = run([venv/'bin'/'cifar-study', 'report', '--profile', 'smoke'], cwd=elsewhere, env=env)
    assert report.stdout.strip().splitlines()[-1] == 'report: docs/index.html'
    html = (elsewhere/'docs'/'index.html').read_text()
    assert 'ghost_resnet_20' in html and 'eca_resnet_20' in html
