"""The committed API docs site, docs/api/ (`make docs`): a page per notebook, nothing loaded from a network, no path
of the machine that built it, and no check cell that the build would run."""
import ast
import json
import re

from nbdev.config import nbpath2html

from cifar_study.records import repo_root

SITE = repo_root()/'docs'/'api'
REMOTE = r'''["']?(?:https?:)?//'''  # an http(s) or protocol-relative URL
# What makes a browser fetch: in HTML an element's src or srcset and a <link>'s href (stylesheets, icons, preloads);
# in CSS an @import or url(); in JS a dynamic import, importScripts or fetch of a literal URL.
REMOTE_LOADS = {
    '.html': re.compile(rf'<[^>]+\ssrc(?:set)?={REMOTE}|<link\b[^>]*\shref={REMOTE}', re.I),
    '.css': re.compile(rf'@import\s+(?:url\(\s*)?{REMOTE}|url\(\s*{REMOTE}', re.I),
    '.js': re.compile(rf'\b(?:import|importScripts|fetch)\(\s*{REMOTE}'),
}
IMPORTS = ast.Import, ast.ImportFrom
CHECKOUT_PATH = re.compile(r'''["'](?:/[^/"'<>\s]+)+/cifar_study/''')  # show_doc prints path defaults as evaluated


def site_files(*suffixes):
    return [path for path in SITE.rglob('*') if path.suffix in suffixes]


def test_a_page_for_every_notebook():
    notebooks = {nbpath2html(nb).name: nb.name for nb in (repo_root()/'nbs').glob('*.ipynb')}
    pages = {page.name for page in SITE.glob('*.html')}
    assert 'index.html' in notebooks
    missing, extra = sorted(notebooks[page] for page in set(notebooks) - pages), sorted(pages - set(notebooks))
    assert not missing and not extra, f"docs/api/ lacks pages of {missing}, has pages of no notebook {extra}: make docs"


def test_the_site_loads_nothing_from_a_network():
    files = site_files(*REMOTE_LOADS)
    assert any(path.suffix == '.css' for path in files) and any(path.suffix == '.js' for path in files)
    loads = {str(path.relative_to(SITE)): found.group(0)[:200] for path in files
             if (found := REMOTE_LOADS[path.suffix].search(path.read_text(errors='replace')))}
    assert not loads, f"docs/api/ loads from a network: {loads}"


def test_no_path_of_the_machine_that_built_it():
    leaks = {str(path.relative_to(SITE)): found.group(0) for path in site_files('.html', '.json')
             if (found := CHECKOUT_PATH.search(text := path.read_text()) or re.search(re.escape(str(repo_root())), text))}
    assert not leaks, f"docs/api/ holds absolute paths (`make docs` makes the checkout's relative): {leaks}"


def test_the_docs_build_runs_no_check():
    "nbdev's docs build runs every cell that holds an import (and the exported ones): a check keeps its imports apart."
    mixed = []
    for notebook in sorted((repo_root()/'nbs').glob('*.ipynb')):
        for number, cell in enumerate(json.loads(notebook.read_text())['cells']):
            source = ''.join(cell['source'])
            if cell['cell_type'] != 'code' or re.search(r'^#\|\s*export[is]?\b', source, re.M): continue
            tree = ast.parse('\n'.join(line for line in source.splitlines() if not line.startswith(('%', '!'))))
            imports = any(isinstance(node, IMPORTS) for node in ast.walk(tree))
            if imports and not all(isinstance(statement, IMPORTS) for statement in tree.body):
                mixed.append(f'{notebook.name} cell {number}')
    assert not mixed, f"move these cells' imports into a cell of their own, before them: {mixed}"
