"""The benchmark scripts run (tiny sizes, no torch), so they cannot rot. Their figures are never
asserted: speed is measured by the benchmarks themselves, side by side."""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import train
from tests.configs import synthetic_training_config


def _run(monkeypatch, capsys, module, *args):
  monkeypatch.setattr(sys, 'argv', ['benchmark', *(['--torch=0'] if 'torch' in module.FLAGS else []), *args])
  module.main()
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{')]
  # The environment line leads the first row a process prints, whichever test that is.
  lines = [row for row in lines if set(row) != {'environment'}]
  assert lines
  return lines


def test_attacks_benchmark_runs(monkeypatch, capsys):
  from benchmarks import attacks

  rows = _run(monkeypatch, capsys, attacks, '--models=small_cnn', '--batch=4', '--repeats=1')
  summary = rows[-1]
  assert summary['measure'] == 'summary' and summary['speedup_vs_torchattacks'] is None
  assert 'no ratio was measured' in summary['note']


@pytest.mark.long
def test_autoattack_benchmark_runs(monkeypatch, capsys, tmp_path):
  from benchmarks import autoattack

  c = synthetic_training_config()
  c.data.synthetic = dict(num_train=64, num_test=8, image_shape=(8, 8, 1), num_classes=4)
  c.train.num_steps = 2
  train.train_and_evaluate(c, str(tmp_path), progress=False)
  rows = _run(
    monkeypatch,
    capsys,
    autoattack,
    f'--workdir={tmp_path}',
    '--n_cnn=4',
    '--n_wrn=0',
    '--num_steps=3',
    '--num_queries=10',
  )
  row = rows[-1]
  assert row['model'] == 'small_cnn' and 'no ratio was measured' in row['note']
  assert 'speedup_vs_reference' not in row  # nothing to compare with
  # each attack of the standard version ran and was timed
  assert set(row['jaxrobust_seconds_by_attack']) == {'apgd_ce', 'apgd_t', 'fab_t', 'square'}
  with pytest.raises(SystemExit, match='--libraries'):
    _run(monkeypatch, capsys, autoattack, f'--workdir={tmp_path}', '--libraries=reference', '--n_wrn=0')


def test_the_references_attacks_are_timed_one_by_one(monkeypatch):
  """benchmarks.parity.autoattack wraps each attack object of the reference AutoAttack: the split
  adds each call's time to its attack's name, and the wrapped calls return what they returned.
  The clock is a fake one that each attack advances by a known amount (no wall time)."""
  import types

  from benchmarks.parity import autoattack as parity_torch
  from benchmarks.parity.autoattack import REFERENCE_PARTS, _time_parts

  clock = [0.0]
  monkeypatch.setattr(parity_torch.time, 'perf_counter', lambda: clock[0])

  def part(seconds, value):
    def perturb(x, y):
      clock[0] += seconds
      return value + x + y

    return types.SimpleNamespace(perturb=perturb)

  aa = types.SimpleNamespace(**{attr: part(0.25 * (i + 1), i) for i, attr in enumerate(REFERENCE_PARTS)})
  split = {}
  _time_parts(aa, split)
  assert aa.fab.perturb(1, 2) == 2 + 3 and aa.fab.perturb(0, 0) == 2  # fab is the third part
  assert aa.square.perturb(0, 0) == 3
  assert split == {'fab_t': 2 * 0.75, 'square': 1.0}


@pytest.mark.long
def test_cpu_findings_benchmark_runs(monkeypatch, capsys, tmp_path):
  from benchmarks import cpu_findings

  c = synthetic_training_config()
  c.data.synthetic = dict(
    num_train=64, num_test=8, image_shape=(8, 8, 1), num_classes=10
  )  # APGD-T: 9 targets
  c.train.num_steps = 2
  train.train_and_evaluate(c, str(tmp_path), progress=False)
  args = (
    '--side=8',
    '--batch=4',
    '--repeats=1',
    '--eigen=0',
    f'--aa_workdir={tmp_path}',
    '--aa_n=4',
    '--aa_steps=2',
  )
  rows = _run(monkeypatch, capsys, cpu_findings, *args)
  found = {r.get('finding') for r in rows}
  assert {'rolled_loop', 'rolled_loop_nn_conv', 'apgd_t_nn_conv', 'fab_t_nn_conv'} <= found
  # the EOT finding reads the same trained model: both loop forms timed, their first calls apart
  rows = _run(monkeypatch, capsys, cpu_findings, '--repeats=1', f'--eot_workdir={tmp_path}', '--eot_n=4')
  (eot,) = [r for r in rows if r.get('finding') == 'eot_straight_line']
  assert set(eot['first_call_s']) == {'straight_line', 'rolled'} and eot['rolled_s'] > 0


def test_train_vs_torch_benchmark_runs(monkeypatch, capsys):
  from benchmarks import train_vs_torch
  from jaxrobust.data import load_synthetic

  # 8×8 synthetic images: 28×28 convolution gradients are slow under the test suite's XLA settings.
  tiny = lambda: load_synthetic(num_train=16, num_test=8, image_shape=(8, 8, 1), num_classes=10)  # noqa: E731
  monkeypatch.setattr(train_vs_torch, 'load_fashion_mnist', tiny)
  rows = _run(
    monkeypatch,
    capsys,
    train_vs_torch,
    '--seeds=0,0',
    '--epochs=1',
    '--num_eval=8',
    '--variants=torch_init',
    '--batch=8',
  )
  (head,) = [r for r in rows if 'epochs' in r]
  runs = [r for r in rows if 'side' in r]
  (note,) = [r for r in rows if 'note' in r]
  assert (head['epochs'], head['seeds'], head['torch']) == (1.0, [0, 0], False)
  assert [r['side'] for r in runs] == ['jaxrobust (torch_init)'] * 2
  for r in runs:  # accuracies in %
    assert all(0.0 <= r[k] <= 100.0 for k in ('clean', 'fgsm', 'pgd20')) and r['train_s'] > 0
  # The same seed trains and attacks to the same bits (the comparison's runs are reproducible).
  assert [runs[0][k] for k in ('clean', 'fgsm', 'pgd20')] == [runs[1][k] for k in ('clean', 'fgsm', 'pgd20')]
  assert 'no ratio was measured' in note['note']


@pytest.mark.long
def test_eot_benchmark_runs(monkeypatch, capsys):
  from benchmarks import eot

  rows = _run(monkeypatch, capsys, eot, '--batch=2', '--samples=3', '--steps=1', '--repeats=1', '--side=8')
  assert [r['model'] for r in rows] == ['small_cnn_lwta', 'small_cnn_pni'] and all(
    r['ratio'] > 0 for r in rows
  )
  args = (
    '--chunks=0,1',
    '--batch=2',
    '--samples=2',
    '--steps=2',
    '--repeats=1',
    '--side=8',
    '--models=small_cnn_pni',
  )
  rows = _run(monkeypatch, capsys, eot, *args)
  assert rows[0]['whole_batch_s'] > 0 and rows[0]['chunk1_s'] > 0
  # the ratio with the EOT gradient in chunks says which chunk it used
  args = ('--microbatch=1', '--batch=2', '--samples=2', '--steps=1', '--repeats=1', '--side=8')
  rows = _run(monkeypatch, capsys, eot, *args, '--models=small_cnn_lwta')
  assert rows[0]['eot_microbatch'] == 1 and rows[0]['ratio'] > 0


def test_parity_table_prints_a_speed_up_only_for_one_run():
  """Accuracies compare across runs; a speed-up needs both sides measured in the same run."""
  from benchmarks.parity.autoattack import parity_table

  from benchmarks.parity.autoattack import EQUAL_WORK

  piece = lambda acc, s, run: dict(accuracy=acc, seconds=s, run=run, cpu='X (2 cores)', equal_work=EQUAL_WORK)  # noqa: E731
  table = parity_table(
    {
      'apgd-ce_reference': piece(0.60, 100.0, 'a'),
      'apgd-ce_jaxrobust': piece(0.61, 50.0, 'a'),
      'square_reference': piece(0.70, 300.0, 'a'),
      'square_jaxrobust': piece(0.69, 100.0, 'b'),
      'fab-t_reference': piece(0.65, 10.0, 'a'),  # no jaxrobust side yet: no line
      'apgd-t_reference': piece(0.66000002, 10.0, 'a'),
      'apgd-t_jaxrobust': piece(0.66, 5.0, 'a'),
    }
  )
  lines = table.splitlines()
  assert '| apgd-ce | 60.0 | 61.0 | +1.0 | 100 | 50 | 2.00× | X (2 cores) |' in lines
  assert '| square | 70.0 | 69.0 | -1.0 | 300 | 100 | not measured in one run | X (2 cores) |' in lines
  assert not any(line.startswith('| fab-t') for line in lines)
  assert '| apgd-t | 66.0 | 66.0 | +0.0 | 10 | 5 | 2.00× | X (2 cores) |' in lines  # never '-0.0'
  assert lines[0].startswith('Both sides: 1 restart, 100 iterations, 9 target classes, 5000 Square queries')
  # a reference measured before it was held to equal work (5 APGD restarts) is marked
  old = parity_table(
    {
      'apgd-ce_reference': dict(piece(0.6, 100.0, 'a'), equal_work=None),
      'apgd-ce_jaxrobust': piece(0.6, 50.0, 'a'),
    }
  )
  assert '| apgd-ce * | 60.0 |' in old


def test_the_reference_is_held_to_the_work_jaxrobust_does():
  """The reference's 'custom' version keeps its constructor's 5 APGD-CE and FAB restarts; the
  parity run sets every attack object to one restart, 100 iterations, 9 targets, 5000 queries."""
  from types import SimpleNamespace

  from benchmarks.parity.autoattack import EQUAL_WORK, _equal_work

  aa = SimpleNamespace(
    apgd=SimpleNamespace(n_restarts=5, n_iter=100),
    apgd_targeted=SimpleNamespace(n_restarts=1, n_iter=100, n_target_classes=9),
    fab=SimpleNamespace(n_restarts=5, n_iter=100, n_target_classes=9),
    square=SimpleNamespace(n_restarts=1, n_queries=5000),
  )
  _equal_work(aa)
  assert (
    {p.n_restarts for p in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square)} == {EQUAL_WORK['restarts']} == {1}
  )
  assert aa.apgd.n_iter == aa.fab.n_iter == 100 and aa.square.n_queries == 5000


