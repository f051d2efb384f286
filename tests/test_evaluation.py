"""Evaluation: accuracy over datasets (clean, robust, worst case), non-finite logits, the
deterministic surrogate and the ε grid."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from experiments.report import table_markdown
from jaxrobust import attacks as A
from jaxrobust import evaluation as E
from jaxrobust.models import create_model

KEY = jax.random.key(0)


def linear(W):
  return jax.tree_util.Partial(lambda W, x, key: x.reshape(x.shape[0], -1) @ W, W)


@pytest.fixture(scope='module')
def data():
  x = jax.random.uniform(jax.random.key(1), (60, 4, 4, 1))
  W = jax.random.normal(jax.random.key(2), (16, 3))
  y = jnp.argmax(x.reshape(60, -1) @ W, -1)
  y = y.at[:15].set((y[:15] + 1) % 3)  # a quarter misclassified
  return linear(W), np.asarray(x), np.asarray(y)


def test_robust_accuracy_worst_case_is_per_example(data):
  f, x, y = data
  atk = {
    'fgsm': functools.partial(A.fgsm, epsilon=0.05),
    'pgd': functools.partial(A.pgd, epsilon=0.05, num_steps=5),
  }
  r = E.robust_accuracy(f, x, y, atk, key=KEY, batch_size=25)
  assert r.n == len(x) and r.non_finite == 0
  pe, acc = r.per_example, r.accuracy
  np.testing.assert_array_equal(pe['worst_case'], pe['clean'] & pe['fgsm'] & pe['pgd'])
  assert acc['worst_case'] <= min(acc['clean'], acc['fgsm'], acc['pgd'])
  assert acc['clean'] == pytest.approx(0.75)


def test_non_finite_logits_are_never_correct(data):
  """A model whose logits are NaN for some points: argmax(NaN) is 0, and the labels of those
  points are 0, yet none of them counts as correct, clean or robust."""
  f, x, _ = data
  y = np.zeros(len(x), np.int32)
  nan_rows = jnp.arange(len(x)) % 2 == 0

  def broken(x, key):
    out = jnp.zeros((x.shape[0], 3)).at[:, 0].set(1.0)
    return jnp.where(nan_rows[: x.shape[0], None], jnp.nan, out)

  r = E.robust_accuracy(
    broken, x, y, {'noise': functools.partial(A.uniform_noise, epsilon=0.01)}, key=KEY, batch_size=60
  )
  assert r.accuracy['clean'] == pytest.approx(0.5) and r.accuracy['noise'] == pytest.approx(0.5)
  assert r.non_finite == 30
  with pytest.raises(E.NonFiniteLogitsError, match='non-finite logits on 30 of 60'):
    E.clean_accuracy(broken, x, y, key=KEY, batch_size=60)


def test_clean_accuracy_and_epsilon_grid_agree_at_zero(data):
  f, x, y = data
  clean = E.clean_accuracy(f, x, y, key=KEY, batch_size=16)
  grid = E.pgd_accuracy_over_epsilons(f, x, y, [0.0, 0.05, 0.5], key=KEY, num_steps=3, batch_size=16)
  assert grid[0] == pytest.approx(clean) == pytest.approx(0.75)
  assert grid[2] <= grid[1] <= grid[0]


def test_evaluate_model_refuses_a_model_with_non_finite_logits():
  m = create_model('small_cnn', num_classes=4)
  x = np.zeros((8, 8, 8, 1), np.uint8)
  v = m.init(KEY, jnp.zeros((1, 8, 8, 1)))
  v = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), v)
  with pytest.raises(E.NonFiniteLogitsError, match='refusing to evaluate'):
    E.evaluate_model(m, v, x, np.zeros(8, np.int32), E.EvalSpec(dataset='synthetic'), key=KEY)


def test_transfer_attack_settings_are_stored_once():
  spec = E.transfer_attack('standard', 'fashion_mnist', steps_scale=0.5)
  assert spec == dict(name='pgd', epsilon=0.1, step_size=0.1 / 8, num_steps=10)
  assert E.transfer_attack('study', 'cifar10')['epsilon'] == 0.3


def test_surrogate_is_the_noise_free_twin():
  m = create_model('small_cnn_lwta', num_classes=4)
  s = E.deterministic_surrogate(m)
  assert s.deterministic and not m.deterministic
  x = jax.random.uniform(KEY, (2, 8, 8, 1))
  v = m.init({'params': KEY, 'stochastic': KEY}, x)
  np.testing.assert_array_equal(s.apply(v, x), s.apply(v, x, rngs={'stochastic': jax.random.key(9)}))


def test_verified_accuracy_is_a_lower_bound_beside_the_attacks():
  # A linear model through Dense: its interval bound is exact, so a point is verified exactly when
  # its worst-case margin over the box is positive; PGD cannot break a verified point.
  import flax.linen as nn

  class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      return nn.Dense(3)(x.reshape(x.shape[0], -1))

  m = Linear()
  x = np.asarray(jax.random.randint(jax.random.key(1), (40, 4, 4, 1), 0, 256), np.uint8)
  v = m.init(KEY, jnp.zeros((1, 4, 4, 1)))
  y = np.asarray(jnp.argmax(m.apply(v, jnp.asarray(x, jnp.float32) / 255), -1))
  eps = 0.02
  from jaxrobust.evaluation.evaluator import verified_linf_accuracy

  got = verified_linf_accuracy(m, v, x, y, eps, batch_size=16)
  W, b = np.asarray(v['params']['Dense_0']['kernel'], np.float64), np.asarray(v['params']['Dense_0']['bias'])
  xf = x.reshape(40, -1) / 255.0
  lo, hi = np.clip(xf - eps, 0, 1), np.clip(xf + eps, 0, 1)
  c, r = (lo + hi) / 2, (hi - lo) / 2
  z_lo, z_hi = c @ W + b - r @ np.abs(W), c @ W + b + r @ np.abs(W)
  true_lo = z_lo[np.arange(40), y]
  others = np.where(np.eye(3, dtype=bool)[y], -np.inf, z_hi).max(1)
  assert got == pytest.approx(np.mean(true_lo > others))
  f = jax.tree_util.Partial(lambda v, z, k: m.apply(v, z), v)
  pgd = E.robust_accuracy(f, x, y, {'pgd': functools.partial(A.pgd, epsilon=eps, num_steps=10)}, key=KEY)
  assert got <= pgd.accuracy['pgd'] + 1e-9


def test_the_table_says_a_random_model_has_no_certificate():
  row = {'title': 'LWTA', 'result': {'clean': 0.8, 'verified_linf': None, 'stochastic': True}}
  det = {'title': 'CNN', 'result': {'clean': 0.9, 'verified_linf': 0.25, 'stochastic': False}}
  lines = table_markdown([row, det]).splitlines()
  assert 'Verified L∞ (lower bound)' in lines[0]
  assert lines[2].split('|')[-4].strip() == 'none (random)'
  assert lines[3].split('|')[-4].strip() == '25.0'


def test_an_eval_spec_is_checked_once_and_resolved_into_one_plan():
  """Every bad setting is named by the spec; the plan holds the suite's attacks, one transfer
  attack (the figures draw the same one), and budgets scaled by the one rule."""
  from jaxrobust.models.traits import DETERMINISTIC, LWTA_NETWORK, NOISY

  for bad, match in (
    (dict(suite='autoatack'), "unknown suite 'autoatack'"),
    (dict(steps_scale=float('nan')), 'steps_scale must be a finite number'),
    (dict(eot_samples=2.0), 'eot_samples must be an integer'),
    (dict(epsilon_grid=(0.1, -1)), 'epsilon_grid must be finite numbers >= 0, got -1'),
    (dict(suite='adaptive', with_autoattack=True), 'with_autoattack is for'),
    (dict(measurement_draws=0), 'measurement_draws must be an integer >= 1'),
    (dict(dataset='svhn'), "no standard budgets for dataset 'svhn'"),
  ):
    with pytest.raises(ValueError, match=match):
      E.EvalSpec(**{'dataset': 'fashion_mnist', **bad})
  spec = E.EvalSpec(
    dataset='fashion_mnist',
    steps_scale=0.5,
    epsilon_grid=[0, 0.1],
    with_autoattack=True,
    autoattack_scale=0.1,
  )
  assert spec.epsilon_grid == (0.0, 0.1)  # frozen and hashable
  det, sto = E.build_evaluation(spec, DETERMINISTIC), E.build_evaluation(spec, LWTA_NETWORK)
  assert 'eot_pgd' not in det.attacks and {'eot_pgd', 'eot_apgd'} <= set(sto.attacks)
  # Both threats of a stochastic model get EOT: the L2 ones at the suite's PGD-L2 ε, same steps.
  assert not {'eot_pgd_l2', 'eot_apgd_l2'} & set(det.attacks)
  assert sto.attacks['eot_pgd_l2'] == dict(sto.attacks['pgd_l2'], eot_samples=spec.eot_samples)
  assert sto.attacks['eot_apgd_l2']['norm'] == 'l2'
  assert sto.attacks['eot_apgd_l2']['epsilon'] == sto.attacks['pgd_l2']['epsilon'] == 1.5
  # ... and its sampling at both threats, each attack with the work of the suite's EOT-PGD at that
  # threat (LWTA: three of them per threat).
  three = {'eot_expected_probability', 'eot_straight_through', 'transfer_low_temperature'}
  assert det.sampling == {} and set(sto.sampling) == three | {n + '_l2' for n in three}
  for suffix, eot in (('', sto.attacks['eot_pgd']), ('_l2', sto.attacks['eot_pgd_l2'])):
    assert sto.sampling['eot_straight_through' + suffix].attack == eot
    assert sto.sampling['transfer_low_temperature' + suffix].attack == eot
    expected = sto.sampling['eot_expected_probability' + suffix]
    assert expected.attack == dict(eot, eot_samples=1) and expected.mean_probability == spec.eot_samples
  assert sto.sampling['eot_straight_through_l2'].attack['name'] == 'pgd_l2'
  assert sto.sampling['eot_straight_through_l2'].attack['epsilon'] == 1.5
  noisy = E.build_evaluation(spec, NOISY)
  assert set(noisy.sampling) == {'eot_expected_probability', 'eot_expected_probability_l2'}
  assert det.transfer == E.transfer_attack('standard', 'fashion_mnist', steps_scale=0.5)
  assert isinstance(det, E.ListedPlan) and det.autoattack is not None and sto.autoattack is not None
  assert (det.autoattack.version, sto.autoattack.version) == ('standard', 'rand')
  assert (det.autoattack.steps, det.autoattack.queries, det.grid) == (10, 500, E.GridSettings((0.0, 0.1), 5))
  assert det.autoattack.epsilon == 0.1 and det.linf == E.linf_budget('standard', 'fashion_mnist')
  without = E.build_evaluation(
    dataclasses.replace(spec, with_autoattack=False, epsilon_grid=None), DETERMINISTIC
  )
  assert without.autoattack is None and without.grid is None  # asked for, or absent: never another suite's
  assert det.attacks['apgd_ce']['num_steps'] == E.scaled(100, 0.5) == 50
  adaptive = E.build_evaluation(
    E.EvalSpec(dataset='fashion_mnist', suite='adaptive', steps_scale=0.5), LWTA_NETWORK
  )
  assert isinstance(adaptive, E.AdaptivePlan) and adaptive.autoattack.version == 'rand'
  assert adaptive.autoattack.steps == 50 and adaptive.attacks['eot_square']['num_queries'] == 500
  aa = E.build_evaluation(E.EvalSpec(dataset='fashion_mnist', suite='autoattack_rand'), DETERMINISTIC)
  assert isinstance(aa, E.AutoAttackPlan) and aa.autoattack == E.AutoAttackSettings('rand', 0.1, 100, 5000)
  assert [E.scaled(n, s) for n, s in ((20, 0.01), (5, 0.5), (7, 0.5), (100, 1.0))] == [1, 2, 4, 100]


@pytest.mark.long
def test_evaluate_model_returns_a_typed_result_whose_record_is_the_results_files_layout():
  """The typed result's fields agree with each other (the worst case is the per-point AND, the
  record carries what reports read); a randomised model's result says it has no certificate."""
  m = create_model('small_cnn', num_classes=4)
  x = np.asarray(jax.random.randint(KEY, (8, 8, 8, 1), 0, 256), np.uint8)
  v = m.init(KEY, x[:1] / np.float32(255))
  y = np.asarray(m.apply(v, x / np.float32(255)).argmax(-1))
  spec = E.EvalSpec(dataset='synthetic', steps_scale=0.05, epsilon_grid=(0.0, 0.1))
  res = E.evaluate_model(m, v, x, y, spec, key=KEY)
  assert isinstance(res, E.SuiteResult) and not res.stochastic and res.n == 8
  assert res.accuracy['clean'] == 1.0  # labelled by the model itself
  per = {k: np.asarray(p) for k, p in res.per_example.items()}
  assert np.array_equal(per['worst_case'], np.logical_and.reduce([per[k] for k in per if k != 'worst_case']))
  assert res.accuracy['worst_case'] == pytest.approx(per['worst_case'].mean())
  assert res.grid.accuracy[0] == 1.0 and res.verified_linf is not None and res.ms_per_image > 0
  record = res.to_record()
  assert {'clean', 'worst_case', 'per_example', 'n', 'non_finite', 'suite', 'attacks', 'epsilon_grid'} <= set(
    record
  )
  assert {'grid_steps', 'accuracy_vs_epsilon', 'verified_linf', 'verified_note', 'ms_per_image'} <= set(
    record
  )
  assert 'clean_all_of_k_draws' not in record and 'autoattack' not in record
  json.dumps(record)  # a record is JSON


