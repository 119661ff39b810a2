import math
import shutil
import re
import tomllib
from dataclasses import replace
from decimal import Decimal
from importlib.resources import files

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import stats

from cifar_study.analysis import (CHANCE, ablation_table, claims_audit, conclusions, contradicted_claims, corruption_frame,
                                  cost_table, figure_markdown, format_table1, holm, load_study, model_table, not_learned,
                                  original_claims, plot_corruption_heatmap, plot_cost_fronts, plot_reliability,
                                  plot_seed_spread, plot_superclass_heatmap, plot_top1_by_model, plot_training_curves,
                                  mean_std_text, protocol_name, rank_agreement, recipe_table, same_network, reliability_models,
                                  reliability_panels, robustness_table, split_constant_columns, study_summary,
                                  superclass_frame, table1, table2, table_markdown, their_logged_top1, verdict)
from cifar_study.models import TECHNIQUE_GROUPS, list_models
from cifar_study.records import budget_outcome, find_run_records, off_budget, repo_root

REFERENCE = repo_root().parent/'shared'/'reference'/'original_study.md'


@pytest.fixture(scope='module')
def study(smoke_results):
    return load_study(smoke_results, 'smoke')


@pytest.fixture(scope='module')
def table(study):
    return table1(study).set_index('model')


def completed(results, profile='smoke') -> dict:
    "The completed records under `results/profile`, by model, read with the records module alone."
    by_model = {}
    for record in find_run_records(results/profile):
        if record.status == 'completed': by_model.setdefault(record.model, []).append(record)
    return by_model


def test_table1_lists_every_registered_model_with_its_status(table):
    assert sorted(table.index) == list_models()
    assert (table.loc['resnet_20', 'status'], table.loc['resnet_20', 'n']) == ('completed', 3)
    assert (table.loc['improved_resnet20_convnext', 'status'], table.loc['improved_resnet20_convnext', 'n']) == ('failed', 0)
    failure = 'RuntimeError: failed on purpose by the test fixture'  # its first line: the traceback stays in the record
    assert table.loc['improved_resnet20_convnext', 'errors'] == [(0, failure)]
    assert table.loc['ghost_resnet_20_r4', 'status'] == 'pending'  # a job file, no record yet
    assert table.loc['convnext_tiny', 'status'] == 'pending'       # never planned
    for model in ('improved_resnet20_convnext', 'ghost_resnet_20_r4', 'convnext_tiny'):  # never filled in
        assert all(math.isnan(table.loc[model, column]) for column in ('top1', 'top5', 'params_m', 'mflops', 'images_per_second'))


def test_table1_is_the_mean_and_std_of_the_records(table, smoke_results):
    for model, records in completed(smoke_results).items():
        top1 = [100 * record.final['top1'] for record in records]
        row = table.loc[model]
        assert row.n == len(records) and row.top1 == pytest.approx(np.mean(top1))
        assert row.top1_std == pytest.approx(np.std(top1, ddof=1)) if len(top1) > 1 else math.isnan(row.top1_std)
        assert row.best_top1 == pytest.approx(np.mean([100 * record.best['top1'] for record in records]))
        assert row.top5 == pytest.approx(np.mean([100 * record.final['top5'] for record in records]))
        assert (row.params_m, row.mflops) == (records[0].params / 1e6, records[0].flops_per_image / 1e6)
        assert row.top1_per_mparams == pytest.approx(row.top1 / row.params_m)
    resnet = table.loc['resnet_20']  # the example's final top-1: 10, 12, 11 of 128 images; best epochs 10, 13, 11
    assert (resnet.top1, resnet.top1_std, resnet.best_top1) == pytest.approx((100 * 11 / 128, 100 / 128, 100 * 34 / 3 / 128))


def test_measured_models_come_first_best_first(table):
    measured = table[table.n > 0]
    assert list(table.index[:len(measured)]) == list(measured.index)
    assert list(measured.top1) == sorted(measured.top1, reverse=True)
    failed_next = ['resnet_20', 'ecanet20_k5', 'ghost_resnet_20', 'improved_resnet20_convnext']  # not the registry's order
    assert list(table.index[:4]) == failed_next


