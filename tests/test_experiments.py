"""End-to-end: Table 1 on synthetic data with tiny budgets, evaluate.py on a checkpoint, figures."""

import copy
import json
import os
import shutil

import jax
import numpy as np
import pytest

from experiments import evaluate, reproduce, table1
from jaxrobust.configs.defenses import DEFENSES, defense_config
from experiments.report import table_markdown
from jaxrobust.machine import cpu_model
from tests.test_reproduce import check_environment


PNG = b'\x89PNG\r\n\x1a\n'


@pytest.fixture(scope='module')
def table(tmp_path_factory):
  d = tmp_path_factory.mktemp('table1')
  records, md = table1.run_table(
    ['regular', 'lwta'],
    'synthetic',
    out_dir=str(d / 'results'),
    runs_dir=str(d / 'runs'),
    num_test=32,
    steps_scale=0.05,
    eot_samples=2,
    suite='study',
    autoattack=True,
    autoattack_scale=0.02,
    progress=False,
  )
  return d, records, md


@pytest.mark.long
def test_table1_smoke_writes_table_rows_and_json(table):
  d, records, md = table
  text = open(md).read()
  assert 'Regular training' in text and 'Stochastic LWTA' in text and 'Worst case' in text
  rows = json.load(open(d / 'results' / 'synthetic' / 'table1.json'))
  assert [r['row'] for r in rows] == ['regular', 'lwta']
  for r in rows:
    res = r['result']
    accs = [
      v for k, v in res.items() if isinstance(v, float) and k not in ('ms_per_image', 'clean_all_of_k_draws')
    ]
    assert res['worst_case'] <= min(accs) + 1e-9
    assert res['ms_per_image'] > 0
  assert not rows[0]['result']['stochastic'] and rows[1]['result']['stochastic']
  # Honest evaluation of the stochastic model: EOT on both threats, the attacks on its sampling.
  for col in ('eot_pgd', 'eot_apgd', 'eot_pgd_l2', 'eot_apgd_l2', 'transfer', 'clean_all_of_k_draws'):
    assert col in rows[1]['result']
  for base in ('eot_expected_probability', 'eot_straight_through', 'transfer_low_temperature'):
    for col in (base, base + '_l2'):
      assert col in rows[1]['result'] and col in rows[1]['result']['attacks'] and col not in rows[0]['result']
  assert rows[1]['result']['clean_all_of_k_draws'] <= rows[1]['result']['clean']
  # The AutoAttack column: standard on the deterministic row, rand on the stochastic one, and the
  # worst case is correct under it too, point by point.
  assert [r['result']['autoattack_version'] for r in rows] == ['standard', 'rand']
  for r in records:
    per = r['result']['per_example']
    assert not any(w and not a for w, a in zip(per['worst_case'], per['autoattack']))
  assert '| AutoAttack |' in text


def test_finished_rows_are_not_redone(table):
  d, records, _ = table
  again, _ = table1.run_table(
    ['regular'],
    'synthetic',
    out_dir=str(d / 'results'),
    runs_dir=str(d / 'elsewhere'),
    num_test=32,
    steps_scale=0.05,
  )
  assert again[0]['result']['clean'] == records[0]['result']['clean']
  assert not os.path.exists(d / 'elsewhere')  # no training happened


def test_retime_measures_every_row_again_from_its_checkpoint(table, tmp_path):
  d, records, _ = table
  out = tmp_path / 'results'
  shutil.copytree(d / 'results', out)
  for name in ('regular', 'lwta'):  # a poisoned time must not survive the pass
    path = out / 'synthetic' / 'rows' / f'{name}.json'
    r = json.load(open(path))
    r['result']['ms_per_image'] = -1.0
    path.write_text(json.dumps(r))
  again, md = table1.run_table(
    ['regular', 'lwta'], 'synthetic', out_dir=str(out), runs_dir=str(d / 'runs'), retime_rows=True
  )
  for r in again + [json.load(open(out / 'synthetic' / 'rows' / 'lwta.json'))]:
    assert r['result']['ms_per_image'] > 0 and r['ms_per_image_pass'] == 'retimed'
  assert '-1.000' not in open(md).read()


def test_retime_training_trains_the_row_again_to_the_same_bits(table, tmp_path):
  """The training time is measured again by training the row anew from its config.json; the
  retrained model must reach the stored test accuracy exactly, or the pass stops, naming it."""
  d, records, _ = table
  out = tmp_path / 'results'
  shutil.copytree(d / 'results', out)
  path = out / 'synthetic' / 'rows' / 'regular.json'
  again, _ = table1.run_table(
    ['regular'], 'synthetic', out_dir=str(out), runs_dir=str(d / 'runs'), retime_training=True
  )
  assert again[0]['train_time_pass'] == 'retimed' and again[0]['train_time_s'] > 0
  r = json.load(open(path))
  assert r['train_time_pass'] == 'retimed' and r['train_time_cpu'] == cpu_model()
  # Retimed on this CPU already: an interrupted pass does not train the row a second time.
  r['train_time_s'], r['test_accuracy_full'] = 12345.0, -1.0  # -1: another run's record
  path.write_text(json.dumps(r))
  again, md = table1.run_table(
    ['regular'], 'synthetic', out_dir=str(out), runs_dir=str(d / 'runs'), retime_training=True
  )
  assert again[0]['train_time_s'] == 12345.0
  assert f'each row retrained alone on {cpu_model()}' in open(md).read()
  # Timed on another machine: trained again, and the other run's record is refused, named.
  r['train_time_cpu'] = 'another CPU (2 cores)'
  path.write_text(json.dumps(r))
  with pytest.raises(RuntimeError, match='regular: retrained from its config.json'):
    table1.run_table(
      ['regular'], 'synthetic', out_dir=str(out), runs_dir=str(d / 'runs'), retime_training=True
    )


def test_a_resumed_rows_partial_training_time_is_not_shown(table):
  """A row resumed from its checkpoints timed only its last part: the table shows '–' until a
  retime pass measured it, and says how the time columns were taken."""
  _, records, _ = table
  row = dict(records[0], train_time_s=8.2, resumed=True)
  text = table_markdown([row])
  assert text.splitlines()[-1].endswith('| – |') and '| 8 |' not in text
  assert table_markdown([dict(row, train_time_pass='retimed')]).splitlines()[-1].endswith('| 8 |')
  assert table_markdown([dict(row, resumed=False)]).splitlines()[-1].endswith('| 8 |')
  no_ms = dict(row, result=dict(row['result'], ms_per_image=float('nan')))
  assert '| nan |' not in table_markdown([no_ms])
  assert 'as each row finished' in table1.timing_note([row])
  assert 'resumed, not measured' in table1.timing_note([row])


def test_figures_are_valid_pngs(table):
  d, _, _ = table
  figs = d / 'results' / 'synthetic' / 'figures'
  names = sorted(os.listdir(figs))
  assert names == [
    'accuracy_vs_epsilon.png',
    'lwta_confidence.png',
    'lwta_examples.png',
    'regular_confidence.png',
    'regular_examples.png',
  ]
  import matplotlib.pyplot as plt

  for n in names:
    assert open(figs / n, 'rb').read(8) == PNG
    img = plt.imread(figs / n)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01


def test_evaluate_checkpoint(table):
  d, records, _ = table
  work = d / 'runs' / 'synthetic' / 'regular'
  res = evaluate.evaluate_checkpoint(
    str(work), suite='study', num_test=32, epsilons=[0.0, 0.1, 0.3], steps_scale=0.05
  )
  assert res['clean'] == pytest.approx(records[0]['result']['clean'])  # same weights, same data
  assert res['accuracy_vs_epsilon'][0] == pytest.approx(res['clean'])  # ε = 0: clean accuracy
  assert res['accuracy_vs_epsilon'][2] <= res['accuracy_vs_epsilon'][0]
  assert set(res['attacks']) == {'fgsm', 'pgd_linf', 'pgd_l2', 'cw_l2'}
  assert res['attacks']['pgd_linf']['epsilon'] == 0.3  # the study's settings
  assert os.path.exists(work / 'eval_study.json')
  with pytest.raises(FileNotFoundError, match='not a jaxrobust work directory'):
    evaluate.evaluate_checkpoint(str(d), num_test=4)