def test_accuracy_refuses_labels_no_logit_can_match_and_floats_outside_the_domain():
  """A label outside the classes would count as the model's error, and floats in 0..255 as
  inputs far outside [0, 1]: both are refused by name instead of becoming an accuracy."""
  f = lambda x, key: x.reshape(x.shape[0], -1)[:, :3]  # noqa: E731  3 classes
  x = np.full((4, 2, 2, 1), 0.5, np.float32)
  assert E.clean_accuracy(f, x, np.array([0, 1, 2, 0]), key=KEY) >= 0.0
  for labels in (np.array([0, 1, 7, 0]), np.array([0, -1, 0, 0])):
    with pytest.raises(ValueError, match=r'labels must lie in \[0, 3\)'):
      E.clean_accuracy(f, x, labels, key=KEY)
  with pytest.raises(ValueError, match='labels must be integers'):
    E.clean_accuracy(f, x, np.zeros(4, np.float32), key=KEY)
  with pytest.raises(ValueError, match=r'images are floats in \[200.0, 200.0\]'):
    E.clean_accuracy(f, np.full((4, 2, 2, 1), 200.0, np.float32), np.zeros(4, np.int32), key=KEY)


class _NoisyGuess(nn.Module):
  """Ignores its input: answers class 0 with probability q and class 1 otherwise, a fresh draw
  per point and per call (a stochastic model whose robust accuracy is exactly q, since no input
  changes its answer)."""

  q: float = 0.8
  deterministic: bool | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    w = self.param('w', nn.initializers.zeros, (x[0].size, 3))
    if self.deterministic or deterministic:
      right = jnp.ones((x.shape[0],), bool)
    else:
      right = jax.random.uniform(self.make_rng('stochastic'), (x.shape[0],)) < self.q
    return jax.nn.one_hot(jnp.where(right, 0, 1), 3) * 5.0 + x.reshape(x.shape[0], -1) @ w