def test_format_table1_shows_mean_std_and_links_the_executed_run_notebook(table, smoke_results):
    shown = format_table1(table.reset_index(), link_from=smoke_results).set_index('model')
    assert shown.loc['resnet_20', 'final top-1 % (whole test split)'] == '8.59 ± 0.78'  # 11 ± 1 of 128 images
    assert shown.loc['ecanet20_k5', 'final top-1 % (whole test split)'] == '7.03'       # 9 of 128, one seed
    assert shown.loc['resnet_20', 'run notebooks'] == '[seed0](smoke/resnet_20/seed0/run.ipynb)'  # seeds 1, 2: train_model, no notebook
    assert shown.loc['convnext_tiny', 'final top-1 % (whole test split)'] == ''


def test_table1_links_run_notebooks_from_the_report_folder_or_under_a_link_base(table):
    "Relative links work in a checkout (docs/ -> ../results/...); a link base serves docs/ published on its own."
    root, runs = repo_root(), 'results/cpu-budget/resnet_20'
    in_repository = table.reset_index().assign(notebooks=[[(seed, root/runs/f'seed{seed}'/'run.ipynb') for seed in (0, 1)]] * len(table))
    def links(**given) -> str:
        return format_table1(in_repository, link_from=root/'docs', **given).set_index('model').loc['resnet_20', 'run notebooks']
    assert links() == f'[seed0](../{runs}/seed0/run.ipynb) [seed1](../{runs}/seed1/run.ipynb)'
    base = 'https://github.com/OWNER/REPO/blob/main'
    assert links(link_base=base) == links(link_base=base + '/') == f'[seed0]({base}/{runs}/seed0/run.ipynb) [seed1]({base}/{runs}/seed1/run.ipynb)'


def test_table2_groups_table1_by_technique(table):
    groups = table2(table.reset_index()).set_index('technique group')
    assert list(groups.index) == list(TECHNIQUE_GROUPS)
    assert groups.models.sum() == len(list_models()) and groups['measured and learned'].sum() == 3
    assert groups['not yet learned'].sum() == 0  # 7 % to 9 % top-1: over 5 times chance
    assert groups.loc['lightweight', 'best model'] == table[table.group == 'lightweight'].top1.idxmax()


def test_ablations_give_welch_intervals_and_say_when_they_cannot(study):
    ghost = ablation_table(study, 'ghost-ratio').set_index('model')
    baseline = [100 * r.final['top1'] for r in study.records_of('resnet_20')]
    variant = [100 * r.final['top1'] for r in study.records_of('ghost_resnet_20')]
    interval = stats.ttest_ind(variant, baseline, equal_var=False).confidence_interval(0.95)
    difference = ghost.loc['ghost_resnet_20', 'difference']  # 7 - 11 of 128 images
    assert difference == pytest.approx(np.mean(variant) - np.mean(baseline)) and difference == pytest.approx(-100 * 4 / 128)
    assert (ghost.loc['ghost_resnet_20', 'low'], ghost.loc['ghost_resnet_20', 'high']) == pytest.approx((interval.low, interval.high))
    claimed = float(ghost.loc['ghost_resnet_20', 'claimed_effect'])  # theirs: 68.50 - 70.12
    assert claimed == pytest.approx(-1.62) and interval.low <= min(0, claimed) and max(0, claimed) <= interval.high
    assert ghost.loc['ghost_resnet_20', 'verdict'] == 'not resolved at n = 2 after 2 epochs'  # the protocol, named
    assert ghost.n.tolist() == [3, 2, 0, 0]
    assert ghost.verdict.tolist()[::2] == ['baseline', 'pending']
    assert (ghost.loc['ghost_resnet_20', 'claimed'], ghost.loc['ghost_resnet_20', 'logged']) == (Decimal('68.50'), Decimal('59.19'))  # theirs
    eca_k = ablation_table(study, 'eca-k').set_index('model')
    assert eca_k.loc['ecanet20_k5', 'verdict'] == 'no interval with n = 1' and math.isnan(eca_k.loc['ecanet20_k5', 'low'])


