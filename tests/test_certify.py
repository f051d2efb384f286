"""Certified bounds: interval bounds against closed forms and against every point an attack,
random sampling or the box's corners reach; randomized smoothing against linear classifiers whose
smoothed classifier is known in closed form, and its error rates against their exact values."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxrobust.attacks import pgd
from jaxrobust.certify import (
  ABSTAIN,
  Interval,
  certified_accuracy,
  class_counts,
  clopper_pearson_lower,
  interval_bounds,
  linf_box,
  propagate_box,
  smooth_certify,
  smooth_predict,
  smoothed_soft_logits,
  verified,
)
from jaxrobust.models import create_model

# ------------------------------------------------------------------------------ intervals


def test_an_affine_layer_is_bounded_exactly():
  rng = np.random.default_rng(0)
  w, b = rng.normal(size=(12, 5)), rng.normal(size=5)
  x, eps = rng.uniform(size=(4, 12)), 0.05
  dense = nn.Dense(5)
  variables = {'params': {'kernel': jnp.asarray(w, jnp.float32), 'bias': jnp.asarray(b, jnp.float32)}}
  out = interval_bounds(dense.apply, variables, x.astype(np.float32), eps, bounds=(-10.0, 10.0))
  # Closed form in float64: the centre through W, the radius through |W|.
  np.testing.assert_allclose(out.lower, x @ w + b - eps * np.abs(w).sum(0), atol=1e-5)
  np.testing.assert_allclose(out.upper, x @ w + b + eps * np.abs(w).sum(0), atol=1e-5)


def test_the_box_is_clipped_to_the_input_domain():
  ident = lambda v, x: x
  out = interval_bounds(ident, {}, jnp.array([[0.0, 0.5, 1.0]]), 0.1)
  np.testing.assert_allclose(out.lower, [[0.0, 0.4, 0.9]], atol=1e-7)
  np.testing.assert_allclose(out.upper, [[0.1, 0.6, 1.0]], atol=1e-7)


class Arithmetic(nn.Module):
  """A network that uses the interval rules a CNN does not: tanh, square, abs, division by a
  bounded value, rsqrt, subtraction of two bounded values, sigmoid, integer powers."""

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    h = nn.Dense(16)(x)
    a, b = jnp.tanh(h), jnp.square(h) + jnp.abs(h) ** 3
    c = a / (2.0 + nn.sigmoid(h)) - b * jax.lax.rsqrt(1.0 + h * h)
    return nn.Dense(4)(jnp.concatenate([c, jnp.maximum(a, b) - jnp.minimum(a, 0.2)], -1))


def _raise_logit(logits, j):
  return jnp.take_along_axis(logits, j[:, None], -1)[:, 0]


def _lower_logit(logits, j):
  return -_raise_logit(logits, j)


def _reached_points(f, x, eps, key):
  """Outputs of f at random points of the box, at its corners, and at PGD's maxima and minima
  of each output."""
  n_out = f(x).shape[-1]
  pts = [x, jnp.clip(x - eps, 0, 1), jnp.clip(x + eps, 0, 1)]
  for k in jax.random.split(key, 20):
    pts.append(jnp.clip(x + jax.random.uniform(k, x.shape, minval=-eps, maxval=eps), 0, 1))
    pts.append(jnp.clip(x + eps * jax.random.rademacher(k, x.shape, jnp.float32), 0, 1))
  g = lambda z, k: f(z)
  for j in range(n_out):
    for loss in (_raise_logit, _lower_logit):  # the output index travels as y: one program each
      pts.append(pgd(g, key, x, jnp.full(x.shape[0], j), epsilon=eps, num_steps=20, loss=loss))
  return jnp.stack([f(p) for p in pts])


@pytest.mark.long
@pytest.mark.parametrize('name', ['small_cnn', 'wrn_tiny', 'arithmetic'])
def test_bounds_contain_every_reached_point(name):
  key = jax.random.key(3)
  x = jax.random.uniform(key, (3, 28, 28, 1) if name != 'wrn_tiny' else (3, 32, 32, 3))
  model = Arithmetic() if name == 'arithmetic' else create_model(name, mean=(0.3,), std=(0.4,))
  variables = model.init(jax.random.key(1), x)
  if name == 'wrn_tiny':  # BatchNorm with running statistics that are not the identity
    stats_ = jax.tree.map(
      lambda a: 0.5 + jax.random.uniform(jax.random.key(2), a.shape), variables['batch_stats']
    )
    variables = dict(variables, batch_stats=stats_)
  f = lambda z: model.apply(variables, z)
  eps = 0.03
  box = jax.jit(lambda v, z: interval_bounds(model.apply, v, z, eps))(variables, x)
  reached = _reached_points(f, x, eps, key)
  scale = 1e-5 * (1.0 + jnp.abs(reached).max())
  assert bool((reached >= box.lower - scale).all()), float((box.lower - reached).max())
  assert bool((reached <= box.upper + scale).all()), float((reached - box.upper).max())
  # and the bounds are not vacuous: they tighten to the point as ε → 0
  tight = interval_bounds(model.apply, variables, x, 0.0)
  np.testing.assert_allclose(tight.lower, f(x), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(tight.upper, f(x), rtol=1e-4, atol=1e-4)


def test_a_primitive_without_a_rule_is_refused_by_name():
  with pytest.raises(NotImplementedError, match='sort'):
    propagate_box(lambda x: jnp.sort(x, -1), Interval(jnp.zeros((1, 3)), jnp.ones((1, 3))))
  with pytest.raises(NotImplementedError, match='integer_pow'):  # 1/x³ jumps at 0: no monotone rule
    propagate_box(lambda x: x**-3, Interval(-jnp.ones((1, 3)), jnp.ones((1, 3))))
  with pytest.raises(NotImplementedError, match='two bounded operands'):
    propagate_box(lambda x: x @ x.T, Interval(jnp.zeros((2, 2)), jnp.ones((2, 2))))


def test_negative_or_nonfinite_epsilon_is_refused():
  for eps in (-0.1, float('nan')):
    with pytest.raises(ValueError, match='epsilon'):
      interval_bounds(lambda v, x: x, {}, jnp.zeros((1, 2)), eps)
    with pytest.raises(ValueError, match='epsilon'):  # the public box builder too: inverted box
      linf_box(jnp.full((1, 2), 0.5), eps)


def test_verified_means_every_point_of_the_box_is_classified_y():
  lower = jnp.array([[1.0, -1.0, 0.0], [1.0, 0.5, 0.0]])
  upper = jnp.array([[2.0, 0.9, 0.5], [2.0, 1.5, 0.2]])
  # example 0: true 0 has lower 1.0 > every other upper (0.9, 0.5); example 1: 1.5 > 1.0
  assert verified(Interval(lower, upper), jnp.array([0, 0])).tolist() == [True, False]


@pytest.mark.long
def test_bounds_differentiate_and_vmap():
  model = create_model('small_cnn')
  x = jax.random.uniform(jax.random.key(0), (2, 28, 28, 1))
  variables = model.init(jax.random.key(1), x)
  g = jax.grad(lambda v: interval_bounds(model.apply, v, x, 0.01).upper.sum())(variables)
  assert all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(g))
  per = jax.vmap(lambda z: interval_bounds(model.apply, variables, z[None], 0.01).upper[0])(x)
  np.testing.assert_allclose(
    per, interval_bounds(model.apply, variables, x, 0.01).upper, rtol=1e-4, atol=1e-4
  )


# ------------------------------------------------------------------------------ smoothing
SIGMA = 0.25


def _linear(w, b):
  """Binary linear classifier (logits [−s, s], s = w·x + b) and its point's signed distance."""
  w = jnp.asarray(w, jnp.float32)

  def logits_fn(x, key):
    s = x.reshape(x.shape[0], -1) @ w + b
    return jnp.stack([-s, s], -1)

  return logits_fn