@pytest.mark.long
def test_a_stochastic_models_listed_suite_selects_and_measures_its_worst_case():
  """A model that is right with probability q = 0.8 on every call, whatever its input: its robust
  accuracy is 0.8. The AND of the suite's single-draw columns counts prediction noise as breaks
  (about 0.8^k over k candidates); the selected-and-measured worst case, measured on fresh draws,
  is right in expectation: 0.8 within 4 standard errors, every candidate among those it chose
  from, AutoAttack's points included."""
  from jaxrobust.models import declare
  from jaxrobust.models.traits import NOISY

  model = declare(_NoisyGuess(), NOISY)
  n = 200
  x = np.asarray(jax.random.uniform(KEY, (n, 4, 4, 1)), np.float32)
  y = np.zeros(n, np.int32)
  v = model.init({'params': KEY, 'stochastic': KEY}, x[:1])
  spec = E.EvalSpec(dataset='synthetic', steps_scale=0.05, with_autoattack=True, autoattack_scale=0.05)
  res = E.evaluate_model(model, v, x, y, spec, key=KEY)
  assert res.stochastic and res.selected is not None
  w = res.selected
  assert set(w.names) == {'clean', 'autoattack'} | set(res.attacks) | {'transfer'}
  se = np.sqrt(0.8 * 0.2 / (n * spec.measurement_draws))
  assert abs(w.expected - 0.8) <= 4 * se, w.expected
  assert res.accuracy['worst_case'] < 0.8**3  # the AND of single draws: biased far below
  record = res.to_record()
  assert record['worst_case_selected_expected'] == w.expected and record['worst_case_selected'] == w.majority
  assert sum(record['worst_case_selected_chosen'].values()) == n
  assert len(record['per_example']['worst_case_selected']) == n
  json.dumps(record)