def test_claims_audit_shows_ours_only_under_the_full_profile(table, smoke_results):
    full = table1(load_study(smoke_results, 'full'))
    audit = claims_audit(table.reset_index(), full).set_index('their Table 1 row')
    assert list(audit.index) == [row['row'] for row in original_claims()['table1']]
    full_top1 = 100 * completed(smoke_results, 'full')['resnet_20'][0].final['top1']
    assert audit.loc['resnet_20', 'our final top-1 % (profile full)'] == f"{full_top1:.2f}"
    assert audit.loc['ghost_resnet_20', 'our final top-1 % (profile full)'] == 'pending: profile full not run'
    assert audit.loc['ghost_resnet_20', 'our params (M, records)'] == f"{table.loc['ghost_resnet_20', 'params_m']:.4f}"
    assert audit.loc['coatnet_0', 'our model'] == '—'  # their simplified CoAtNet is not registered here
    assert audit.loc['resnet_20', 'their claimed top-1 % (report)'] == '66.50'
    assert all(column.startswith(('their', 'our', 'what their')) for column in audit.columns)


def test_summary_says_what_was_run(study, table):
    summary = study_summary(study, table.reset_index())
    for phrase in ('synthetic (CIFAR-100 format)', '`smoke`', 'seeds 0, 1, 2', '6 completed runs of 3 models (1 failed;',
                   'meaningless'):
        assert phrase in summary, (phrase, summary)


def test_figures(study, table):
    frame = table.reset_index()
    figures = [plot_top1_by_model(frame), plot_cost_fronts(frame), plot_training_curves(study, ['resnet_20', 'ecanet20_k5']),
               plot_seed_spread(study)]
    assert all(isinstance(figure, plt.Figure) for figure in figures)
    top1 = figures[0].axes[0]
    assert CHANCE['top1'] in [line.get_xdata()[0] for line in top1.get_lines()]  # chance marked
    assert {label.get_text() for label in top1.get_yticklabels()} >= {'resnet_20 (n=3)', 'ecanet20_k5 (n=1)'}
    # resnet_20's two-epoch runs draw no curve; ecanet20_k5's three epochs do
    assert figures[2].axes[-1].get_legend_handles_labels()[1] == ['ecanet20_k5']
    assert plot_training_curves(study, ['resnet_20']) is None
    spread = figures[-1].axes[0]
    assert {label.get_text() for label in spread.get_yticklabels()} == {'resnet_20', 'ghost_resnet_20'}
    plt.close('all')


def test_claims_file_is_package_data():
    pyproject = tomllib.loads((repo_root()/'pyproject.toml').read_text())
    assert 'original_study.toml' in pyproject['tool']['setuptools']['package-data']['cifar_study']
    assert (files('cifar_study')/'original_study.toml').is_file()


def _numbers(text: str) -> set[Decimal]:
    "The decimal numbers in `text` as written (integers there are names and counts: ResNet-20, k=3, 4 runs)."
    return {Decimal(number) for number in re.findall(r'\d+\.\d+', text)}


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"{REFERENCE} is not here")
def test_claims_file_matches_the_reference_table():
    "Every number of the claims file is the reference's: Table 1 cell by cell, the ablations bullet by bullet."
    reference, claims = REFERENCE.read_text(), original_claims()
    table_text = reference.split('## Table 1')[1].split('\n## ')[0]
    rows = {cells[0]: cells[1:] for line in table_text.splitlines() if line.startswith('| ') and not line.startswith('| model')
            for cells in [[cell.strip() for cell in line.strip().strip('|').split('|')]]}
    assert [row['row'] for row in claims['table1']] == list(rows)
    more = reference.split('## More from')[1].split('\n## ')[0]  # finals the table leaves out
    more_finals = {m[1]: Decimal(m[2]) for m in re.finditer(r'^- (\w+)\b.*?[\d.]+ best(?: \(epoch \d+\))?, ([\d.]+) final', more, re.M)}
    for row in claims['table1']:
        claimed, logged, claimed_params, logged_params = rows[row['row']]
        assert _numbers(claimed) == {row['claimed_top1']} and row.get('claimed_simulated', False) == ('(s)' in claimed)
        assert _numbers(claimed_params) == {row['claimed_params']}
        assert _numbers(logged_params) == ({row['logged_params']} if 'logged_params' in row else set())
        best_and_final = re.match(r'(\d+\.\d+)(?: \((\d+\.\d+)\))?', logged)
        assert (Decimal(best_and_final[1]) if best_and_final else None) == row.get('logged_best_top1')
        final = Decimal(best_and_final[2]) if best_and_final and best_and_final[2] else more_finals.get(row['row'])
        assert final == row.get('logged_final_top1'), row['row']
        assert str(row['claimed_top1']) in claimed and str(row['claimed_params']) in claimed_params  # decimals as given
        in_row = set().union(*(_numbers(str(value)) for value in row.values()))
        assert _numbers(logged) <= in_row and _numbers(row.get('logged_note', '')) <= _numbers(logged)
        assert _numbers(row['trained']) <= _numbers(reference)
    ablations = [' '.join(bullet.split()) for bullet in reference.split('## Ablations')[1].split('\n## ')[0].split('\n- ')]
    for name, start in {'eca-k': 'ECA kernel size', 'ghost-ratio': 'Ghost ratio', 'eca-position': 'ECA position'}.items():
        bullet = next(bullet for bullet in ablations if bullet.startswith(start))
        claimed_text, _, logged_text = bullet.partition('Logged:')
        assert set(claims['ablations'][name]['claimed'].values()) == _numbers(claimed_text)
        assert set(claims['ablations'][name].get('logged', {}).values()) == _numbers(logged_text)
    for entry in claims['contradicted']:
        assert _numbers(entry['claim'] + entry['logs']) <= _numbers(reference), entry