def _points(distances, w, b):
  """Points whose signed distance to the hyperplane w·x + b = 0 is given (unit w)."""
  w = np.asarray(w) / np.linalg.norm(w)
  base = np.full(w.shape, 0.5, np.float32) - (0.5 * w.sum() + b) * w  # on the plane
  return (base[None] + np.asarray(distances)[:, None] * w[None]).astype(np.float32)


W = np.array([0.6, -0.8, 0.0, 0.0], np.float32)  # unit norm


def test_the_certified_radius_never_exceeds_the_exact_one_and_approaches_it():
  d = np.linspace(0.05, 0.6, 12)
  x, f = _points(d, W, 0.1), _linear(W, 0.1)
  exact = d  # for a linear binary classifier, σ·Φ⁻¹(p_A) is the distance to the hyperplane
  gaps = []
  for n in (1_000, 100_000):
    cert = smooth_certify(f, jax.random.key(0), x, sigma=SIGMA, n0=100, n=n, alpha=0.001, draws_per_pass=1000)
    assert (cert.prediction == 1).all()
    assert (cert.radius <= exact + 1e-6).all(), (cert.radius, exact)
    gaps.append(float(np.mean(exact - cert.radius)))
  assert gaps[1] < gaps[0] / 2, gaps
  # The gap at n = 100 000 is what the Clopper–Pearson bound costs at the true p_A.
  p = stats.norm.cdf(d / SIGMA)
  expected = d - SIGMA * stats.norm.ppf(clopper_pearson_lower(np.round(p * 100_000), 100_000, 0.001))
  assert abs(gaps[1] - expected.mean()) < 0.01, (gaps[1], expected.mean())