def test_evaluate_keeps_the_adaptive_pieces_per_setting(table, monkeypatch):
  """The adaptive suite resumes: evaluate.py hands it a cache directory in the work directory,
  one per setting of its knobs; other suites get none."""
  d, _, _ = table
  work = d / 'runs' / 'synthetic' / 'lwta'
  seen = []
  monkeypatch.setattr(evaluate, 'evaluate_test_set', lambda *a, **kw: seen.append(kw['cache_dir']) or {})
  evaluate.evaluate_checkpoint(str(work), suite='adaptive', num_test=8, eot_samples=3, steps_scale=0.5)
  evaluate.evaluate_checkpoint(str(work), suite='standard', num_test=8)
  assert seen == [str(work / 'adaptive_cache_n8_eot3_scale0.5_seed0'), None]


def test_every_defense_has_a_config_and_bad_names_are_named():
  for name in DEFENSES:
    for ds in ('fashion_mnist', 'cifar10'):
      c = defense_config(name, ds)
      assert c.train.objective and c.model.name
    assert os.path.exists(
      os.path.join(os.path.dirname(os.path.dirname(table1.__file__)), 'configs', f'{name}.py')
    )
  assert defense_config('lwta', 'cifar10').model.name == 'wrn34_1_lwta'
  with pytest.raises(ValueError, match="unknown defense 'madry'"):
    defense_config('madry')
  with pytest.raises(ValueError, match='unknown Table 1 rows'):
    table1.run_table(['nope'], 'synthetic')


def test_evaluate_checkpoint_with_autoattack(table):
  d, records, _ = table
  res = evaluate.evaluate_checkpoint(
    # the fixture's images and budget: the programs of its AutoAttack column are reused
    str(d / 'runs' / 'synthetic' / 'regular'),
    suite='autoattack',
    num_test=32,
    steps_scale=0.02,
  )
  rep = res['autoattack_report']
  assert res['autoattack_version'] == 'standard'
  assert list(rep['robust_accuracy']) == ['apgd_ce', 'apgd_t', 'fab_t', 'square']
  assert res['autoattack'] == pytest.approx(rep['robust_accuracy']['square'])
  assert res['autoattack'] <= res['clean'] and len(res['per_example']['autoattack']) == 32
  assert not rep['flags']['randomized']


@pytest.mark.long
def test_autoattack_rand_on_the_stochastic_row(table):
  from jaxrobust.evaluation import evaluate_autoattack
  from jaxrobust.models import make_logits_fn
  from jaxrobust.train import load_trained

  d, _, _ = table
  _, model, variables, ds = load_trained(str(d / 'runs' / 'synthetic' / 'lwta'))
  res = evaluate_autoattack(
    make_logits_fn(model, variables),
    ds.test_images[:16],
    ds.test_labels[:16],
    epsilon=0.1,
    version='rand',
    key=jax.random.key(0),
    stochastic=True,
    num_steps=2,
    num_queries=100,
    eot_samples=2,
  )
  rep = res.report
  assert list(rep['robust_accuracy']) == ['apgd_ce', 'apgd_dlr'] and rep['flags']['randomized']
  assert res.accuracy == pytest.approx(rep['robust_accuracy']['apgd_dlr']) == res.robust.mean()
  assert res.accuracy <= res.clean and res.version == 'rand'


