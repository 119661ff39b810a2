import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_exported_modules_match_notebooks(tmp_path):
    "Exporting the notebooks afresh reproduces the committed cifar_study/ package exactly."
    shutil.copytree(REPO/'nbs', tmp_path/'nbs')
    shutil.copy(REPO/'pyproject.toml', tmp_path)
    shutil.copytree(REPO/'cifar_study', tmp_path/'cifar_study', ignore=shutil.ignore_patterns('*.py', '__pycache__'))
    subprocess.run([Path(sys.executable).parent/'nbdev-export'], cwd=tmp_path, check=True)
    exported = {p.relative_to(tmp_path): p.read_text() for p in (tmp_path/'cifar_study').rglob('*.py')}
    committed = {p.relative_to(REPO): p.read_text() for p in (REPO/'cifar_study').rglob('*.py')}
    assert sorted(exported) == sorted(committed)
    stale = [str(path) for path in committed if committed[path] != exported[path]]
    assert not stale, f"run nbdev-export: these modules differ from their notebooks: {stale}"