def test_table1_shows_calibration_and_corruption_accuracy_and_what_is_not_evaluated(table, smoke_results):
    records = {model: rs for model, rs in completed(smoke_results).items()}
    resnet = records['resnet_20']
    assert table.loc['resnet_20', 'ece'] == pytest.approx(np.mean([100 * r.evaluation['ece'] for r in resnet]))
    corrupted = [100 * r.evaluation['corruptions']['mean'] for r in resnet if r.evaluation['corruptions']]
    assert len(corrupted) == 2 and table.loc['resnet_20', 'corrupted_top1'] == pytest.approx(np.mean(corrupted))
    shown = format_table1(table.reset_index()).set_index('model')
    assert shown.loc['ecanet20_k5', 'ECE % (15 bins)'] == 'not evaluated'   # completed, never evaluated
    assert shown.loc['ghost_resnet_20', 'ECE % (15 bins)'].endswith('(1 of 2 seeds)')
    assert shown.loc['resnet_20', 'corrupted top-1 % (mean of 75)'].endswith('(2 of 3 seeds)')
    assert shown.loc['convnext_tiny', 'ECE % (15 bins)'] == ''              # pending: nothing to evaluate


def test_superclass_reliability_and_robustness_views_come_from_the_records(study, table, smoke_results):
    records = completed(smoke_results)
    superclasses = superclass_frame(study)
    assert sorted(superclasses.index) == ['ghost_resnet_20', 'resnet_20'] and superclasses.shape[1] == 20
    expected = np.mean([r.evaluation['per_superclass'] for r in records['resnet_20']], axis=0) * 100
    assert np.allclose(superclasses.loc['resnet_20'], expected)
    family, best = reliability_models(table.reset_index())
    assert sorted(family) == ['ghost_resnet_20', 'resnet_20'] and set(best) <= {'ghost_resnet_20', 'resnet_20'}
    panels = reliability_panels(study, family)
    pooled = panels['resnet_20']
    assert pooled['count'][12:] == [120, 150, 114]  # three seeds' bins added
    weights = [r.evaluation['calibration']['accuracy'][14] for r in records['resnet_20']]
    assert pooled['accuracy'][14] == pytest.approx(np.mean(weights))  # equal counts: the plain mean
    robustness = robustness_table(study, table.reset_index()).set_index('model')
    assert robustness.loc['ecanet20_k5', 'clean top-1 %'] == 'not evaluated' and robustness.loc['resnet_20', 'seeds'] == 2
    means = [r.evaluation['corruptions']['mean'] for r in records['resnet_20'] if r.evaluation['corruptions']]
    assert robustness.loc['resnet_20', 'corrupted top-1 %'] == f"{100 * np.mean(means):.2f}"
    corruptions = corruption_frame(study)
    assert corruptions.shape == (2, 15) and corruptions.columns[0] == 'gaussian_noise'
    for figure in (plot_superclass_heatmap(superclasses), plot_reliability(panels), plot_corruption_heatmap(corruptions)):
        assert figure is not None and figure.axes
        plt.close(figure)
    assert plot_reliability({}) is None and plot_superclass_heatmap(superclass_frame(load_study(smoke_results, 'full'))) is None