def test_square_with_the_references_windows_is_a_parity_component():
  """`--attacks=square-reference-windows` runs jaxrobust's Square with reference_windows=True (a
  spec the custom AutoAttack builds) against the reference's plain Square; not run by default."""
  from benchmarks.parity.autoattack import COMPONENTS, DEFAULT_ATTACKS, REFERENCE_ATTACK, run_ours

  assert REFERENCE_ATTACK['square-reference-windows'] == 'square'
  assert 'square-reference-windows' not in DEFAULT_ATTACKS and 'square' in DEFAULT_ATTACKS
  W = np.asarray(jax.random.normal(jax.random.key(1), (16, 3)))
  f = jax.tree_util.Partial(lambda W, x, key: x.reshape(x.shape[0], -1) @ W, jnp.asarray(W))
  x = np.asarray(jax.random.uniform(jax.random.key(2), (6, 4, 4, 1)))
  y = np.argmax(x.reshape(6, -1) @ W, -1)
  split = {}
  acc, _ = run_ours(f, x, y, 0.3, names=[COMPONENTS['square-reference-windows']], split=split)
  assert 0 <= acc < 1 and list(split) == ['square']


def test_fab_l2_parity_reports_the_median_distance():
  """The FAB-L2 parity statistic: the median distance over all points (unbroken = infinitely far),
  and on a linear model whose minimum distances are known, the benchmark's FAB-T run reaches them
  (never below) within 5 %; the table prints the relative difference."""
  from benchmarks.parity.autoattack import median_l2, parity_table, run_fab_l2_ours

  x = np.zeros((4, 2), np.float32)
  x_adv = np.array([[3, 0], [0, 4], [3, 4], [1, 0]], np.float32)
  assert median_l2(x, x_adv, [True, True, True, False]) == 4.5  # median of 3, 4, 5, inf

  # Class 1 wins once pixel 0 passes 0.5: the minimum L2 distance of x is 0.5 - x0, inside the box.
  x0 = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.45], np.float32)
  x = np.full((6, 2, 2, 1), 0.5, np.float32)
  x[:, 0, 0, 0] = x0
  y = np.zeros(6, np.int32)

  def f(v, key):
    del key
    z = 10.0 * (v.reshape(len(v), -1)[:, 0] - 0.5)
    return jnp.stack([jnp.zeros_like(z), z, z - 5.0], -1)

  med, seconds = run_fab_l2_ours(f, x, y, batch_size=4, num_steps=20, num_targets=2)
  exact = float(np.median(0.5 - x0))
  assert exact - 1e-5 <= med <= 1.05 * exact and seconds > 0

  piece = lambda d, s, run: dict(median_l2=d, seconds=s, run=run)  # noqa: E731
  table = parity_table(
    {'fab-l2_reference': piece(0.5, 100.0, 'a'), 'fab-l2_jaxrobust': piece(0.505, 50.0, 'a')}
  )
  assert 'reference 0.5000, jaxrobust 0.5050 (+1.0 %)' in table and 'speed-up 2.00×' in table