def test_a_three_class_interval_classifier_is_certified_below_its_closed_form():
  # class 0 below −t, 1 between, 2 above +t, along the unit direction W: the middle class's
  # smoothed probability is Φ((t − s)/σ) − Φ((−t − s)/σ).
  t = 0.4
  w = jnp.asarray(W)

  def f(x, key):
    s = x.reshape(x.shape[0], -1) @ w
    return jnp.stack([-(s + t), jnp.minimum(s + t, t - s), s - t], -1)

  d = np.linspace(-0.3, 0.3, 7)
  x = _points(d, W, 0.0)
  cert = smooth_certify(
    f, jax.random.key(1), x, sigma=SIGMA, n0=100, n=20_000, alpha=0.001, draws_per_pass=1000
  )
  p_a = stats.norm.cdf((t - d) / SIGMA) - stats.norm.cdf((-t - d) / SIGMA)
  assert (cert.prediction == 1).all()
  assert (cert.radius <= SIGMA * stats.norm.ppf(p_a) + 1e-6).all()


def test_false_certifications_and_abstentions_match_their_exact_rates():
  # 400 independent trials at one point with p_A = Φ(d/σ) = 0.6, n = 100, α = 0.05.
  d = SIGMA * stats.norm.ppf(0.6)
  trials, n, alpha = 400, 100, 0.05
  x = np.repeat(_points([d], W, 0.0), trials, 0)
  cert = smooth_certify(_linear(W, 0.0), jax.random.key(2), x, sigma=SIGMA, n0=10, n=n, alpha=alpha)
  false_cert = np.mean(cert.radius > d + 1e-6)
  assert false_cert <= alpha + 4 * np.sqrt(alpha * (1 - alpha) / trials), false_cert
  # Abstention happens when the class chosen on n0 draws is the wrong one, or when its
  # Clopper–Pearson bound falls below ½; both have exact binomial probabilities.
  k = np.arange(n + 1)
  p_abstain_right = stats.binom.pmf(k, n, 0.6)[clopper_pearson_lower(k, n, alpha) < 0.5].sum()
  p_select = stats.binom.sf(5, 10, 0.6)  # class 1 is chosen only with 6+ of 10 (a 5–5 tie goes to 0)
  p_abstain = p_select * p_abstain_right + (1 - p_select) * 1.0  # class 0 never reaches ½ here
  rate = np.mean(cert.prediction == ABSTAIN)
  assert abs(rate - p_abstain) <= 4 * np.sqrt(p_abstain * (1 - p_abstain) / trials), (rate, p_abstain)


def test_predict_abstains_on_the_boundary_and_answers_far_from_it():
  trials = 200
  x = np.concatenate([np.repeat(_points([0.0], W, 0.0), trials, 0), _points([0.5, -0.5], W, 0.0)])
  pred = smooth_predict(_linear(W, 0.0), jax.random.key(4), x, sigma=SIGMA, n=200, alpha=0.05)
  # on the boundary neither class is right: PREDICT answers at most α of the time
  answered = np.mean(pred[:trials] != ABSTAIN)
  assert answered <= 0.05 + 4 * np.sqrt(0.05 * 0.95 / trials), answered
  assert pred[trials:].tolist() == [1, 0]


