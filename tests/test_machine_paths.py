"""No tracked file holds an absolute path of the machine that made it: runs and reports store paths relative to the
repository (`cifar_study.records.portable_path`)."""
import json
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from cifar_study.records import repo_root

REPO = repo_root()
# the usual home, temporary and work folders, and this machine's own; built here so that this file names none of them
FOLDERS = [f"/{name}/" for name in ('work', 'tmp', 'home', 'root', 'Users', 'var/folders')]
THIS_MACHINE = [str(path) for path in (REPO, Path(tempfile.gettempdir()), Path.home()) if len(path.parts) > 1]
MACHINE_PATH = re.compile(r'(?<![\w.~-])(?:' + '|'.join([*map(re.escape, FOLDERS),
                                                           *(re.escape(path) + r'(?![\w.-])' for path in THIS_MACHINE)])
                          + r')[^\s"\'<>()\]]*')  # the whole path, for the message
ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')  # tracebacks colour file names: `ESC[32m/path/file.py`
# PDFs are compressed streams: a path in one cannot be read as text (docs/index.pdf is rendered from docs/index.ipynb,
# which is scanned); images and arrays hold no text
BINARY = {'.pdf', '.png', '.jpg', '.jpeg', '.gif', '.npz', '.npy', '.pt', '.pkl', '.gz', '.zip', '.woff', '.woff2'}


def strings(value):
    "Every string in a JSON value (keys too), its escapes decoded."
    if isinstance(value, str): yield value
    elif isinstance(value, dict):
        for key, item in value.items(): yield key; yield from strings(item)
    elif isinstance(value, list):
        for item in value: yield from strings(item)


def machine_paths(text: str) -> list[str]:
    "The absolute home, temporary or work paths in `text`, or in the strings of `text` when it is JSON."
    try: parts = list(strings(json.loads(text)))
    except ValueError: parts = [text]
    return [match.group() for part in parts for match in MACHINE_PATH.finditer(ANSI.sub('', part))]


def under(folder: str, rest: str) -> str: return f"/{folder}/{rest}"  # so that this file holds no such path itself


@pytest.mark.parametrize('text', [
    f"nothing to resume in {under('work', 'main/results/cpu-budget/resnet_20/seed0')}: starting a new run",
    json.dumps({'text': f"a line\n{under('home', 'someone/results/run.ipynb')}"}),  # after an escaped newline
    json.dumps({'text': f"\x1b[32m{under('work', 'main/cifar_study/data.py')}:148\x1b[39m"}),  # in a coloured traceback
    f'out = "{REPO}"', f'"{REPO}/results"', f'{tempfile.gettempdir()}/tmpab12cd/run.ipynb', f'{Path.home()}/data',
    under('Users', 'someone/cifar'), f"file at {under('var/folders', 'x7/T/run.ipynb')}"])
def test_absolute_machine_paths_are_found(text):
    assert machine_paths(text), text


@pytest.mark.parametrize('text', [
    'results/cpu-budget/resnet_20/seed0/run.ipynb', '../shared/data/cifar100', 'data/tmp/cache.npz',
    'https://github.com/OWNER/REPO/blob/main/results/cpu-budget/resnet_20/seed0/run.ipynb', 'cifar_study/templates/report.ipynb'])
def test_relative_paths_and_urls_are_not(text):
    assert machine_paths(text) == [], text


def tracked_files() -> list[Path]:
    listed = subprocess.run(['git', '-C', str(REPO), 'ls-files', '-z'], capture_output=True, text=True)
    if listed.returncode: pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    return [REPO/name for name in listed.stdout.split('\0') if name]


def test_no_tracked_file_holds_an_absolute_path_of_this_machine():
    "Runs, run logs, executed notebooks, the report and the code name paths relative to the repository."
    found = {}
    for path in tracked_files():
        if path.suffix.lower() in BINARY or not path.is_file(): continue
        data = path.read_bytes()
        if b'\0' in data[:8000]: continue  # binary, as git decides it
        if paths := machine_paths(data.decode('utf-8', errors='replace')): found[str(path.relative_to(REPO))] = paths
    summary = [f"{name}: {len(paths)}, e.g. {paths[0]}" for name, paths in found.items()]
    assert not summary, (f"{len(found)} tracked files hold absolute machine paths (store them with portable_path; rewrite "
                       f"old run files relative to the repository):\n" + '\n'.join(summary))