def _differing(a, b) -> dict:
  """The config fields where `a` and `b` differ, as dotted names -> (a's value, b's value)."""

  def flat(d, prefix=''):
    out = {}
    for k, v in d.items():
      out.update(flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {prefix + k: v})
    return out

  fa, fb = flat(a.to_dict()), flat(b.to_dict())
  return {k: (fa.get(k), fb.get(k)) for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


def test_the_authors_lwta_variant_changes_only_the_authors_choices():
  """The 'authors' variant is the study's LWTA row with the authors' schedule, length, PGD-10 at
  ε = 0.031 and no KL term; a variant that leaked another change would fail here."""
  study, authors = defense_config('lwta', 'cifar10'), defense_config('lwta', 'cifar10,authors')
  diff = _differing(study, authors)
  assert set(diff) == {
    'train.schedule',
    'train.num_epochs',
    'train.kl_beta',
    'train.attack.num_steps',
    'train.attack.epsilon',
  }
  assert authors.train.kl_beta == 0.0 < study.train.kl_beta  # the point of the variant
  assert defense_config('lwta', 'fashion_mnist,authors').train.kl_beta == 0.0
  with pytest.raises(ValueError, match="'authors' variant is the LWTA row's"):
    defense_config('pgd_at', 'cifar10,authors')


def test_the_demo_variant_halves_the_training_attack_and_nothing_else():
  full, demo = (
    defense_config('pgd_at', 'fashion_mnist,quick'),
    defense_config('pgd_at', 'fashion_mnist,quick,demo'),
  )
  assert (full.train.attack['num_steps'], demo.train.attack['num_steps']) == (10, 5)
  # the same total step length 2.5·ε (Madry et al.'s rule)
  assert demo.train.attack['step_size'] * 5 == full.train.attack['step_size'] * 10 == pytest.approx(0.25)
  a, b = full.to_dict(), demo.to_dict()
  a['train'].pop('attack'), b['train'].pop('attack')
  assert a == b
  with pytest.raises(ValueError, match="'demo' variant is for fashion_mnist"):
    defense_config('pgd_at', 'cifar10,demo')


def test_the_pni_row_is_pgd_at_with_pni_and_nothing_else():
  """PNI's row differs from PGD-AT's only in the model, the objective, its attack (He et al.'s
  PGD-7 without a random start, still crossing the ε-ball) and its clean warm-up epochs, which a
  one-epoch run drops."""
  pgd, pni = defense_config('pgd_at', 'fashion_mnist'), defense_config('noise_injection', 'fashion_mnist')
  assert set(_differing(pgd, pni)) == {
    'model.name',
    'train.objective',
    'train.attack.num_steps',
    'train.attack.step_size',
    'train.attack.random_init',
    'train.clean_epochs',
  }
  a = pni.train.attack
  assert a['num_steps'] * a['step_size'] >= a['epsilon']  # the attack can reach the ball's surface
  quick = defense_config('noise_injection', 'fashion_mnist,quick')
  assert set(_differing(pni, quick)) == {'train.num_epochs', 'train.clean_epochs'}
  assert quick.train.clean_epochs == 0.0 < pni.train.clean_epochs < pni.train.num_epochs


def test_fast_at_takes_epochs_per_row():
  from experiments import fast_at

  rows = ['pgd_at', 'fgsm_rs']
  assert fast_at.parse_epochs('2', rows) == {'pgd_at': 2.0, 'fgsm_rs': 2.0}
  assert fast_at.parse_epochs('pgd_at:10,fgsm_rs:7', rows) == {'pgd_at': 10.0, 'fgsm_rs': 7.0}
  for bad in ('pgd_at:10', 'pgd_at:x,fgsm_rs:1', 'ten', 'pgd_at:1,fgsm_rs:1,free_at:1'):
    with pytest.raises(ValueError, match='--epochs'):
      fast_at.parse_epochs(bad, rows)


@pytest.mark.long
def test_lwta_temperature_study_on_the_synthetic_lwta_row(table, tmp_path):
  """Every setting is measured, accuracies are fractions, the table has a row per setting and
  the figure is a PNG."""
  from experiments import lwta_temperature

  d = table[0]
  workdir = str(d / 'runs' / 'synthetic' / 'lwta')
  rows, md = lwta_temperature.run(workdir, num_test=16, eot_samples=2, out_dir=str(tmp_path))
  assert [r['setting'] for r in rows] == ['T = 0.67', 'T = 0.1', 'T = 0.01', 'argmax winners']
  assert all(0 <= r[k] <= 1 for r in rows for k in ('clean', 'PGD-20', 'EOT2-PGD-20'))
  fig = tmp_path / 'synthetic' / 'figures' / 'confidence_by_temperature.png'
  assert fig.read_bytes().startswith(PNG) and md.count('\n') == 2 + len(rows)


@pytest.mark.long
def test_converged_study_reuses_the_trained_rows_and_reports_the_protocol(table, tmp_path):
  """experiments.converged on the synthetic rows the Table 1 fixture trained (same configs, so
  nothing is retrained): the stochastic row gets the adaptive suite and the convergence test,
  the deterministic one AutoAttack; the table has a line per row and the worst case bounds
  every attack from below."""
  from experiments import converged

  d = table[0]
  steps = json.loads(open(d / 'runs' / 'synthetic' / 'lwta' / 'metrics.jsonl').readlines()[-1])['step']
  records, md = converged.run(
    ['regular', 'lwta'],
    'synthetic',
    out_dir=str(tmp_path),
    runs_dir=str(d / 'runs'),
    num_test=8,
    eot_samples=2,
    convergence_n=4,
    steps_scale=0.05,
    progress=False,
  )
  regular, lwta = records
  assert lwta['train_steps'] == steps  # resumed at the end: no step was added
  assert regular['result']['suite'] == 'autoattack' and lwta['result']['suite'] == 'adaptive'
  res = lwta['result']
  assert res['and_of_majority_votes'] <= min(a['majority'] for a in res['attacks'].values())
  conv = lwta['convergence']
  assert set(conv) >= {'accuracy_vs_draws', 'accuracy_vs_steps', 'converged', 'n', 'worst_case'}
  # the suite's worst case on the convergence test's points, which the doubled EOT-PGD can only lower
  assert res['worst_case'] * 8 - 4 <= conv['worst_case'] * 4 <= res['worst_case'] * 8
  assert (
    0 <= conv['worst_case_expected_with_double_budget'] <= 1
    and 0 <= conv['worst_case_with_double_budget'] <= 1
  )
  assert (tmp_path / 'synthetic' / 'figures' / 'lwta_convergence.png').read_bytes().startswith(PNG)
  # the pieces sit in the results, under the model's digest, ready for another session to resume
  pieces = tmp_path / 'synthetic' / 'pieces' / 'lwta'
  stored = json.loads((pieces / 'adaptive' / 'settings.json').read_text())
  assert (
    stored['value']['model'] == lwta['model_digest'] and (pieces / 'convergence' / 'settings.json').exists()
  )
  assert conv['seconds'] > 0 and not list(pieces.rglob('*.lock'))
  table, times, context, *per_row = md.split('\n\n')
  assert table.count('\n') == 1 + 2 and open(tmp_path / 'synthetic' / 'converged.md').read() == md
  assert times.startswith('- Stochastic LWTA') and 'the adaptive suite took' in times  # where time went
  assert '36.2 %' in context and '74.5–79.5 %' in context  # the published figures beside ours
  assert (
    per_row[0].startswith('**Stochastic LWTA (PGD-AT + ELBO)** (8 test images, 1 epochs')
    and converged.row_table(lwta) in md
  )
  # a later command for one row keeps the other in the table (its record is read back, not redone)
  # and redraws the row's figure from that record
  (tmp_path / 'synthetic' / 'figures' / 'lwta_convergence.png').unlink()
  _, md_one = converged.run(
    ['lwta'], 'synthetic', out_dir=str(tmp_path), runs_dir=str(d / 'runs'), progress=False
  )
  assert md_one.split('\n\n')[0].count('\n') == 1 + 2 and '| Regular' in md_one.split('\n\n')[0]
  assert (tmp_path / 'synthetic' / 'figures' / 'lwta_convergence.png').read_bytes().startswith(PNG)


def test_accuracy_against_training_time_figure_is_a_png(tmp_path):
  from experiments import figures

  path = tmp_path / 'cost.png'
  figures.plot_accuracy_vs_cost(
    str(path), {'PGD-AT': (1655.0, 0.76), 'FGSM-RS': (371.0, 0.722), 'Free-AT': (322.0, 0.722)}
  )
  assert path.read_bytes().startswith(PNG)


def test_the_autoattack_column_is_refused_beside_suites_that_have_their_own():
  from jaxrobust.evaluation import EvalSpec

  with pytest.raises(
    ValueError, match="with_autoattack is for the 'study' and 'standard' suites, not 'adaptive'"
  ):
    EvalSpec(dataset='synthetic', suite='adaptive', with_autoattack=True)


def test_lwta_kl_pairs_the_variants_seed_by_seed(tmp_path, monkeypatch):
  """The table's paired difference is ELBO − authors per seed; each (variant, seed) has its own
  work and results directories and config variant; bad --seeds are named."""
  from experiments import lwta_kl

  calls = []

  def fake_row(row, dataset, *, seed, variant, runs_dir, out_dir, **_):
    calls.append((row, seed, variant, runs_dir, out_dir))
    work = os.path.join(runs_dir, dataset, row)
    os.makedirs(work)
    with open(os.path.join(work, 'metrics.jsonl'), 'w') as f:
      f.write(json.dumps({'train_kl': 10.0 + seed}) + '\n' + json.dumps({'test_accuracy': 0.5}) + '\n')
    acc = 0.5 + 0.1 * seed + (0.02 if variant == '' else 0.0)  # the ELBO two points higher
    result = {c: acc for c in lwta_kl.COLUMNS}
    return {'result': result, 'train_time_s': 1.0, 'n_eval': 16}

  monkeypatch.setattr(lwta_kl, 'table1_row', fake_row)
  summary, table = lwta_kl.run([0, 1], out_dir=str(tmp_path / 'out'), runs_dir=str(tmp_path / 'runs'))
  assert [(c[1], c[2]) for c in calls] == [(0, ''), (0, 'authors'), (1, ''), (1, 'authors')]
  assert len({c[3] for c in calls}) == len({c[4] for c in calls}) == 4
  assert summary['paired_difference']['worst_case'] == pytest.approx([0.02, 0.02])
  assert summary['final_train_kl'] == {'elbo': [10.0, 11.0], 'authors': [10.0, 11.0]}
  assert '+2.0 ± 0.0' in table and '55.0 ± 7.1' in table
  for bad in ('0,x', '0,0', '-1', ''):
    with pytest.raises(ValueError, match='--seeds'):
      lwta_kl.parse_seeds(bad)


def _flags_read_and_defined(path):
  """(flags main() reads as F.x or FLAGS.x, flags the script defines) of one script, from its AST."""
  import ast

  tree = ast.parse(open(path).read())
  read, defined = set(), set()
  for node in ast.walk(tree):
    if (
      isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ('F', 'FLAGS')
    ):
      read.add(node.attr)
    if (
      isinstance(node, ast.Call)
      and isinstance(node.func, ast.Attribute)
      and node.func.attr.startswith('DEFINE')
    ):
      if node.args and isinstance(node.args[0], ast.Constant):
        defined.add(node.args[0].value)
  return read, defined


def test_every_flag_a_script_reads_is_defined():
  """A flag read but never defined fails only at the end of a long run's set-up (it happened)."""
  import glob

  scripts = sorted(
    glob.glob(os.path.join('experiments', '*.py')) + glob.glob(os.path.join('experiments', '*', '*.py'))
  )
  checked = 0
  for path in scripts:
    read, defined = _flags_read_and_defined(path)
    if not read:
      continue
    checked += 1
    assert read <= defined, f'{path} reads undefined flags {sorted(read - defined)}'
  assert checked >= 6


@pytest.mark.parametrize('n', [1, 12, 40])
def test_every_curve_of_a_figure_has_its_own_style(n):
  """Table 1 has twelve rows and matplotlib's colour cycle ten colours: no two curves may look alike."""
  from experiments import figures

  styles = figures.line_styles(n)
  assert len({(s['color'], s['linestyle'], s['marker']) for s in styles}) == n


def test_converged_table_says_which_sanity_flags_were_raised():
  """The flags beside the worst case, in words; a stochastic row's 'randomized' flag is its
  design and is not repeated as a warning."""
  from experiments.converged import flag_summary

  assert (
    flag_summary({'aa_rand_randomized': True, 'aa_rand_zero_gradients': 0.0, 'gradient_masking': False})
    == 'none'
  )
  said = flag_summary(
    {'gradient_masking': True, 'aa_standard_zero_gradients': 0.004, 'aa_rand_zero_gradients': 0.25}
  )
  assert said.startswith('**gradient masking**') and said.endswith('25.0 % zero gradients')
  assert flag_summary({'probabilities': True}) == 'outputs look like probabilities'
  said = flag_summary({'gradient_masking': False, 'standard_gradient_masking': True})
  assert said == "**AutoAttack standard's masking flag** (its Square broke points its gradient attacks left)"


def test_converged_row_table_lists_every_attack_with_its_n_draw_columns():
  """A stochastic row's own table: the protocol's attacks in order (clean first), four accuracy
  columns each, and the worst case with its interval in the majority column."""
  from experiments.converged import row_table

  acc = lambda v: dict(single_draw=v, mean=v - 0.01, majority=v, all=v - 0.05)  # noqa: E731
  record = dict(
    title='Stochastic LWTA',
    n_eval=1000,
    epochs=10,
    test_accuracy_full=0.8555,
    result=dict(
      num_draws=10,
      clean=acc(0.85),
      attacks={
        'eot_square': acc(0.62),
        'pgd': acc(0.70),
        'transfer_mean_field': acc(0.75),
        'aa_rand': acc(0.6),
      },
      worst_case=0.55,
      worst_case_interval=[0.519, 0.581],
      worst_case_expected=0.57,
      worst_case_expected_interval=[0.55, 0.59],
      and_of_majority_votes=0.41,
      selection_draws=10,
      flags={'gradient_masking': False},
    ),
  )
  lines = row_table(record).splitlines()
  assert 'Stochastic LWTA' in lines[0] and '1000 test images' in lines[0] and '85.55' in lines[0]
  rows = [line for line in lines if line.startswith('| ') and not line.startswith('| attack')]
  cells = [[c.strip() for c in r.strip('|').split('|')] for r in rows]
  # clean first, then the attacks in the protocol's order, then the two worst-case statistics
  order = ['no attack', 'PGD-20', 'AA-rand', 'EOT-Square', 'mean-field', 'worst case', 'AND']
  assert len(cells) == len(order) and all(word in c[0] for word, c in zip(order, cells))
  # each attack's four columns: one draw, mean, majority, all-N, in %
  assert cells[1][1:5] == ['70.0', '69.0', '70.0', '65.0']
  assert cells[3][1:5] == ['62.0', '61.0', '62.0', '57.0']
  # expected accuracy in the mean column, the vote in the majority column, each with its interval
  assert cells[-2][2:4] == ['**57.0** [55.0, 59.0]', '**55.0** [51.9, 58.1]']
  assert cells[-1][3] == '41.0' and 'biased low' in cells[-1][0]
  assert 'none' in lines[-1]  # no sanity flag raised
  # a record computed before the estimator says what its worst case is
  old = dict(record, result={k: v for k, v in record['result'].items() if 'expected' not in k})
  assert 'biased low' in [r for r in row_table(old).splitlines() if r.startswith('| **worst')][0]


# ------------------------------------------------------------- provenance and reproduction
def test_a_freshly_written_table1_row_and_evaluation_carry_their_environment(table, tmp_path):
  d, records, _ = table
  for r in records + json.load(open(d / 'results' / 'synthetic' / 'table1.json')):
    check_environment(r['environment'])
  row = json.load(open(d / 'results' / 'synthetic' / 'rows' / 'regular.json'))
  check_environment(row['environment'])
  assert row['invocation']['steps_scale'] == 0.05 and row['invocation']['seed'] == 0
  evaluate.evaluate_checkpoint(str(d / 'runs' / 'synthetic' / 'regular'), num_test=8, steps_scale=0.05)
  record = json.load(open(d / 'runs' / 'synthetic' / 'regular' / 'eval_standard.json'))
  check_environment(record['environment'])
  # The record names the run and the checkpoint step it evaluated.
  newest = max(
    int(s) for s in os.listdir(d / 'runs' / 'synthetic' / 'regular' / 'checkpoints') if s.isdigit()
  )
  assert record['source'] == {'workdir': str(d / 'runs' / 'synthetic' / 'regular'), 'step': newest}


def test_verdicts_follow_the_largest_change(table):
  _, records, _ = table
  rec = records[0]
  same = reproduce.compare(rec, copy.deepcopy(rec))
  assert same.verdict == reproduce.BIT_FOR_BIT and same.largest_difference == 0 and not same.environment
  near = copy.deepcopy(rec)
  near['result']['fgsm'] += 0.015
  r = reproduce.compare(rec, near)
  assert r.verdict == reproduce.TO_A_TOLERANCE and list(r.changed) == ['result.fgsm']
  assert r.largest_difference == pytest.approx(0.015)
  assert reproduce.compare(rec, near, tolerance=0.01).verdict == reproduce.NOT_AT_ALL
  # A count that moved (points broken by an attack) is a change, not a change of 200 points.
  recount = copy.deepcopy(rec)
  recount['result']['autoattack_report'] = {'broken': {'apgd_ce': 409}}
  counted = copy.deepcopy(rec)
  counted['result']['autoattack_report'] = {'broken': {'apgd_ce': 407}}
  r = reproduce.compare(counted, recount)
  assert r.verdict == reproduce.TO_A_TOLERANCE and r.largest_difference == 0.0, r
  # A change of exactly the tolerance is within it, whatever the float subtraction rounds to.
  edge = copy.deepcopy(rec)
  edge['result']['fgsm'], rec_fgsm = 0.764, copy.deepcopy(rec)
  rec_fgsm['result']['fgsm'] = 0.744
  assert reproduce.compare(rec_fgsm, edge, tolerance=0.02).verdict == reproduce.TO_A_TOLERANCE
  # One point's outcome alone is not bit for bit.
  flip = copy.deepcopy(rec)
  flip['result']['per_example']['fgsm'][0] = not flip['result']['per_example']['fgsm'][0]
  r = reproduce.compare(rec, flip)
  assert r.verdict == reproduce.TO_A_TOLERANCE and r.changed_outcomes == 1
  # Timings never count; a missing column does; a non-finite accuracy is refused.
  slow = copy.deepcopy(rec)
  slow['train_time_s'], slow['result']['ms_per_image'] = 1e9, 1e9
  assert reproduce.compare(rec, slow).verdict == reproduce.BIT_FOR_BIT
  gone = copy.deepcopy(rec)
  del gone['result']['fgsm']
  assert reproduce.compare(rec, gone).verdict == reproduce.NOT_AT_ALL
  # A record that lacks a column, or holds a string or a boolean in its place, does not reproduce.
  for tamper in (None, '0.5', True):
    older = copy.deepcopy(rec)
    if tamper is None:
      del older['result']['verified_linf']
    else:
      older['result']['verified_linf'] = tamper
    r = reproduce.compare(older, rec)
    assert r.verdict == reproduce.NOT_AT_ALL and r.unmatched == ('result.verified_linf',), tamper
    assert 'result.verified_linf' in reproduce.report('x.json', r)
  assert reproduce.compare(rec, gone, common_only=True).verdict == reproduce.BIT_FOR_BIT
  # A rerun with a column more fails, and still says how far the columns both hold moved.
  larger = copy.deepcopy(near)
  larger['result']['new_attack'] = 0.25
  r = reproduce.compare(rec, larger)
  assert r.verdict == reproduce.NOT_AT_ALL and r.unmatched == ('result.new_attack',)
  assert r.largest_common_difference == pytest.approx(0.015)
  assert r.changed['result.fgsm'] == (rec['result']['fgsm'], near['result']['fgsm'])
  record = reproduce.verdict_record('x.json', r, 0.02)
  assert record['largest_difference'] is None and record['largest_common_difference'] == pytest.approx(0.015)
  assert '1.50 points' in reproduce.report('x.json', r)
  nan = copy.deepcopy(rec)
  nan['result']['fgsm'] = float('nan')
  with pytest.raises(ValueError, match=r'result.fgsm is nan'):
    reproduce.compare(rec, nan)


@pytest.mark.long
def test_check_reproduces_reruns_a_row_bit_for_bit_on_the_same_machine(table, tmp_path):
  d, _, _ = table
  path = str(d / 'results' / 'synthetic' / 'rows' / 'regular.json')
  before = open(path).read()
  r = reproduce.check_reproduces(path, scratch=str(tmp_path), progress=False)
  assert r.verdict == reproduce.BIT_FOR_BIT, reproduce.report(path, r)
  assert open(path).read() == before and list(tmp_path.iterdir()) == []  # nothing of ours touched or left
  # A record moved by three points no longer reproduces; the report says what moved and where.
  moved = json.loads(before)
  moved['result']['clean'] -= 0.03
  moved['environment']['versions']['jax'] = '0.0.0'
  bad = tmp_path / 'moved.json'
  bad.write_text(json.dumps(moved))
  r = reproduce.check_reproduces(str(bad), progress=False)
  text = reproduce.report(str(bad), r)
  assert r.verdict == reproduce.NOT_AT_ALL and 'result.clean' in text and 'jax: 0.0.0 →' in text


def test_table1_row_records_the_arguments_it_was_given():
  import inspect

  params = set(inspect.signature(table1.table1_row).parameters)
  # Everything that decides the numbers is recorded; where files go, and progress bars, are not.
  assert params - {'row', 'dataset', 'runs_dir', 'out_dir', 'force', 'progress'} == {
    'epochs',
    'num_test',
    'suite',
    'steps_scale',
    'eot_samples',
    'seed',
    'autoattack',
    'autoattack_scale',
    'variant',
  }


def test_table1_row_records_every_argument_that_decides_its_numbers(table):
  import inspect

  _, records, _ = table
  params = set(inspect.signature(table1.table1_row).parameters)
  # Where files go and whether a progress bar shows are not recorded; every other argument is.
  assert set(records[0]['invocation']) == params - {
    'row',
    'dataset',
    'runs_dir',
    'out_dir',
    'force',
    'progress',
  }


def test_spread_reports_how_far_each_column_moved_between_configurations(table, tmp_path):
  from experiments import spread

  d, _, _ = table
  a, b = tmp_path / 'a', tmp_path / 'b'
  shutil.copytree(d / 'results', a)
  shutil.copytree(d / 'results', b)
  path = b / 'synthetic' / 'rows' / 'regular.json'
  r = json.load(open(path))
  r['result']['fgsm'] += 0.0125
  r['environment']['xla_flags'] = '--xla_other_path'
  path.write_text(json.dumps(r))
  s = spread.spread([str(a), str(b)], 'synthetic', out_dir=str(tmp_path / 'out'))
  assert s['largest_spread'] == pytest.approx(0.0125)
  assert s['rows']['regular']['columns']['fgsm']['spread'] == pytest.approx(0.0125)
  assert s['rows']['regular']['columns']['clean']['spread'] == 0
  assert s['rows']['regular']['against_first'] == [reproduce.TO_A_TOLERANCE]
  assert s['rows']['lwta']['against_first'] == [reproduce.BIT_FOR_BIT]
  assert 'XLA_FLAGS=--xla_other_path' in s['configurations'][1]
  assert 'Largest spread: 1.25 points' in open(tmp_path / 'out' / 'spread.md').read()
  r['invocation']['seed'] = 1
  path.write_text(json.dumps(r))
  with pytest.raises(ValueError, match='other settings'):
    spread.spread([str(a), str(b)], 'synthetic', out_dir=str(tmp_path / 'out'))


@pytest.mark.long
def test_eot_pgd_choice_compares_equal_work_and_names_the_stronger(table):
  """The two EOT-PGD candidates differ only in loss and schedule; each attacked point is classified
  on fresh draws; the paired counts agree with the two majority accuracies."""
  from experiments import eot_pgd_choice as choice
  from jaxrobust.models import make_logits_fn
  from jaxrobust.train import load_trained

  specs = choice.variants(0.1, num_steps=3, eot_samples=2)
  a, b = specs['ce_constant'], specs['margin_cosine']
  assert {k for k in a if a[k] != b.get(k)} == {'loss'} | (
    {'step_schedule'} if 'step_schedule' in a else set()
  )
  assert b['loss'] == 'margin' and b['step_schedule'] == 'cosine' and a['restarts'] == b['restarts'] == 2
  d = table[0]
  _, model, variables, ds = load_trained(str(d / 'runs' / 'synthetic' / 'lwta'))
  x, y = np.asarray(ds.test_images[:8], np.float32) / 255, np.asarray(ds.test_labels[:8])
  preds = choice.measure(
    make_logits_fn(model, variables), x, y, specs, key=jax.random.key(0), draws=3, batch=4
  )
  assert {k: v.shape for k, v in preds.items()} == {'ce_constant': (3, 8), 'margin_cosine': (3, 8)}
  res = choice.summarize(preds, y)
  diff = res['ce_constant']['majority'] - res['margin_cosine']['majority']
  paired = res['paired']
  assert diff * 8 == pytest.approx(
    paired['broken_only_by_margin_cosine'] - paired['broken_only_by_ce_constant']
  )
  assert res['stronger'] in specs


@pytest.mark.long
def test_sampling_attacks_choice_compares_equal_work_against_eot_pgd(table, tmp_path):
  """Every candidate runs EOT-PGD's steps, restarts and draws per step; each one's counts of points
  only it and only EOT-PGD broke agree with the two majority accuracies; the strongest of each
  kind has the lowest majority accuracy of its kind."""
  from experiments import sampling_attacks as choice

  d = table[0]
  path, rec = choice.run(
    str(d / 'runs' / 'synthetic' / 'lwta'),
    first=0,
    num_test=8,
    steps=2,
    eot=2,
    draws=3,
    low=[0.1, 0.3],
    straight=[None],
    out_dir=str(tmp_path),
  )
  assert json.loads(open(path).read())['strongest'] == rec['strongest']
  assert all(f'| {name} |' in open(path.removesuffix('.json') + '.md').read() for name in rec['candidates'])
  cands = rec['candidates']
  assert set(cands) == {
    'eot_pgd',
    'expected_probability',
    'straight_through_train',
    'low_temperature_0.1',
    'low_temperature_0.3',
  }
  for name, c in cands.items():
    a = c['attack']
    assert a['num_steps'] == 2 and a['restarts'] == 2 and a['eot_samples'] * (c['mean_probability'] or 1) == 2
    diff = rec[name]['majority'] - rec['eot_pgd']['majority']
    assert diff * 8 == pytest.approx(rec[name]['broken_only_by_eot_pgd'] - rec[name]['broken_only_by_it'])
  low = rec['strongest']['low_temperature']
  assert rec[low['variant']]['majority'] == min(rec[f'low_temperature_{t}']['majority'] for t in (0.1, 0.3))
  assert rec['strongest']['straight_through'] == {'variant': 'straight_through_train', 'temperature': None}


def test_smoothed_rows_get_a_certified_l2_column(table, monkeypatch):
  """A row trained with Gaussian noise gets its smoothed classifier's certified L2 accuracy (here
  with few draws); the table shows the column, '–' for the other rows."""
  from experiments import table1
  from experiments.report import table_markdown
  from jaxrobust.train import load_trained

  monkeypatch.setattr(table1, 'SMOOTHING', dict(radius=0.1, n0=10, n=100, alpha=0.01))
  d, records, _ = table
  _, model, variables, ds = load_trained(str(d / 'runs' / 'synthetic' / 'regular'))
  got = table1.smoothed_certificate(
    model, variables, ds.test_images[:8], ds.test_labels[:8], 0.25, key=jax.random.key(0)
  )
  assert 0.0 <= got['certified_l2'] <= 1.0 and got['certified_l2_settings']['sigma'] == 0.25
  rows = [dict(records[0], result=dict(records[0]['result'], **got)), records[1]]
  head, _, first, second = table_markdown(rows).splitlines()[:4]
  col = head.split(' | ').index('Certified L2, smoothed (lower bound)')
  assert second.split(' | ')[col] == '–' and first.split(' | ')[col] == f'{100 * got["certified_l2"]:.1f}'


def test_suite_cost_sums_the_pieces_own_seconds(tmp_path):
  from experiments import suite_cost

  rec = {'cpu': 'X', 'n_eval': 8, 'result': {'seconds': {'clean': 60.0, 'eot_square': 5400.0, 'pgd': 1740.0}}}
  cost = suite_cost.row_cost(rec)
  assert cost['hours'] == pytest.approx(2.0) and list(cost['minutes_per_attack']) == [
    'eot_square',
    'pgd',
    'clean',
  ]
  assert cost['largest'] == 'eot_square' and cost['share_of_largest'] == pytest.approx(0.75)
  assert suite_cost.row_cost({'result': {'clean': 0.9}}) is None  # a deterministic row: no pieces
  rows = tmp_path / 'rows'
  rows.mkdir()
  (rows / 'lwta.json').write_text(json.dumps(rec))
  assert set(suite_cost.main(str(rows))) == {'lwta'} and (tmp_path / 'cost.json').exists()
  suite_cost.main(str(rows), out=str(tmp_path / 'earlier_cost.json'))
  assert json.loads((tmp_path / 'earlier_cost.json').read_text())['rows']['lwta']['hours'] == pytest.approx(
    2.0
  )
  assert 'seconds_per_batch' not in json.loads((tmp_path / 'cost.json').read_text())['rows']['lwta']


def test_suite_cost_lists_each_batch_only_when_the_stored_pieces_add_up_to_the_record(tmp_path):
  from experiments import suite_cost
  from jaxrobust.evaluation.cache import PieceCache

  rec = {'cpu': 'X', 'n_eval': 8, 'result': {'seconds': {'clean': 60.0, 'eot_square': 5400.0, 'pgd': 1740.0}}}
  (tmp_path / 'rows').mkdir()
  (tmp_path / 'rows' / 'lwta.json').write_text(json.dumps(rec))
  cache = PieceCache(str(tmp_path / 'pieces' / 'lwta' / 'adaptive'), {'model': 'm'})
  for name, s in [
    ('batch0000000_clean', 60.0),
    ('batch0000000_eot_square', 5000.0),
    ('batch0000004_eot_square', 400.0),
  ]:
    cache.get(name, lambda s=s: {'seconds': s})
  # Pieces missing (PGD's 1740 s): the batches would not add up to the record, so none are listed.
  assert 'seconds_per_batch' not in suite_cost.main(str(tmp_path / 'rows'))['lwta']
  cache.get('batch0000004_pgd', lambda: {'seconds': 1740.0})
  per = suite_cost.main(str(tmp_path / 'rows'))['lwta']['seconds_per_batch']
  assert per == {'0': 5060.0, '4': 2140.0}


def test_table1_leaves_out_the_smoothed_row_that_cannot_reach_its_radius():
  """With n = 10 000 and α = 0.001, CERTIFY's largest radius is σ·Φ⁻¹(α^(1/n)): below the
  column's radius for σ = 0.25 (so that row would read 0 by construction), above it for 0.5."""
  from scipy import stats

  from experiments import table1

  s = table1.SMOOTHING
  largest = lambda sigma: sigma * stats.norm.ppf(s['alpha'] ** (1 / s['n']))  # noqa: E731
  assert largest(0.25) < s['radius'] <= largest(0.5)
  assert 'gaussian_025' not in table1.ROWS and 'gaussian_050' in table1.ROWS
  assert set(DEFENSES) - set(table1.ROWS) == {'gaussian_025'}


def test_suite_budget_compares_the_two_eot_squares_on_the_same_draws():
  """Four points, two candidates each side: the cheap EOT-Square misses point 3, which the full
  one breaks; everything else is the clean candidate. Worst cases 3/4 and 2/4 (majority), one
  point differs; costs are the sums without the other EOT-Square, per 1000 images."""
  from experiments import suite_budget

  def s(acc, win):
    return {
      'select_accuracy': np.asarray(acc, float),
      'select_margin': np.zeros(4),
      'measure_mean': np.asarray(acc, float),
      'measure_majority': np.asarray(win, bool),
    }

  scores = {
    'clean': s([1, 1, 0, 1], [1, 1, 0, 1]),
    'eot_square': s([1, 1, 0, 1], [1, 1, 0, 1]),
    suite_budget.FULL: s([1, 1, 0, 0], [1, 1, 0, 0]),
  }
  seconds = {'clean': 4.0, 'eot_square': 36.0, suite_budget.FULL: 360.0}
  out = suite_budget.compare(scores, seconds, 4)
  assert out['cheap']['worst_case'] == 0.75 and out['full']['worst_case'] == 0.5
  assert out['difference'] == pytest.approx(0.25) and out['points_that_differ'] == 1
  assert out['cheap']['core_hours_per_1000_images'] == pytest.approx(40 / 3600 * 250)
  assert out['full']['core_hours_per_1000_images'] == pytest.approx(364 / 3600 * 250)
  assert out['eot_square_speedup'] == pytest.approx(10.0)
  assert out['within_half_width'] == (0.25 < out['half_width_of_full'])
  assert 'far_draws' not in suite_budget.full_square({'name': 'square', 'far_draws': 5, 'eot_samples': 20})


def test_converged_table_gives_every_row_the_same_two_worst_case_figures():
  """A deterministic row's expected and majority worst case are both AutoAttack's accuracy (with
  the Wilson interval of 755 of 1000: 72.7–78.1 %); a stochastic record from before the estimator
  is labelled as the biased AND of votes, never shown as the headline."""
  from experiments import converged

  det = {'suite': 'autoattack', 'autoattack': 0.755}
  assert converged._worst_cell(det, 1000) == '**75.5** [72.7, 78.1] / **75.5** [72.7, 78.1]'
  old = {'suite': 'adaptive', 'worst_case': 0.7, 'worst_case_interval': [0.671, 0.728]}
  assert converged._worst_cell(old, 1000).startswith('AND of votes (biased low): 70.0')
  new = dict(old, worst_case_expected=0.72, worst_case_expected_interval=[0.7, 0.74])
  assert converged._worst_cell(new, 1000) == '**72.0** [70.0, 74.0] / **70.0** [67.1, 72.8]'


@pytest.mark.parametrize(
  'kw, match',
  [
    (dict(num_test=-1), 'num_test must be an integer >= 1, got -1'),
    (dict(num_test=0), 'num_test must be an integer >= 1'),
    (dict(eot_samples=0), 'eot_samples must be an integer >= 1'),
    (dict(convergence_n=-2), 'convergence_n must be an integer >= 0, got -2'),
    (dict(steps_scale=0.0), 'steps_scale must be a finite number > 0'),
  ],
)
def test_converged_refuses_counts_that_would_slice_the_test_set_from_its_end(kw, match, tmp_path):
  from experiments import converged

  with pytest.raises(ValueError, match=match):
    converged.run(['lwta'], 'synthetic', out_dir=str(tmp_path / 'out'), runs_dir=str(tmp_path / 'runs'), **kw)
  assert not list(tmp_path.iterdir())  # refused before anything was written


def test_a_verdict_record_is_json_with_its_numbers(table):
  _, records, _ = table
  rec = records[0]
  gone = copy.deepcopy(rec)
  del gone['result']['fgsm']
  for other, verdict in ((copy.deepcopy(rec), reproduce.BIT_FOR_BIT), (gone, reproduce.NOT_AT_ALL)):
    out = reproduce.verdict_record('x.json', reproduce.compare(rec, other), 0.02)
    assert json.loads(json.dumps(out, allow_nan=False))['verdict'] == verdict


def test_a_stochastic_rows_worst_case_is_marked_and_not_compared():
  """A stochastic row's worst case (an AND of single draws, biased low) carries the mark and the
  table says why; a deterministic row's does not, and without a stochastic row there is no note."""
  from experiments.report import AND_OF_DRAWS, AND_OF_DRAWS_NOTE

  det = {'title': 'PGD-AT', 'result': {'clean': 0.8, 'worst_case': 0.5, 'stochastic': False}}
  sto = {'title': 'LWTA', 'result': {'clean': 0.8, 'worst_case': 0.558, 'stochastic': True}}
  text = table_markdown([det, sto])
  lines = {line.split('|')[1].strip(): line for line in text.splitlines() if line.startswith('| ')}
  assert f'| 55.8 {AND_OF_DRAWS} |' in lines['LWTA (stochastic)'] and AND_OF_DRAWS not in lines['PGD-AT']
  assert AND_OF_DRAWS_NOTE in text and 'not comparable' in AND_OF_DRAWS_NOTE
  assert AND_OF_DRAWS_NOTE not in table_markdown([det])
  committed = open(
    os.path.join(os.path.dirname(__file__), '..', 'results', 'fashion_mnist', 'table1.md')
  ).read()
  assert AND_OF_DRAWS_NOTE in committed  # the committed table was written with the mark


def test_paired_comparison_closed_forms(tmp_path):
  """McNemar's exact p on 10 discordant points all one way is 2 / 2**10; the paired interval is
  the mean difference ± 1.96 of its standard error; pieces of unequal batches are refused."""
  from experiments import paired

  a = np.array([True] * 10 + [False] * 5 + [True] * 85)
  b = np.array([False] * 10 + [False] * 5 + [True] * 85)
  t = paired.mcnemar(b, a)
  assert (t['only_row'], t['only_reference']) == (0, 10) and t['p_value'] == pytest.approx(2 / 2**10)
  assert paired.mcnemar(a, a)['p_value'] == 1.0
  d = paired.paired(b, a)
  se = np.std(b.astype(float) - a, ddof=1) / np.sqrt(100)
  assert d['difference'] == pytest.approx(-0.1) and d['interval'] == pytest.approx(
    [-0.1 - 1.96 * se, -0.1 + 1.96 * se]
  )
  piece = {'value': {'estimator': {f: [0.5] for f in paired.SCORE_FIELDS}}}
  for name in ('batch0000000_clean.json', 'batch0000000_pgd.json', 'batch0000001_pgd.json'):
    (tmp_path / name).write_text(json.dumps(piece))
  with pytest.raises(ValueError, match='other batches'):
    paired.row_worst_case(str(tmp_path))


def test_added_attacks_compare_chooses_again_over_both_and_pairs_the_verdicts():
  """Closed form: six points, the previous suite leaves points 0-3 robust; an added attack breaks
  points 1 and 2 on its selection and measurement draws: the worst case after has two robust
  points fewer, both robust only before, and the added attack alone broke exactly those two."""
  from experiments.added_attacks import compare

  def cand(robust):
    r = np.asarray(robust, float)
    return {
      'select_accuracy': r,
      'select_margin': r - 0.5,
      'measure_mean': r,
      'measure_majority': r.astype(bool),
    }

  previous = {'clean': cand([1, 1, 1, 1, 1, 0]), 'pgd': cand([1, 1, 1, 1, 0, 0])}
  out = compare(previous, {'added': cand([1, 0, 0, 1, 1, 1])})
  assert out['before']['majority'] == pytest.approx(4 / 6) and out['after']['majority'] == pytest.approx(
    2 / 6
  )
  assert out['majority_after_minus_before']['difference'] == pytest.approx(-2 / 6)
  assert (
    out['mcnemar_majority']['robust_only_before'] == 2 and out['mcnemar_majority']['robust_only_after'] == 0
  )
  assert out['added_alone']['added']['broken_only_by_it'] == 2
  assert out['chosen_after']['added'] == 2 and sum(out['chosen_after'].values()) == 6
  assert 'reference' not in out
  # Paired with a reference robust on points 0, 1 and 4: before, the row is robust alone on 2 and 3
  # and the reference alone on 4; after, the row alone on 3, the reference alone on 1 and 4.
  ref = np.array([1, 1, 0, 0, 1, 0], bool)
  against = compare(previous, {'added': cand([1, 0, 0, 1, 1, 1])}, ('pgd_at', ref))['reference']
  assert against['label'] == 'pgd_at'
  assert against['before']['mcnemar_majority'] == {'only_row': 2, 'only_reference': 1, 'p_value': 1.0}
  assert against['after']['mcnemar_majority']['only_row'] == 1
  assert against['after']['mcnemar_majority']['only_reference'] == 2
  assert against['after']['majority_minus_reference']['difference'] == pytest.approx(-1 / 6)
  assert against['before']['majority_minus_reference']['difference'] == pytest.approx(1 / 6)


def test_added_attacks_rerun_reads_the_study_and_writes_elsewhere(tmp_path, monkeypatch):
  """With `previous_dir`, the row's record and the previous suite's pieces are read from the
  committed study and the comparison is written under `out_dir` alone: the study is left as it was."""
  import types

  from experiments import added_attacks, paired

  study, out = tmp_path / 'study', tmp_path / 'rerun'
  rows, pieces = study / 'synthetic' / 'rows', study / 'synthetic' / 'pieces' / 'lwta' / 'adaptive'
  rows.mkdir(parents=True)
  pieces.mkdir(parents=True)
  (rows / 'lwta.json').write_text(
    json.dumps({'model_digest': 'abc', 'n_eval': 4, 'result': {'eot_samples': 2}})
  )
  robust = {'clean': [1, 1, 1, 0], 'pgd': [1, 1, 0, 0]}
  for name, r in robust.items():
    value = dict.fromkeys(paired.SCORE_FIELDS, r)
    (pieces / f'batch0000000_{name}.json').write_text(json.dumps({'value': {'estimator': value}}))
  before = sorted(p.name for p in study.rglob('*'))
  data = types.SimpleNamespace(test_images=np.zeros((4, 2, 2, 1), np.uint8), test_labels=np.zeros(4, int))
  monkeypatch.setattr(added_attacks, 'load_model', lambda w: (types.SimpleNamespace(seed=0), None, {}, data))
  monkeypatch.setattr(added_attacks, 'digest', lambda v: 'abc')
  added = {'added': {f: np.asarray([1, 0, 0, 0], float) for f in paired.SCORE_FIELDS}}
  monkeypatch.setattr(added_attacks, 'added_scores', lambda *a, **k: (added, {'added': 1.0}))
  result = added_attacks.run(
    'lwta', dataset='synthetic', weights='w', out_dir=str(out), previous_dir=str(study), progress=False
  )
  assert result['before']['majority'] == pytest.approx(2 / 4) and result['after'][
    'majority'
  ] == pytest.approx(1 / 4)
  assert result['previous'] == str(study)
  assert json.loads((out / 'synthetic' / 'added' / 'lwta.json').read_text())['after'][
    'majority'
  ] == pytest.approx(1 / 4)
  assert (out / 'synthetic' / 'added' / 'lwta.md').exists()
  assert sorted(p.name for p in study.rglob('*')) == before


def test_added_attacks_agreement_pairs_a_rerun_with_the_study_point_by_point(tmp_path):
  """Closed form: the study's attack leaves points 0-2 of 4 robust, the rerun's points 0-1: rerun −
  study is −25 points by majority, one point robust only in the study; an attack the rerun has half
  done is compared on the batch both hold, and with no batch in common the comparison is refused."""
  from experiments import added_attacks, paired
  from jaxrobust.evaluation.cache import PieceCache

  def store(root, attack, batches):
    cache = PieceCache(str(root / 'd' / 'pieces' / 'lwta' / 'added' / attack), {'attack': attack})
    for i, robust in batches.items():
      value = {'estimator': dict.fromkeys(paired.SCORE_FIELDS, robust)}
      cache.get(f'batch{i:07d}', lambda v=value: v)

  study, rerun = tmp_path / 'study', tmp_path / 'rerun'
  (study / 'd' / 'rows').mkdir(parents=True)
  (study / 'd' / 'rows' / 'lwta.json').write_text(json.dumps({'n_eval': 4}))
  store(study, 'a', {0: [1, 1], 2: [1, 0]})
  store(study, 'b', {0: [1, 0], 2: [1, 1]})
  store(rerun, 'b', {2: [0, 1]})
  store(rerun, 'c', {0: [1, 1]})  # not in the study
  out = added_attacks.agreement('lwta', dataset='d', rerun_dir=str(rerun), study_dir=str(study))
  assert list(out['attacks']) == ['b'] and out['n_row'] == 4
  b = out['attacks']['b']
  assert b['n'] == 2 and b['batches'] == ['batch0000002']
  assert (b['study']['majority'], b['rerun']['majority']) == (1.0, 0.5)
  store(rerun, 'a', {0: [1, 1], 2: [0, 0]})
  out = added_attacks.agreement('lwta', dataset='d', rerun_dir=str(rerun), study_dir=str(study))
  a = out['attacks']['a']
  assert a['n'] == 4 and (a['study']['majority'], a['rerun']['majority']) == (0.75, 0.5)
  assert a['majority_rerun_minus_study']['difference'] == pytest.approx(-0.25)
  assert a['mcnemar_majority'] == {'robust_only_rerun': 0, 'robust_only_study': 1, 'p_value': 1.0}
  assert '| a | 4 | 75.0 / 75.0 | 50.0 / 50.0 | -25.0' in added_attacks.agreement_markdown(out)
  empty = tmp_path / 'empty'
  store(empty, 'a', {})
  with pytest.raises(ValueError, match='no added attack has a batch'):
    added_attacks.agreement('lwta', dataset='d', rerun_dir=str(empty), study_dir=str(study))


def test_converged_agreement_pairs_each_attack_and_the_worst_case_of_a_rerun(tmp_path):
  """Closed form, every score a point's robustness so that the worst case is the AND of the
  candidates: the study's worst case over its adaptive `a` and added `b` is [1, 0 | 1, 0]; a rerun
  holding `b` on batch 0 only is compared there (+50 points, 2 images); complete, it is
  [1, 1 | 0, 0] (no change, one point robust only in each); a candidate only the rerun holds is
  left out, and a rerun with nothing in common is refused naming its folder."""
  from experiments import converged, paired
  from jaxrobust.evaluation.cache import PieceCache

  def store(folder, name_of, batches):
    cache = PieceCache(str(folder), {'folder': str(folder.name)})
    for i, robust in batches.items():
      value = {'estimator': dict.fromkeys(paired.SCORE_FIELDS, robust)}
      cache.get(name_of(i), lambda v=value: v)

  study, rerun = tmp_path / 'study', tmp_path / 'rerun'
  pieces = lambda root: root / 'd' / 'pieces' / 'lwta'  # noqa: E731
  adaptive = lambda root, name, batches: store(  # noqa: E731
    pieces(root) / 'adaptive', lambda i: f'batch{i:07d}_{name}', batches
  )
  adaptive(study, 'a', {0: [1, 1], 2: [1, 0]})
  store(pieces(study) / 'added' / 'b', lambda i: f'batch{i:07d}', {0: [1, 0], 2: [1, 1]})
  adaptive(rerun, 'a', {0: [1, 1], 2: [0, 0]})
  adaptive(rerun, 'b', {0: [1, 1]})
  adaptive(rerun, 'c', {0: [0, 0], 2: [0, 0]})
  out = converged.agreement('lwta', 'd', rerun_dir=str(rerun), study_dir=str(study))
  assert sorted(out['attacks']) == ['a', 'b']
  w = out['worst_case']
  assert w['candidates'] == ['a', 'b'] and w['batches'] == ['batch0000000'] and w['n'] == 2
  assert (w['study']['majority'], w['rerun']['majority']) == (0.5, 1.0)
  assert w['majority_rerun_minus_study']['difference'] == pytest.approx(0.5)
  adaptive(rerun, 'b', {2: [1, 1]})
  w = converged.agreement('lwta', 'd', rerun_dir=str(rerun), study_dir=str(study))['worst_case']
  assert w['n'] == 4 and (w['study']['majority'], w['rerun']['majority']) == (0.5, 0.5)
  assert w['mcnemar_majority'] == {'robust_only_rerun': 1, 'robust_only_study': 1, 'p_value': 1.0}
  assert json.loads((rerun / 'd' / 'agreement' / 'lwta.json').read_text())['worst_case']['n'] == 4
  assert (
    '| **worst case** (over the 2 above) | 4 | 50.0 / 50.0 | 50.0 / 50.0 | +0.0'
    in (rerun / 'd' / 'agreement' / 'lwta.md').read_text()
  )
  with pytest.raises(ValueError, match='empty.*no adaptive piece'):
    converged.agreement('lwta', 'd', rerun_dir=str(tmp_path / 'empty'), study_dir=str(study))


@pytest.mark.long
def test_added_attacks_score_every_batch_and_read_their_pieces_back(tmp_path, monkeypatch):
  """The suite's attacks on the sampling of a (tiny) LWTA network, scored per batch; a second run
  reads every piece back without calling the model; a deterministic model is refused."""
  import jax.numpy as jnp

  from experiments import added_attacks
  from jaxrobust.evaluation import EvalSpec
  from jaxrobust.models import create_model

  model = create_model('small_cnn_lwta', num_classes=4, width=1)
  variables = model.init(
    {'params': jax.random.key(0), 'stochastic': jax.random.key(1)}, jnp.zeros((1, 8, 8, 1))
  )
  x = np.asarray(jax.random.randint(jax.random.key(2), (6, 8, 8, 1), 0, 256), np.uint8)
  y = np.arange(6) % 4
  spec = EvalSpec(
    dataset='synthetic', suite='adaptive', eot_samples=2, steps_scale=0.02, batch_size=4, measurement_draws=3
  )
  run = lambda: added_attacks.added_scores(  # noqa: E731
    model, variables, x, y, spec, key=jax.random.key(3), cache_dir=str(tmp_path), progress=False
  )
  scores, seconds = run()
  assert (
    set(scores)
    == {'eot_expected_probability', 'eot_straight_through', 'transfer_low_temperature'}
    == set(seconds)
  )
  for s in scores.values():
    assert {k: np.shape(v) for k, v in s.items()} == dict.fromkeys(
      ('select_accuracy', 'select_margin', 'measure_mean', 'measure_majority'), (6,)
    )

  def no_model(*_):
    raise AssertionError('a piece was computed again')

  monkeypatch.setattr(added_attacks, 'candidate_scores', no_model)
  again, _ = run()
  assert {k: {f: list(v) for f, v in s.items()} for k, s in again.items()} == {
    k: {f: list(v) for f, v in s.items()} for k, s in scores.items()
  }
  # One attack alone reads its own pieces back (each attack has a cache of its own).
  alone, _ = added_attacks.added_scores(
    model,
    variables,
    x,
    y,
    spec,
    key=jax.random.key(3),
    cache_dir=str(tmp_path),
    only=['eot_straight_through'],
    progress=False,
  )
  assert list(alone) == ['eot_straight_through']
  monkeypatch.undo()
  with pytest.raises(ValueError, match=r"\['eot_pgd'\] are not attacks of this model"):
    added_attacks.added_scores(
      model, variables, x, y, spec, key=jax.random.key(3), cache_dir=None, only=['eot_pgd']
    )
  with pytest.raises(ValueError, match='not declared stochastic'):
    added_attacks.added_scores(
      create_model('small_cnn', num_classes=4), variables, x, y, spec, key=jax.random.key(3), cache_dir=None
    )