def test_same_key_same_bits_and_alone_equals_batch():
  model = create_model('small_cnn')
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  variables = model.init(jax.random.key(1), x)
  f = lambda z, k: model.apply(variables, z)
  keys_ = jax.random.split(jax.random.key(5), 3)
  a = class_counts(f, keys_, x, sigma=0.5, n=300, draws_per_pass=100)
  b = class_counts(f, keys_, x, sigma=0.5, n=300, draws_per_pass=100)
  np.testing.assert_array_equal(a, b)
  assert (a.sum(1) == 300).all()
  # Alone and in other passes: other programs, the same noise; a vote may flip only on a near-tie.
  alone = class_counts(f, keys_[1:2], x[1:2], sigma=0.5, n=300, draws_per_pass=60)
  assert np.abs(alone[0] - a[1]).max() <= 2, (alone[0], a[1])


def test_bad_arguments_are_refused_by_name():
  f, x = _linear(W, 0.0), _points([0.1], W, 0.0)
  for kwargs, arg in [
    (dict(sigma=0.0), 'sigma'),
    (dict(sigma=float('inf')), 'sigma'),
    (dict(alpha=1.5), 'alpha'),
    (dict(n=0), 'n'),
    (dict(n0=2.5), 'n0'),
  ]:
    args = dict(sigma=SIGMA, n0=10, n=10, alpha=0.01) | kwargs
    with pytest.raises(ValueError, match=arg):
      smooth_certify(f, jax.random.key(0), x, **args)
  with pytest.raises(FloatingPointError, match='non-finite'):
    class_counts(lambda z, k: jnp.full((z.shape[0], 2), jnp.nan), jax.random.key(0), x, sigma=SIGMA, n=10)


def test_certified_accuracy_counts_right_classes_at_each_radius():
  cert = smooth_certify(
    _linear(W, 0.0),
    jax.random.key(6),
    _points([0.3, 0.1, -0.3], W, 0.0),
    sigma=SIGMA,
    n0=100,
    n=10_000,
    alpha=0.001,
  )
  acc = certified_accuracy(cert, [1, 1, 1], [0.0, 0.05, 0.2, 0.5])
  # points 0 and 1 are class 1 (radii below 0.3 and 0.1), point 2 is class 0: never right
  assert acc.tolist() == [2 / 3, 2 / 3, 1 / 3, 0.0]


def test_smoothadv_moves_a_point_across_the_smoothed_boundary():
  # Distance 0.2 from the hyperplane; an L2 attack of radius 0.3 on the smoothed soft classifier
  # must cross it (its gradient is along w for every draw), one of radius 0.1 cannot.
  f, x = _linear(W, 0.0), _points([0.2], W, 0.0)
  soft = smoothed_soft_logits(f, sigma=SIGMA, samples=16)
  for eps, crossed in ((0.3, True), (0.1, False)):
    adv = pgd(soft, jax.random.key(0), x, jnp.array([1]), epsilon=eps, norm='l2', num_steps=20)
    s = float(np.asarray(adv).reshape(-1) @ W)
    assert (s < 0) == crossed, (eps, s)


@pytest.mark.long
def test_interval_training_reaches_a_verified_accuracy_that_clean_training_does_not():
  import tempfile

  from jaxrobust.configs.defenses import defense_config
  from jaxrobust.evaluation.evaluator import verified_linf_accuracy
  from jaxrobust.train import train_and_evaluate

  verified_by = {}
  for row in ('interval', 'regular'):
    c = defense_config(row, 'synthetic')
    c.train.num_epochs = 30.0
    if row == 'interval':  # SGD as the other rows; ε ramps to 0.1 over half of the budget
      c.train.optimizer, c.train.learning_rate = 'sgd', 0.05
      c.train.interval = dict(epsilon=0.1, warmup_epochs=2.0, ramp_epochs=15.0, final_clean_weight=0.5)
    out = train_and_evaluate(c, tempfile.mkdtemp(), progress=False)
    ds = out['dataset']
    verified_by[row] = verified_linf_accuracy(
      out['model'], out['state'].variables, ds.test_images, ds.test_labels, 0.1
    )
    assert out['test_accuracy'] > 0.9, (row, out['test_accuracy'])
  assert verified_by['interval'] >= 0.3 and verified_by['regular'] <= 0.1, verified_by


