import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import nbformat
import numpy as np
import pytest
from bs4 import BeautifulSoup

from cifar_study.analysis import original_claims
from cifar_study.cli import main
from cifar_study.models import list_models
from cifar_study.records import find_run_records, repo_root
from cifar_study.report import render_report, report_title

BIN = Path(sys.executable).parent
TEXT_COLUMNS = {'model', 'group', 'original study design', 'status', 'device', 'run notebooks'}  # Table 1's other columns hold numbers


def without_quarto(path: str) -> str:
    "PATH without the folders that hold a `quarto`."
    return os.pathsep.join(folder for folder in path.split(os.pathsep) if not (Path(folder)/'quarto').exists())


@pytest.fixture(scope='module')
def docs(smoke_results, tmp_path_factory):
    "`cifar-study report` without quarto on PATH (nbconvert), into docs/ of a Quarto project like this repository."
    project = tmp_path_factory.mktemp('project')
    shutil.copy(repo_root()/'_quarto.yml', project)
    done = subprocess.run([str(BIN/'cifar-study'), 'report', '--results', str(smoke_results), '--profile', 'smoke',
                           '--out', str(project/'docs')], capture_output=True, text=True,
                          env=dict(os.environ, PATH=without_quarto(os.environ['PATH'])))
    assert done.returncode == 0, done.stderr[-3000:]
    pdf_written = (project/'docs'/'index.pdf').exists()
    shutil.copy(project/'docs'/'index.html', project/'docs'/'nbconvert.html')
    return project/'docs', done.stdout, pdf_written


@pytest.fixture(scope='module')
def quarto_render(docs):
    "The same executed notebook rendered by Quarto, as a project render (the project's _quarto.yml is above docs/)."
    if not shutil.which('quarto'): pytest.skip('no quarto on PATH (.ci/run installs it)')
    return render_report(docs[0]/'index.ipynb')


@pytest.fixture(scope='module', params=['nbconvert', 'quarto'])
def html(request, docs):
    "The rendered report of each renderer: (its folder, its HTML text)."
    if request.param == 'quarto':
        request.getfixturevalue('quarto_render')
        return docs[0], (docs[0]/'index.html').read_text()
    return docs[0], (docs[0]/'nbconvert.html').read_text()


def test_report_command_says_which_renderer_and_where(docs):
    folder, stdout, pdf_written = docs
    assert 'rendered with nbconvert' in stdout and 'install Quarto' in stdout
    assert stdout.strip().splitlines()[-1] == f"report: {folder/'index.html'}"
    assert (folder/'index.ipynb').exists() and not pdf_written


def test_the_title_names_both_protocols_when_both_have_runs(tmp_path, docs):
    (tmp_path/'cpu-budget').mkdir()
    assert report_title(tmp_path, 'cpu-budget').endswith(': profile cpu-budget')
    (tmp_path/'cpu-epochs').mkdir()
    assert report_title(tmp_path, 'cpu-budget').endswith(': profiles cpu-epochs and cpu-budget')
    assert report_title(tmp_path, 'cpu-epochs').endswith(': profiles cpu-budget and cpu-epochs')
    assert nbformat.read(docs[0]/'index.ipynb', as_version=4).metadata['title'].endswith(': profile smoke')


def test_report_refuses_a_missing_results_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as ended: main(['report', '--results', str(tmp_path/'nothing'), '--out', str(tmp_path/'docs')])
    lines = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 2 and len(lines) == 1 and 'no such folder' in lines[0], lines


def test_a_link_base_needs_the_runs_inside_the_repository(tmp_path, capsys):
    (tmp_path/'results').mkdir()
    with pytest.raises(SystemExit) as ended:
        main(['report', '--results', str(tmp_path/'results'), '--out', str(tmp_path/'docs'), '--link-base', 'https://example.org/repo'])
    lines = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 2 and len(lines) == 1 and 'outside the repository' in lines[0], lines
    assert not (tmp_path/'docs').exists()


def plain(text: str) -> str: return text.replace('\u2019', "'")  # Quarto's Pandoc typesets apostrophes


def section_tables(html: str, heading: str) -> list:
    "The tables after the heading that starts with `heading`, up to the next heading of its level, as lists of row dicts."
    soup = BeautifulSoup(html, 'html.parser')
    head = next(h for h in soup.find_all(re.compile('^h[1-3]$')) if h.get_text(' ', strip=True).startswith(heading))
    tables = []
    for element in head.find_all_next(re.compile(f'^(table|h[1-{head.name[1]}])$')):
        if element.name != 'table': break
        headers = [plain(th.get_text(' ', strip=True)) for th in element.find_all('th')]
        tables.append([dict(zip(headers, [plain(td.get_text(' ', strip=True)) for td in row.find_all('td')]))
                       for row in element.find_all('tr') if row.find_all('td')])
    return tables


def test_html_is_self_contained_with_figures(html):
    _, text = html
    soup = BeautifulSoup(text, 'html.parser')
    for tag in soup.find_all(['script', 'link', 'img', 'iframe']):
        url = tag.get('src') or tag.get('href') or ''
        assert not re.match(r'(https?:)?//', url), f"fetched from a network: {str(tag)[:200]}"
    figures = [img for img in soup.find_all('img') if (img.get('src') or '').startswith('data:image/png;base64,')]
    assert len(figures) >= 4, len(figures)