def test_the_table_shows_a_selected_worst_case_and_pairs_it_only_when_both_threats_had_eot():
  """A stochastic row with a selected worst case shows it (‡, expected in parentheses) instead of
  the AND of single draws. Paired with PGD-AT point by point only when its suite ran EOT attacks
  at the L2 ε and attacked the sampling: closed form on four points, the row robust on 0 and 2, PGD-AT on 0, 1 and 3."""
  ref = {
    'row': 'pgd_at',
    'title': 'PGD-AT',
    'result': {'clean': 1.0, 'worst_case': 0.75, 'per_example': {'worst_case': [True, True, False, True]}},
  }
  result = {
    'stochastic': True,
    'clean': 1.0,
    'worst_case': 0.25,
    'worst_case_selected': 0.5,
    'worst_case_selected_expected': 0.45,
    'selection_draws': 10,
    'measurement_draws': 10,
    'attacks': {'pgd_l2': {}, 'eot_pgd': {}},
    'per_example': {'worst_case_selected': [True, False, True, False]},
  }
  single_draw_l2 = table_markdown([ref, {'row': 'lwta', 'title': 'LWTA', 'result': result}])
  assert '| LWTA (stochastic) | 100.0 | 50.0 ‡ (45.0) |' in single_draw_l2
  assert '†' not in single_draw_l2 and 'chosen on 10 draws' in single_draw_l2
  assert (
    'Not comparable' in single_draw_l2 and 'for LWTA' in single_draw_l2 and 'Paired' not in single_draw_l2
  )
  result['attacks'] = dict(result['attacks'], eot_pgd_l2={}, eot_apgd_l2={})
  still = table_markdown([ref, {'row': 'lwta', 'title': 'LWTA', 'result': result}])
  assert 'Not comparable' in still  # without the attacks on the sampling
  result['attacks'] = dict(result['attacks'], eot_expected_probability={})
  linf_only = table_markdown([ref, {'row': 'lwta', 'title': 'LWTA', 'result': result}])
  assert 'Not comparable' in linf_only  # the sampling attacked at the L∞ ε only
  result['attacks'] = dict(result['attacks'], eot_expected_probability_l2={})
  with_eot = table_markdown([ref, {'row': 'lwta', 'title': 'LWTA', 'result': result}])
  assert 'Not comparable' not in with_eot and 'Both threats are attacked with EOT' in with_eot
  assert (
    'LWTA − PGD-AT: -25.0 points' in with_eot and 'only in the reference: 1 / 2, McNemar p = 1' in with_eot
  )