@pytest.mark.long
def test_the_certify_command_brackets_a_trained_model(tmp_path):
  """experiments.certify on a tiny trained run: both methods write their record (with its
  environment), the figure and the bracket table, and every lower bound stays under its upper one."""
  import json
  import types

  from experiments import certify as cmd
  from jaxrobust.configs.defenses import defense_config
  from jaxrobust.train import train_and_evaluate

  c = defense_config('gaussian_050', 'synthetic')
  c.train.num_epochs = 4.0
  train_and_evaluate(c, str(tmp_path / 'run'), progress=False)
  common = dict(workdir=str(tmp_path / 'run'), weights='', row='tiny', out=str(tmp_path / 'out'), num_test=16)
  smooth = types.SimpleNamespace(
    **common, method='smoothing', sigma=0.5, n0=20, n=200, alpha=0.01, n_large=1000, num_large=4,
    num_attack=8, attack_steps=3, attack_samples=2, predict_draws=200, autoattack_epsilon=0.1,
  )  # fmt: skip
  rec = cmd.certify_run(smooth)
  e = rec['empirical']
  assert all(c <= a + 1e-9 for c, a in zip(e['certified_on_same_images'], e['accuracy'])), e
  assert rec['certified'] == sorted(rec['certified'], reverse=True)  # falls with the radius
  rec = cmd.certify_run(
    types.SimpleNamespace(**dict(vars(smooth), method='intervals', autoattack_epsilon=0.05))
  )
  assert all(v <= u + 1e-9 for v, u in zip(rec['verified'], rec['empirical']['accuracy']))
  assert rec['autoattack']['accuracy'] >= rec['autoattack']['verified_at_same_epsilon']
  out = tmp_path / 'out' / 'synthetic'
  assert 'environment' in json.loads((out / 'tiny_intervals.json').read_text())
  assert (out / 'figures' / 'tiny_smoothing_sigma0.5.png').read_bytes().startswith(b'\x89PNG')
  table = (out / 'certified.md').read_text()
  assert '**Interval bounds**' in table and '**Randomized smoothing**' in table


def test_certificates_refuse_what_would_make_them_silently_wrong():
  """Labels outside the classes, inputs outside the domain or not finite, negative radii and
  impossible counts are refused by name, not turned into a number."""
  from jaxrobust import certify as C

  w = jnp.ones((4, 3))
  apply_fn = lambda w, x: x.reshape(x.shape[0], -1) @ w  # noqa: E731
  x = jnp.full((2, 2, 2, 1), 0.5)
  y = jnp.array([0, 1])
  assert 0.0 <= float(C.verified_accuracy(apply_fn, w, x, y, 0.1)) <= 1.0
  for bad_x, bad_y, kind, match in (
    (x, jnp.array([0, 3]), ValueError, r'y must be labels in \[0, 3\)'),
    (x, jnp.array([0, -1]), ValueError, r'y must be labels in \[0, 3\)'),
    (x, jnp.array([0]), ValueError, r'y must have shape \(2,\)'),
    (x, jnp.array([0.0, 1.0]), TypeError, 'y must hold integer labels'),
    (x.at[0, 0, 0, 0].set(jnp.nan), y, ValueError, 'x holds non-finite values'),
    (x + 0.6, y, ValueError, r'x must lie in bounds \[0.0, 1.0\]'),
  ):
    with pytest.raises(kind, match=match):
      C.verified_accuracy(apply_fn, w, bad_x, bad_y, 0.1)
  f = lambda x, k: apply_fn(w, x)  # noqa: E731
  cert = C.smooth_certify(f, jax.random.key(0), x, sigma=0.25, n0=10, n=50, alpha=0.01)
  for bad in (x + 0.6, x - 0.6):  # smoothing certifies radii in pixel space, [0, 1]
    with pytest.raises(ValueError, match=r'x must lie in \[0, 1\]'):
      C.smooth_certify(f, jax.random.key(0), bad, sigma=0.25, n0=10, n=50, alpha=0.01)
  with pytest.raises(ValueError, match='radii must be finite and ≥ 0'):
    C.certified_accuracy(cert, np.asarray(y), [0.5, -1.0])
  with pytest.raises(ValueError, match=r'y must have shape \(2,\)'):
    C.certified_accuracy(cert, np.asarray(y)[:1], [0.5])
  with pytest.raises(ValueError, match=r'successes must lie in \[0, trials=10\]'):
    C.clopper_pearson_lower(12, 10, 0.01)
  with pytest.raises(ValueError, match=r'alpha must be a number in \(0, 1\)'):
    C.clopper_pearson_lower(5, 10, 2.0)
  with pytest.raises(ValueError, match='trials must be an integer'):
    C.clopper_pearson_lower(0, 0, 0.01)