def test_html_holds_table1_with_every_model_the_ablations_and_the_audit(html):
    _, text = html
    [table] = section_tables(text, 'Table 1')
    rows = {row['model']: row for row in table}
    assert sorted(rows) == list_models()
    assert rows['improved_resnet20_convnext']['status'] == 'failed' and rows['convnext_tiny']['status'] == 'pending'
    assert 'failed on purpose by the test fixture' in text
    [groups] = section_tables(text, 'Table 2')
    assert sum(int(row['models']) for row in groups) == len(list_models())
    ablations = section_tables(text, 'The ablations')
    assert len(ablations) == 3
    ghost = {row['variant']: row for row in section_tables(text, 'Ghost module ratio')[0]}
    assert re.fullmatch(r'\[-?\d+\.\d\d, -?\d+\.\d\d\]', ghost['ghost_resnet_20']["our 95% interval (Welch's t)"])
    assert ghost['ghost_resnet_20']['their claimed top-1 % (report)'] == '68.50'
    assert {row['our verdict'] for row in section_tables(text, 'ECA kernel size')[0]} >= {'baseline', 'no interval with n = 1', 'pending'}
    audit, contradicted = section_tables(text, 'The claims audit')
    assert {row['their claim (report)'] for row in contradicted} >= {'ghost_resnet_20: top-1 35.16 % (Table 1)'}
    assert [row['their Table 1 row'] for row in audit] == [row['row'] for row in original_claims()['table1']]
    [robustness] = section_tables(text, 'Robustness to corruptions')
    assert {row['model']: row['clean top-1 %'] for row in robustness}['ecanet20_k5'] == 'not evaluated'
    assert 'CIFAR-100-C-style (generated here)' in text and 'Reliability diagrams' in text


def test_every_number_in_table1_is_traceable_to_a_record(html, smoke_results):
    "Each number in Table 1 is a record's value, or the mean, standard deviation, count or ratio of records' values."
    _, text = html
    [table] = section_tables(text, 'Table 1')
    by_model = {}
    for record in find_run_records(smoke_results/'smoke'):
        if record.status == 'completed': by_model.setdefault(record.model, []).append(record)
    claimed = {value for row in original_claims()['table1'] for value in row.values() if isinstance(value, float)}
    checked = 0
    for row in table:
        records = by_model.get(row['model'], [])
        measured = [[100 * r.final['top1'] for r in records], [100 * r.best['top1'] for r in records],
                    [100 * r.final['top5'] for r in records], [r.train_seconds for r in records],
                    [r.images_per_second for r in records],
                    [len(r.epochs) for r in records],  # epochs trained: smoke runs have no time budget, so whole epochs
                    [100 * r.evaluation['ece'] for r in records if r.evaluation],
                    [100 * r.evaluation['corruptions']['mean'] for r in records if r.evaluation and r.evaluation['corruptions']]]
        sources = {len(records), len(measured[-2]), len(measured[-1]), *claimed}
        for values in measured:
            sources |= set(values) | ({np.mean(values)} if values else set()) | ({np.std(values, ddof=1)} if len(values) > 1 else set())
        if records:
            params = records[0].params / 1e6
            sources |= {params, records[0].flops_per_image / 1e6, np.mean(measured[0]) / params}
        for column, cell in row.items():
            if column in TEXT_COLUMNS: continue
            for number in re.findall(r'\d[\d,]*(?:\.\d+)?', cell):
                decimals = len(number.partition('.')[2])
                value = float(number.replace(',', ''))
                assert any(abs(value - source) <= 0.5 * 10 ** -decimals + 1e-9 for source in sources), (row['model'], column, number)
                checked += 1
    assert checked >= 30, checked


def test_rows_link_their_executed_run_notebooks(html):
    folder, text = html
    [table] = section_tables(text, 'Table 1')
    soup = BeautifulSoup(text, 'html.parser')
    links = [a['href'] for a in soup.find_all('a', href=True) if a['href'].endswith('run.ipynb')]
    assert links and all((folder/link).resolve().is_file() for link in links), links
    assert any(link.endswith('smoke/resnet_20/seed0/run.ipynb') for link in links)
    assert {row['model']: row['run notebooks'] for row in table}['resnet_20'] == 'seed0'


def pdf_pages(data: bytes) -> int:
    "Page objects in a PDF, counted in its plain text and in its compressed streams."
    chunks = [data]
    for stream in re.findall(rb'stream\r?\n(.*?)endstream', data, re.S):
        try: chunks.append(zlib.decompressobj().decompress(stream))
        except zlib.error: pass
    return sum(len(re.findall(rb'/Type\s*/Page(?![a-zA-Z])', chunk)) for chunk in chunks)


def test_quarto_writes_a_pdf_with_pages(quarto_render, docs):
    assert quarto_render.renderer.startswith('quarto') and [path.name for path in quarto_render.files] == ['index.html', 'index.pdf']
    data = (docs[0]/'index.pdf').read_bytes()
    assert data.startswith(b'%PDF') and pdf_pages(data) >= 2