def test_table1_names_its_protocol_and_sets_another_protocols_top1_beside_it(study, table, smoke_results):
    assert protocol_name(study) == 'equal epochs: 2 (smoke)'  # from the records' configs
    assert protocol_name(load_study(smoke_results, 'full')) == 'equal epochs: 1 (full)'
    other = table1(load_study(smoke_results, 'full'))  # any other protocol's Table 1
    shown = format_table1(table.reset_index(), protocols={'top-1 % at equal epochs: 1 (full)': other}).set_index('model')
    column = shown['top-1 % at equal epochs: 1 (full)']
    full = other.set_index('model').loc['resnet_20']
    assert column.loc['resnet_20'] == f"{mean_std_text(full.top1, full.top1_std)} (n=1)" and full.n == 1
    assert column.loc['ghost_resnet_20'] == '' and column.loc['convnext_tiny'] == ''  # not run under that protocol
    columns = list(shown.columns)
    assert columns.index('top-1 % at equal epochs: 1 (full)') == columns.index('final top-1 % (whole test split)') + 1
    flipped = format_table1(other, link_from=smoke_results, protocols={'smoke': table.reset_index()}).set_index('model')
    resnet = table.loc['resnet_20']  # the other protocol's runs link their executed notebooks too
    assert flipped.loc['resnet_20', 'smoke'] == (f"{mean_std_text(resnet.top1, resnet.top1_std)} (n=3) "
                                                 "[seed0](smoke/resnet_20/seed0/run.ipynb)")


def test_a_study_is_its_profiles_folder_not_every_run_of_that_profile(smoke_results, tmp_path):
    results = tmp_path/'results'
    shutil.copytree(smoke_results, results)
    shutil.copytree(results/'smoke', results/'recipe-sweep'/'smoke')  # the same runs kept elsewhere, e.g. a sweep
    assert table1(load_study(results, 'smoke')).set_index('model').loc['resnet_20', 'n'] == 3


def test_holm_adjusts_step_down_and_keeps_nan():
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1, and never smaller than a more significant one's


def test_verdicts_name_the_protocol_and_do_not_call_an_unresolved_interval_noise():
    when = 'after 5 epochs'
    assert verdict(0.5, 2.0, 0.01, 1.0, 3, when, 'resnet_20') == 'better than resnet_20 after 5 epochs (Holm p = 0.010)'
    assert verdict(-2.0, -0.5, 0.02, -1.0, 3, when).startswith('worse than the baseline after 5 epochs')
    assert verdict(-2.0, -0.5, 0.0004, -1.0, 3, when).endswith('(Holm p < 0.001)')
    assert verdict(-1.0, 2.0, 0.4, 1.5, 3, when) == 'not resolved at n = 3 after 5 epochs'   # holds 0 and theirs
    assert verdict(-1.0, 2.0, 0.4, 3.35, 3, when) == ('no effect shown at n = 3 after 5 epochs; '
                                                     'their claimed +3.35 lies outside the interval')
    assert verdict(0.2, 2.0, 0.09, 1.0, 3, when) == 'not resolved at n = 3 after 5 epochs'   # not significant after Holm
    assert verdict(-6.15, -2.37, 0.03, 2.93, 3, when) == ('worse than the baseline after 5 epochs (Holm p = 0.030); '
                                                        'their claimed +2.93 lies outside the interval')
    assert verdict(math.nan, math.nan) == 'no interval: no spread over seeds'


def test_rank_agreement_with_their_logged_finals(table):
    theirs = their_logged_top1()
    assert theirs['resnet_20'] == 66.23 and theirs['mlp_mixer_study'] == 60.61  # their mlp_mixer_b16 row trained ours
    assert 'coatnet_0' not in theirs  # their simplified CoAtNet is not a registered model
    models = ['resnet_56', 'resnet_32', 'resnet_20', 'ghost_resnet_32', 'ghost_resnet_20', 'mlp_mixer_study']
    same = pd_frame(models, [theirs[m] for m in models])
    agreement = rank_agreement(same)
    assert (agreement['n'], agreement['rho']) == (6, pytest.approx(1.0)) and math.isnan(agreement['low'])  # rho 1: no interval
    mixed = rank_agreement(pd_frame(models, [1, 3, 2, 4, 6, 5]))
    expected = stats.spearmanr([1, 3, 2, 4, 6, 5], [theirs[m] for m in models]).statistic
    assert mixed['rho'] == pytest.approx(expected) and mixed['low'] < mixed['rho'] < mixed['high']
    assert rank_agreement(table.reset_index())['n'] == 2  # resnet_20 and ghost_resnet_20 are in both