def test_parity_chunks_alternate_resume_and_add_up(tmp_path):
  """Chunked parity measurements: the sides alternate inside each chunk, the accuracy over all
  images is the chunks' weighted mean, an interrupted run recomputes only the missing chunks, and
  a side stored whole (before chunks existed) is read as it is."""
  from benchmarks.parity.autoattack import EQUAL_WORK, measure_in_chunks, parity_table
  from jaxrobust.evaluation.cache import PieceCache

  correct = np.arange(10) % 3 == 0  # 4 of 10 images stay robust
  calls = []

  def side(name, fail_at=None):
    def fn(a, b):
      if a == fail_at:
        raise RuntimeError('interrupted')
      calls.append((name, a, b))
      return float(correct[a:b].mean()), 1.0

    return fn

  def measured(fn):
    acc, s = fn()
    return {'accuracy': acc, 'seconds': s, 'run': 'r', 'cpu': 'cpu', 'equal_work': EQUAL_WORK}

  cache = PieceCache(str(tmp_path), {'model': 'm'})
  with pytest.raises(RuntimeError):
    measure_in_chunks(
      cache, 'fab-t', {'reference': side('ref'), 'jaxrobust': side('ours', fail_at=8)}, 10, 4, measured
    )
  assert calls == [('ref', 0, 4), ('ours', 0, 4), ('ref', 4, 8), ('ours', 4, 8), ('ref', 8, 10)]
  calls.clear()
  out = measure_in_chunks(
    cache, 'fab-t', {'reference': side('ref'), 'jaxrobust': side('ours')}, 10, 4, measured
  )
  assert calls == [('ours', 8, 10)]  # the stored chunks are not measured again
  for piece in out.values():
    assert piece['accuracy'] == pytest.approx(0.4) and piece['seconds'] == 3.0 and piece['chunks'] == 3
  assert '| fab-t | 40.0 | 40.0 | +0.0 | 3 | 3 | 1.00× | cpu |' in parity_table(
    {f'fab-t_{k}': v for k, v in out.items()}
  )
  # A whole-set measurement from before chunks existed is kept; the other side is chunked.
  cache.get('square_reference', lambda: {'accuracy': 0.5, 'seconds': 9.0, 'run': 'old', 'cpu': 'cpu'})
  calls.clear()
  out = measure_in_chunks(
    cache, 'square', {'reference': side('ref'), 'jaxrobust': side('ours')}, 10, 5, measured
  )
  assert calls == [('ours', 0, 5), ('ours', 5, 10)] and out['reference']['accuracy'] == 0.5
  assert out['jaxrobust']['run'] == 'r'