class _CoinFlip(nn.Module):
  """Answers class 0 or 1 with probability ½ each, one coin per call for the whole batch (as PNI
  draws its weight noise once per forward pass)."""

  deterministic: bool | None = None

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    self.param('unused', nn.initializers.zeros, (1,))
    heads = jax.random.bernoulli(self.make_rng('stochastic'))
    s = jnp.where(heads, 1.0, -1.0) * jnp.ones((x.shape[0],))
    return jnp.stack([s, -s], -1)


def test_a_stochastic_base_classifier_is_refused_unless_each_draw_gets_its_own_key():
  from jaxrobust.models import declare, make_logits_fn
  from jaxrobust.models.traits import NOISY

  model = declare(_CoinFlip(), NOISY)
  x = jnp.full((4, 2, 2, 1), 0.5)
  f = make_logits_fn(model, model.init({'params': jax.random.key(0), 'stochastic': jax.random.key(1)}, x))
  common = dict(sigma=0.25, n0=100, n=1000, alpha=0.001)
  with pytest.raises(ValueError, match='declared stochastic.*stochastic_base=True'):
    smooth_certify(f, jax.random.key(3), x, **common)
  with pytest.raises(TypeError, match='stochastic_base must be None, True or False'):
    smooth_certify(f, jax.random.key(3), x, stochastic_base=1, **common)
  cert = smooth_certify(f, jax.random.key(3), x, stochastic_base=True, **common)
  assert (cert.prediction == ABSTAIN).all() and (cert.radius == 0).all(), cert
  # Independent fair coins: each example's 1000 votes are Binomial(1000, ½), sd √250; votes that
  # shared a coin per pass of 100 draws would spread ten times as far.
  assert (np.abs(cert.counts[:, 0] - 500) <= 4 * np.sqrt(250)).all(), cert.counts
  assert (cert.counts.sum(1) == 1000).all()


def test_an_undeclared_coin_flip_gets_a_key_per_draw_and_is_not_certified():
  """A plain function (no declared traits) that flips one fair coin per call: before, the draws of
  a pass shared one call and its coin, and CERTIFY certified class 0 at radius 0.032 (counts
  600/400 at α = 0.001). Undeclared, every draw is its own call with its own key: it abstains,
  and each example's votes are Binomial(1000, ½) within 4 sd. Only a caller who vouches that the
  function ignores its key (stochastic_base=False) gets the shared calls, and then the coins of a
  pass agree: votes come in blocks of the pass's size."""

  def coin(x, key):
    heads = jax.random.bernoulli(key, 0.5)
    return jnp.broadcast_to(jnp.where(heads, jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])), (x.shape[0], 2))

  x = jnp.full((3, 4), 0.5)
  cert = smooth_certify(coin, jax.random.key(0), x, sigma=0.25, n0=100, n=1000, alpha=0.001)
  assert (cert.prediction == ABSTAIN).all() and (cert.radius == 0).all(), cert
  assert (np.abs(cert.counts[:, 0] - 500) <= 4 * np.sqrt(250)).all(), cert.counts
  vouched = class_counts(coin, jax.random.key(0), x, sigma=0.25, n=1000, stochastic_base=False)
  assert (vouched % 100 == 0).all(), vouched


def test_a_deterministic_base_gives_the_same_votes_with_a_key_per_draw():
  f, x = _linear(W, 0.05), _points(np.linspace(-0.2, 0.2, 5), W, 0.05)
  shared = class_counts(f, jax.random.key(6), x, sigma=SIGMA, n=400, stochastic_base=False)
  per_draw = class_counts(f, jax.random.key(6), x, sigma=SIGMA, n=400, stochastic_base=True)
  # The same noise; only the program differs, so a vote may flip on a near-tie at most.
  assert np.abs(shared - per_draw).max() <= 2, (shared, per_draw)