def test_rank_agreement_counts_a_network_under_three_names_once():
    theirs = their_logged_top1()
    models = ['resnet_56', 'eca_resnet_20', 'ecanet20_fixed_k3', 'ecanet20_adaptive', 'resnet_20']
    frame = pd_frame(models, [60, 50, 50, 50, 40], params_m=[0.86, 0.2784, 0.2784, 0.2784, 0.2782])
    frame.loc[frame.model == 'ecanet20_adaptive', 'n'] = 1
    agreement = rank_agreement(frame)
    assert agreement['n'] == 3 and agreement['models'] == ['resnet_56', 'eca_resnet_20 = ecanet20_fixed_k3 = ecanet20_adaptive',
                                                            'resnet_20']
    one = (theirs['eca_resnet_20'] + theirs['ecanet20_fixed_k3'] + theirs['ecanet20_adaptive']) / 3
    expected = stats.spearmanr([60, 50, 40], [theirs['resnet_56'], one, theirs['resnet_20']]).statistic
    assert agreement['rho'] == pytest.approx(expected)
    assert same_network('ecanet20_adaptive', 'eca_resnet_20') and not same_network('eca_resnet_20', 'eca_resnet_20_pos1')
    assert not same_network('ecanet20_fixed_k3', 'ecanet20_k5')  # the same size, another kernel


def pd_frame(models, top1, params_m=None):
    import pandas as pd
    params_m = params_m or [float(i) for i in range(len(models))]  # apart: no two are compared as one network
    return pd.DataFrame(dict(model=models, top1=top1, n=[3] * len(models), params_m=params_m))


def test_contradicted_claims_carry_both_numbers():
    shown = contradicted_claims()
    claims = dict(zip(shown['their claim (report)'], shown['what their own logs and code show']))
    assert claims['ghost_resnet_20: top-1 35.16 % (Table 1)'] == 'best 59.53 %, final 59.28 %'
    assert claims['ghost_resnet_20: top-1 68.50 % (ghost-ratio ablation)'] == '59.19 % in its log'
    assert claims['mlp_mixer_b16: 59.19 M parameters (Table 1)'].startswith('the trained model has 17.95 M')
    assert claims['hornet_tiny: top-1 60.00 % (Table 1)'].startswith('marked simulated')
    assert 'resnet_20: top-1 66.50 % (Table 1)' not in claims  # 66.62 logged: within a point
    assert len(shown) == 18 + len(original_claims()['contradicted'])  # 12 of Table 1, 6 of the ablations


def test_recipe_model_and_cost_tables_come_from_the_records_and_registry(study, table, smoke_results):
    recipe = recipe_table([study]).set_index('setting').iloc[:, 0]
    config = completed(smoke_results)['resnet_20'][0].config
    assert recipe['length'] == f"{config['epochs']} epochs" and recipe['batch'] == str(config['batch_size'])
    assert recipe['peak learning rate'] == f"{config['lr']:g}"
    models = model_table(table.reset_index()).set_index('model')
    assert list(models.index) == list_models()
    assert models.loc['resnet_20', 'our params (M)'] == '0.2783' and models.loc['resnet_20', 'their trained params (M, logs)'] == '0.2783'
    assert models.loc['resnet_20', 'how they compare'].startswith('ours is the model their code trained')
    assert models.loc['mlp_mixer_b16', 'their claimed params (M, row of this name)'] == '59.19'
    assert 'a 17.95 M Mixer' in models.loc['mlp_mixer_b16', 'how they compare']
    assert models.loc['ecanet20_k5', 'implements'].startswith('ECA-Net')
    costs = cost_table(study, table.reset_index()).set_index('model')
    assert costs.loc['resnet_20', 'command'] == '`for s in 0 1 2; do cifar-study train resnet_20 --profile smoke --seed $s; done`'
    hours = sum(r.wall_seconds for r in completed(smoke_results)['resnet_20']) / 3600
    assert costs.loc['resnet_20', 'wall hours (all seeds)'] == f"{hours:.2f}"
    assert 'training / budget' not in costs and 'set-up / budget' not in costs  # these runs had no budget