def test_cpu_model_names_the_cores_a_pinned_process_may_use():
  """A timing taken on one pinned core must not read as the whole machine's."""
  import os
  import subprocess

  if os.cpu_count() < 2:
    pytest.skip('needs two cores')
  code = (
    'import os; os.sched_setaffinity(0, {0}); from jaxrobust.machine import cpu_model; print(cpu_model())'
  )
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
  assert out.strip().endswith(f'(1 of {os.cpu_count()} cores)')


def test_adaptive_budget_per_point_costs_and_run(monkeypatch, capsys, tmp_path):
  """A surviving point costs queries × draws forward passes in EOT-Square and steps × restarts ×
  draws gradients in EOT-PGD and AA-rand; the script runs on a trained stochastic model."""
  from benchmarks import adaptive_budget

  cost = adaptive_budget.per_point_seconds(forward_s=1e-3, gradient_s=2e-3, draws=20)
  assert cost == pytest.approx({'eot_square': 20.0, 'eot_pgd': 8.0, 'aa_rand': 8.0})
  c = synthetic_training_config()
  c.model.name = 'small_cnn_lwta'
  c.data.synthetic = dict(num_train=64, num_test=8, image_shape=(8, 8, 1), num_classes=4)
  c.train.num_steps = 2
  train.train_and_evaluate(c, str(tmp_path), progress=False)
  (row,) = _run(
    monkeypatch, capsys, adaptive_budget, f'--workdir={tmp_path}', '--batch=4', '--eot=2', '--repeats=1'
  )
  assert set(row['seconds_per_surviving_point']) == {'eot_square', 'eot_pgd', 'aa_rand'}
  assert set(row['ms_per_image_and_draw']) >= {
    'stochastic_forward',
    'eot_gradient',
    'eot_square_query_chunked',
  }