def test_numpy_scalars_are_numbers():
  f, x = _linear(W, 0.0), _points([0.3], W, 0.0)
  a = smooth_certify(f, jax.random.key(0), x, sigma=np.float32(0.25), n0=10, n=100, alpha=np.float64(0.01))
  b = smooth_certify(f, jax.random.key(0), x, sigma=0.25, n0=10, n=100, alpha=0.01)
  np.testing.assert_array_equal(a.counts, b.counts)
  for bad in (np.bool_(True), np.float32('nan')):
    with pytest.raises(ValueError, match='sigma must be a finite number'):
      smooth_certify(f, jax.random.key(0), x, sigma=bad, n0=10, n=100, alpha=0.01)


def test_the_certify_command_refuses_a_stochastic_model_and_keeps_committed_results(tmp_path):
  """A stochastic model gets no certificate; the default folder's records are not overwritten
  unless told to (`--force`), and a refused run writes nothing."""
  import hashlib
  import os
  import types

  from experiments import certify as cmd

  common = dict(
    workdir='', method='intervals', sigma=0.25, num_test=4, n0=10, n=100, alpha=0.01, n_large=100,
    num_large=2, num_attack=2, attack_steps=1, attack_samples=1, predict_draws=10, autoattack_epsilon=0.1,
  )  # fmt: skip
  pni = types.SimpleNamespace(
    **common, weights='results/published/fashion_mnist/noise_injection', row='pni', out=str(tmp_path)
  )
  with pytest.raises(ValueError, match='is stochastic.*deterministic models only'):
    cmd.certify_run(pni)
  assert not os.listdir(tmp_path)
  committed = os.path.join(cmd.OUT, 'fashion_mnist')
  digest = lambda: {  # noqa: E731
    f: hashlib.sha256(open(os.path.join(committed, f), 'rb').read()).hexdigest()
    for f in ('interval_intervals.json', 'certified.md')
  }
  before = digest()
  again = types.SimpleNamespace(
    **common, weights='results/published/fashion_mnist/interval', row='interval', out=cmd.OUT
  )
  with pytest.raises(FileExistsError, match='committed result.*--force'):
    cmd.certify_run(again)
  assert digest() == before


def test_division_by_a_range_that_holds_zero_is_unbounded():
  """1/x on [−1, 1] reaches every real: its bound is (−∞, ∞), never the ends' [−1, 1]; a divisor
  of one sign keeps the textbook rule (1/[2, 4] = [¼, ½])."""
  b = propagate_box(lambda x: 1.0 / x, Interval(jnp.array([[-1.0, 2.0, 0.0]]), jnp.array([[1.0, 4.0, 3.0]])))
  assert b.lower.tolist() == [[-np.inf, 0.25, -np.inf]] and b.upper.tolist() == [[np.inf, 0.5, np.inf]]
  # Every reached point lies inside.
  pts = jnp.array([[-0.01, 3.0, 1e-3], [0.01, 2.0, 3.0]])
  assert bool(((1.0 / pts >= b.lower) & (1.0 / pts <= b.upper)).all())


def test_nan_weights_or_domain_bounds_are_refused_not_counted_as_unverified():
  from jaxrobust import certify as C

  w = jnp.ones((4, 3))
  apply_fn = lambda w, x: x.reshape(x.shape[0], -1) @ w  # noqa: E731
  x, y = jnp.full((2, 2, 2, 1), 0.5), jnp.array([0, 1])
  with pytest.raises(ValueError, match='variables hold non-finite values'):
    C.verified_accuracy(apply_fn, w.at[0, 0].set(jnp.nan), x, y, 0.1)
  for bounds in ((float('nan'), 1.0), (0.0, float('nan')), (1.0, 0.0)):
    with pytest.raises(ValueError, match='bounds must be finite with lower ≤ upper'):
      C.verified_accuracy(apply_fn, w, x, y, 0.1, bounds=bounds)
  with pytest.raises(ValueError, match='NaN bounds'):
    verified(Interval(jnp.array([[jnp.nan, 0.0]]), jnp.array([[1.0, 0.5]])), jnp.array([0]))


def test_an_empty_batch_is_refused_by_name():
  f, w = _linear(W, 0.0), jnp.ones((4, 2))
  empty = jnp.zeros((0, 4))
  with pytest.raises(ValueError, match=r'x is an empty batch \(shape \(0, 4\)\)'):
    smooth_certify(f, jax.random.key(0), empty, sigma=0.25, n0=5, n=10, alpha=0.01)
  with pytest.raises(ValueError, match='interval bounds: x must be a non-empty batch'):
    interval_bounds(lambda w, x: x @ w, w, empty, 0.1)