def test_budget_misses_and_unlearned_models_are_named(study, table):
    record = study.records_of('resnet_20')[0]
    assert not off_budget(record)  # no budget
    budgeted = lambda budget_s, **flag: replace(record, config={**record.config, 'budget_s': budget_s},
                                                budget=dict(budget_outcome(dict(budget_s=budget_s), record.train_seconds), **flag))
    assert off_budget(budgeted(record.train_seconds / 1.2)) and not off_budget(budgeted(record.train_seconds / 1.05))
    assert off_budget(budgeted(record.train_seconds, outside_tolerance=True))  # the record's flag decides
    frame = table.reset_index()
    frame.loc[frame.model == 'ecanet20_k5', 'learned'] = False
    assert not_learned(frame) == ['ecanet20_k5']
    text = conclusions([study], [table.reset_index()])
    assert "the highest final top-1 among learned models is `resnet_20`'s" in text and '**Limitations.**' in text
    assert 'of the budget' not in text  # these runs had no budget to miss
    budgeted_config = lambda config: {**config, 'budget_s': 1e-3, 'warmup_share': 0.2}
    budgeted = replace(study, runs=tuple(replace(run, record=replace(run.record, config=budgeted_config(run.record.config)))
                                         if run.completed else run for run in study.runs))
    assert 'runs outside 10 % of the budget' in conclusions([budgeted], [table.reset_index()])
    assert 'kinds of machine' not in conclusions([budgeted], [table.reset_index()])
    assert 'seconds on the same hardware' in study_summary(budgeted, table.reset_index())
    costs = cost_table(budgeted, table1(budgeted)).set_index('model')
    setups = [r.setup_seconds / 1e-3 for r in budgeted.records_of('resnet_20')]
    assert costs.loc['resnet_20', 'set-up / budget'] == f"{sum(setups) / len(setups):.1%}"
    schedule = recipe_table([budgeted]).set_index('setting').iloc[:, 0]['schedule']
    assert schedule.startswith('linear warm-up over 20% of the steps, then cosine to ')
    assert schedule.endswith(", stepped per batch (over the budget's seconds until the speed probe fixes the steps)")
    first = next(run for run in budgeted.runs if run.completed)
    elsewhere = replace(first.record, environment={**first.record.environment, 'device_name': 'Other CPU'})
    mixed = replace(budgeted, runs=tuple(replace(run, record=elsewhere) if run is first else run for run in budgeted.runs))
    text = conclusions([mixed], [table.reset_index()])
    assert '1 run on Other CPU (cpu, ' in text and 'so their equal seconds are not equal compute' in text
    summary = study_summary(mixed, table.reset_index())
    assert 'same hardware' not in summary and 'seconds on 2 kinds of machine (so not the same compute)' in summary


def test_tables_say_constant_columns_once_and_figures_are_numbered(tmp_path):
    import pandas as pd
    frame = pd.DataFrame(dict(model=['a', 'b'], device=['cpu', 'cpu'], top1=['1.0', '2.0']))
    shown, text = split_constant_columns(frame)
    assert list(shown.columns) == ['model', 'top1'] and text == 'The same on every row: device: cpu.'
    assert table_markdown(frame, 'Two models.', 'two').endswith(': Two models. {#tbl-two}')
    figure, _ = plt.subplots()
    markdown = figure_markdown(figure, tmp_path, 'demo', 'A demo.')
    assert (tmp_path/'figures'/'demo.png').stat().st_size > 0 and markdown == '![A demo.](figures/demo.png){#fig-demo}'


def test_a_superclass_without_test_images_is_left_blank(study):
    run = next(run for run in study.runs if run.completed and run.record.evaluation)
    evaluation = dict(run.record.evaluation, per_superclass=[None] + run.record.evaluation['per_superclass'][1:])
    frame = superclass_frame(replace(study, runs=(replace(run, record=replace(run.record, evaluation=evaluation)),)))
    assert math.isnan(frame.iloc[0, 0]) and frame.iloc[0, 1] == pytest.approx(100 * evaluation['per_superclass'][1])