def test_benchmarks_refuse_an_option_they_do_not_take(monkeypatch, capsys):
  """A mistyped option stops the run at once, named, instead of being ignored for hours; so do a
  stray word and a value of the wrong type. Each parse starts from the defaults, and --help lists
  the options."""
  from benchmarks import train_step
  from benchmarks.common import parse_flags
  from benchmarks.parity import autoattack as parity_torch

  monkeypatch.setattr(sys, 'argv', ['benchmark', '--num_tests=100'])
  with pytest.raises(SystemExit, match=r"Unknown command line flag 'num_tests'.*options: .*--num_test="):
    parity_torch.main()
  monkeypatch.setattr(sys, 'argv', ['benchmark', '--num_test=100', 'stray'])
  with pytest.raises(SystemExit, match=r'not understood: stray; options: .*--num_test='):
    parity_torch.main()
  with pytest.raises(SystemExit, match='--num_test=ten'):
    parse_flags(parity_torch.FLAGS, ['benchmark', '--num_test=ten'])
  with pytest.raises(SystemExit, match='--chunk=0'):
    parse_flags(parity_torch.FLAGS, ['benchmark', '--chunk=0'])
  assert parse_flags(train_step.FLAGS, ['benchmark', '--batch=7']).batch == 7
  assert parse_flags(train_step.FLAGS, ['benchmark']).batch == 128
  with pytest.raises(SystemExit) as stop:
    parse_flags(train_step.FLAGS, ['benchmark', '--help'])
  assert stop.value.code == 0 and '--repeats' in capsys.readouterr().out


def test_foolbox_benchmark_splits_jaxrobusts_call_into_parts_that_add_up(monkeypatch, capsys):
  """The three shares of jaxrobust's call (checks and dispatch, the steps, what the program pays
  once) add up to the call; foolbox's side is timed when it is installed, named when not."""
  from benchmarks import foolbox_pgd

  (row,) = _run(monkeypatch, capsys, foolbox_pgd, '--batch=4', '--repeats=1')
  shares = row['share_checks_and_dispatch'] + row['share_steps'] + row['share_once_per_call']
  assert shares == pytest.approx(1.0)
  assert 'both sides' in row['work'] and row['batch'] == 4
  assert (row['speedup_vs_foolbox'] is None) == ('foolbox' not in row['seconds']) == (row['note'] is not None)
  assert row['load'].startswith('quiet')
  (loaded,) = _run(monkeypatch, capsys, foolbox_pgd, '--batch=4', '--repeats=1', '--load=1')
  assert loaded['load'] == '1 busy-looping process(es) beside it'


@pytest.mark.long
def test_accelerator_benchmark_runs_at_tiny_sizes(monkeypatch, capsys):
  """The GPU/TPU user's first command, on the 4 simulated CPU devices: every measurement in both
  dtypes, each naming its device."""
  from benchmarks import accelerator

  rows = _run(monkeypatch, capsys, accelerator, '--tiny=1', '--batch=8', '--train_steps=3')
  measured = {(r['measure'], r['dtype']) for r in rows}
  assert measured == {
    (m, d) for m in ('pgd10', 'autoattack', 'lwta_train', 'lwta_inference') for d in ('float32', 'bfloat16')
  }
  assert all(r['devices'] == 4 and r['backend'] == 'cpu' and r['device_kind'] for r in rows)
  assert all(r['study_ms_per_image'] == 166.0 for r in rows if r['measure'] == 'lwta_inference')
