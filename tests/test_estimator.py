"""The select-then-measure worst case (jaxrobust.evaluation.estimator) against the biased AND of
independent majority votes, on randomized models whose per-point accuracy is known in closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from jaxrobust.evaluation import select_and_measure
from jaxrobust.evaluation.adaptive import prediction_over_draws
from jaxrobust.evaluation.estimator import draw_keys, mean_interval, wilson_interval

KEY = jax.random.key(0)
N, D, SIGMA = 1000, 4, 1.0
SCALE, SHIFT = 2.5, 0.75  # features u = SCALE·x - SHIFT of pixels x in [0, 1]


@pytest.fixture(scope='module')
def noisy_linear():
  """Two classes; logit of class 1 = w·u - b + σ·z with z ~ N(0, 1) per draw and point, where
  u = SCALE·x - SHIFT maps the pixel range [0, 1] to a wider feature range. A point of label 1 is
  right on a draw with probability Φ((w·u - b)/σ): the offsets below spread the points over
  per-draw accuracies of about 0.5 to 0.95."""
  rng = np.random.default_rng(0)
  w = np.array([1.0, -0.5, 0.25, 0.75], np.float32)
  u = rng.uniform(0.2, 0.8, (N, D)).astype(np.float32)
  margins = rng.uniform(0.0, 1.6, N).astype(np.float32)  # the wanted w·u - b, per point
  # b is shared, so shift each point along w to reach its margin.
  b = 0.5
  u = u + ((margins + b - u @ w) / (w @ w))[:, None] * w[None]
  x = ((u + SHIFT) / SCALE).astype(np.float32)  # pixels in [0, 1]
  assert 0.1 < x.min() and x.max() < 0.9
  y = np.ones(N, np.int32)

  def f(x, key):
    z = jax.random.normal(key, (x.shape[0],))
    s = (SCALE * x - SHIFT) @ jnp.asarray(w) - b + SIGMA * z
    return jnp.stack([jnp.zeros_like(s), s], -1)

  return f, w, b, x, y


def _per_point_accuracy(w, b, x):
  return norm.cdf(((SCALE * x - SHIFT) @ w - b) / SIGMA)


def test_null_attacks_leave_the_clean_estimate_and_the_old_and_falls(noisy_linear):
  """Nine 'attacks' that return x unchanged: the new worst case equals the clean estimate within
  its sampling error; the AND of independent majority votes falls visibly below it."""
  f, w, b, x, y = noisy_linear
  candidates = {'clean': x, **{f'null{i}': x for i in range(8)}}
  est = select_and_measure(f, candidates, y, key=KEY)
  truth = float(_per_point_accuracy(w, b, x).mean())  # the clean expected accuracy, exactly
  sd = float(np.sqrt(np.var(est.per_point, ddof=1) / N))
  # The old statistic: each attack's majority vote on its own independent draws, ANDed.
  vote_keys = jax.random.split(jax.random.key(1), 9)  # independent of KEY, one per attack's vote
  votes = [prediction_over_draws(f, x, y, k, 10)['majority'] for k in vote_keys]
  old = float(np.logical_and.reduce(votes).mean())
  clean_majority = float(votes[0].mean())
  msg = f'new expected {est.expected:.3f} (±{sd:.3f}), exact clean {truth:.3f}; old AND {old:.3f}, one vote {clean_majority:.3f}'
  assert abs(est.expected - truth) <= 4 * sd, msg
  assert abs(est.majority - clean_majority) <= 4 * np.sqrt(clean_majority * (1 - clean_majority) / N) * 1.5, (
    msg
  )
  assert old < clean_majority - 0.1, msg  # the bias this estimator removes
  lo, hi = est.expected_interval
  assert lo <= truth <= hi or abs(est.expected - truth) <= 4 * sd, msg


def test_known_answer_the_measured_accuracy_of_the_chosen_candidates(noisy_linear):
  """An L∞ step against w lowers every point's accuracy to Φ((w·x - ε‖w‖₁ - b)/σ). Whatever
  each point's choice, the measurement on fresh draws estimates the chosen candidates' exact
  expected accuracy within its interval (4σ), and the attack is chosen where it is clearly worse."""
  f, w, b, x, y = noisy_linear
  eps = 0.04  # in pixels: 0.1 in the features u
  attacked = (x - eps * np.sign(w)[None]).astype(np.float32)
  est = select_and_measure(
    f, {'clean': x, 'linf': attacked}, y, key=KEY, selection_draws=10, measurement_draws=20
  )
  exact = np.where(est.chosen == 0, _per_point_accuracy(w, b, x), _per_point_accuracy(w, b, attacked))
  sd = float(np.sqrt(np.sum(exact * (1 - exact) / 20)) / N)  # binomial noise of the measurement
  assert abs(est.expected - exact.mean()) <= 4 * sd, (est.expected, exact.mean(), sd)
  assert (est.chosen == 1).mean() > 0.6  # SCALE·ε‖w‖₁ = 0.25 lowers every point: mostly chosen
  # Never better than measuring the attack everywhere would be, beyond noise.
  assert est.expected <= float(_per_point_accuracy(w, b, x).mean())


def test_selection_and_measurement_keys_are_disjoint_and_counted():
  draws = draw_keys(KEY, 10, 12)
  sel = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in draws.selection}
  mea = {tuple(np.asarray(jax.random.key_data(k)).tolist()) for k in draws.measurement}
  assert len(sel) == 10 and len(mea) == 12 and not (sel & mea)
  with pytest.raises(ValueError, match='selection_draws and measurement_draws must be >= 1'):
    draw_keys(KEY, 0, 10)


def test_a_deterministic_model_gets_its_exact_worst_case():
  """No noise: selection and measurement coincide, and a point is robust only if every candidate
  is classified right."""
  W = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
  f = lambda x, key: x @ W  # noqa: E731
  x = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]], np.float32)
  y = np.array([0, 0, 1], np.int32)
  moved = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]], np.float32)  # breaks point 1 only
  est = select_and_measure(
    f, {'clean': x, 'moved': moved}, y, key=KEY, selection_draws=2, measurement_draws=3
  )
  assert est.per_point.tolist() == [1.0, 0.0, 1.0] and est.majority == pytest.approx(2 / 3)
  assert est.chosen[1] == 1
  with pytest.raises(ValueError, match="candidate 'moved' has shape"):
    select_and_measure(f, {'clean': x, 'moved': moved[:2]}, y, key=KEY)
  with pytest.raises(ValueError, match='at least one candidate'):
    select_and_measure(f, {}, y, key=KEY)


def test_non_finite_logits_on_some_draws_are_refused_not_counted_as_breaks():
  """A model that returns NaN on about one draw in two: every draw-counting path raises instead
  of scoring those draws as wrong (which would read as attack success)."""
  from jaxrobust.evaluation import NonFiniteLogitsError
  from jaxrobust.evaluation.estimator import candidate_scores

  def f(x, key):
    broken = jax.random.uniform(key) < 0.5
    logits = jnp.stack([jnp.zeros(x.shape[0]), x.sum(-1)], -1)
    return jnp.where(broken, jnp.nan, logits)

  x, y = np.ones((6, 2), np.float32), np.ones(6, np.int32)
  with pytest.raises(
    NonFiniteLogitsError, match='candidate_scores: the model gives non-finite logits on 6 of 6'
  ):
    candidate_scores(f, x, y, draw_keys(KEY, 10, 10))
  with pytest.raises(NonFiniteLogitsError, match='prediction_over_draws: the model gives non-finite'):
    prediction_over_draws(f, x, y, KEY, 20)
  with pytest.raises(NonFiniteLogitsError, match='candidate_scores'):
    select_and_measure(f, {'clean': x}, y, key=KEY)


def _scores(n, **changes):
  s = {f: np.full(n, 0.5) for f in ('select_accuracy', 'select_margin', 'measure_mean')}
  s['measure_majority'] = np.ones(n, bool)
  return {**s, **changes}


@pytest.mark.parametrize(
  'scores, match',
  [
    ({}, 'scores is empty'),
    (
      {'clean': _scores(3, measure_mean=np.array([0.5, np.nan, 0.5]))},
      r"\['measure_mean'\] holds non-finite",
    ),
    ({'clean': _scores(3), 'pgd': _scores(4)}, r"scores\['pgd'\]\['select_accuracy'\] has shape \(4,\)"),
    ({'clean': {k: v for k, v in _scores(3).items() if k != 'select_margin'}}, "has no 'select_margin'"),
  ],
)
def test_worst_case_names_scores_it_cannot_use(scores, match):
  from jaxrobust.evaluation.estimator import worst_case

  with pytest.raises(ValueError, match=match):
    worst_case(scores)


@pytest.mark.parametrize(
  'call, match',
  [
    (lambda: wilson_interval(12, 10), 'k=12, n=10'),
    (lambda: wilson_interval(0, -5), 'k=0, n=-5'),
    (lambda: wilson_interval(0.5, 10), 'k must be an integer count, got 0.5'),
    (lambda: wilson_interval(5, 10.0), 'n must be an integer count, got 10.0'),
    (lambda: wilson_interval(True, 10), 'k must be an integer count, got True'),
    (lambda: mean_interval(np.array([0.5, np.nan])), 'finite'),
    (lambda: mean_interval(np.array([0.5, 3.0])), r'in \[0, 1\]'),
  ],
)
def test_intervals_refuse_impossible_counts_and_values(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_pixels_in_0_255_are_scaled_or_refused_as_in_every_entry_point():
  """uint8 pixels are read as k/255 (as clean_accuracy reads them); int64 pixels and floats
  outside [0, 1] are refused by name instead of being measured as they are."""
  W = jnp.array([[1.0, -1.0], [-1.0, 1.0]])
  f = lambda x, key: (x - 0.5) @ W  # noqa: E731  right for label 0 when x0 > x1
  pixels = np.array([[230, 25], [150, 100], [50, 200]], np.uint8)
  y = np.array([0, 0, 1], np.int32)
  est = select_and_measure(f, {'clean': pixels}, y, key=KEY, selection_draws=1, measurement_draws=1)
  scaled = select_and_measure(
    f, {'clean': pixels / np.float32(255)}, y, key=KEY, selection_draws=1, measurement_draws=1
  )
  assert est.per_point.tolist() == scaled.per_point.tolist() == [1.0, 1.0, 1.0]
  for bad, match in (
    (pixels.astype(np.int64), 'dtype int64'),
    (pixels.astype(np.float32), r'floats in \[25.0, 230.0\]'),
  ):
    with pytest.raises(ValueError, match=f"candidate 'clean': images .*{match}"):
      select_and_measure(f, {'clean': bad}, y, key=KEY)
    with pytest.raises(ValueError, match=match):
      prediction_over_draws(f, bad, y, KEY, num_draws=2)


def test_no_points_or_a_zero_batch_size_is_refused_by_name():
  f = lambda x, key: x  # noqa: E731
  x, y = np.full((2, 2), 0.5, np.float32), np.array([0, 1])
  with pytest.raises(ValueError, match='batch_size must be an integer >= 1, got 0'):
    select_and_measure(f, {'clean': x}, y, key=KEY, batch_size=0)
  with pytest.raises(ValueError, match='labels is empty'):
    select_and_measure(f, {'clean': x[:0]}, y[:0], key=KEY)
