"""AutoAttack's parts against closed forms on multiclass linear models: APGD-T and Square reach
the exact L∞ robust accuracy, FAB-T the exact minimal distances; Square never differentiates;
the ensemble attacks each point only while it is robust, and its report adds up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog, minimize

from jaxrobust import attacks as A
from tests.conftest import assert_attacks_agree, assert_mostly_equal

KEY = jax.random.key(0)
K = 5


@pytest.fixture(scope='module')
def linear():
  """A 5-class linear model on 6×6×1 images, 240 test points labelled by the model."""
  W = np.asarray(jax.random.normal(jax.random.key(1), (36, K))) * 0.4
  b = np.asarray(jax.random.normal(jax.random.key(2), (K,))) * 0.1
  x = np.asarray(jax.random.uniform(jax.random.key(3), (240, 6, 6, 1)))
  y = np.argmax(x.reshape(240, -1) @ W + b, -1)
  f = jax.tree_util.Partial(
    lambda W, b, x, key: x.reshape(x.shape[0], -1) @ W + b, jnp.asarray(W), jnp.asarray(b)
  )
  return f, W, b, x, y


def exact_linf_robust(W, b, x, y, eps):
  """A point is robust iff for every j ≠ y the smallest margin z_y − z_j over the box ∩ ball is > 0;
  a linear margin is minimised coordinate by coordinate at an end of each interval."""
  xf = x.reshape(len(x), -1)
  lo, hi = np.maximum(xf - eps, 0), np.minimum(xf + eps, 1)
  ok = np.ones(len(x), bool)
  for j in range(K):
    d = (W[:, y] - W[:, [j]]).T
    m = np.sum(d * np.where(d > 0, lo, hi), -1) + b[y] - b[j]
    ok &= (m > 0) | (y == j)
  return ok.mean()


def exact_min_distance(W, b, x, y, norm):
  """The smallest ‖δ‖ with x + δ in the box and some class j ≠ y reaching z_j ≥ z_y: an LP (L∞) or
  a convex QP (L2) per class, solved by scipy."""
  out = []
  for xi, yi in zip(x.reshape(len(x), -1), y):
    best, n = np.inf, xi.size
    for j in range(K):
      if j == yi:
        continue
      w, c = W[:, j] - W[:, yi], b[yi] - b[j] - xi @ (W[:, j] - W[:, yi])  # need w·δ ≥ c
      bounds = list(zip(-xi, 1 - xi))
      if norm == 'linf':
        A_ub = np.zeros((1 + 2 * n, n + 1))
        A_ub[0, :n] = -w
        A_ub[1 : n + 1, :n], A_ub[n + 1 :, :n] = np.eye(n), -np.eye(n)
        A_ub[1:, n] = -1
        r = linprog(
          np.r_[np.zeros(n), 1],
          A_ub=A_ub,
          b_ub=np.r_[-c, np.zeros(2 * n)],
          bounds=bounds + [(0, None)],
          method='highs',
        )
        if r.success:
          best = min(best, r.x[-1])
      else:
        r = minimize(
          lambda d: d @ d,
          np.zeros(n),
          jac=lambda d: 2 * d,
          bounds=bounds,
          method='SLSQP',
          constraints=[{'type': 'ineq', 'fun': lambda d: w @ d - c, 'jac': lambda d: w}],
          options={'ftol': 1e-12, 'maxiter': 500},
        )
        if r.success and w @ r.x - c > -1e-6:
          best = min(best, np.sqrt(r.x @ r.x))
    out.append(best)
  return np.array(out)


def accuracy(f, x, y):
  return float(np.mean(np.argmax(np.asarray(f(jnp.asarray(x), KEY)), -1) == y))


@pytest.mark.long
@pytest.mark.parametrize('attack', ['apgd_t', 'square'])
def test_linf_robust_accuracy_reaches_the_exact_value(linear, attack):
  f, W, b, x, y = linear
  eps = 0.04
  exact = exact_linf_robust(W, b, x, y, eps)
  assert 0.2 < exact < 0.8  # a non-trivial budget
  if attack == 'apgd_t':
    x_adv = A.apgd_targeted(
      f, KEY, jnp.asarray(x), jnp.asarray(y), epsilon=eps, num_steps=50, num_targets=K - 1
    )
  else:
    x_adv = A.square(f, KEY, jnp.asarray(x), jnp.asarray(y), epsilon=eps, num_queries=3000)
  assert float(jnp.max(jnp.abs(x_adv - x))) <= eps + 1e-6
  acc = accuracy(f, x_adv, y)
  assert exact - 1e-9 <= acc <= exact + 0.01


@pytest.mark.parametrize('norm', ['linf', 'l2'])
def test_fab_finds_the_exact_minimal_distance(linear, norm):
  f, W, b, x, y = linear
  x, y = x[:40], y[:40]
  exact = exact_min_distance(W, b, x, y, norm)
  _, dist = A.fab_targeted(
    f, KEY, jnp.asarray(x), jnp.asarray(y), norm=norm, num_steps=30, num_targets=K - 1, return_distance=True
  )
  ratio = np.asarray(dist) / exact
  assert np.all(ratio >= 1 - 1e-4), ratio.min()  # never below the minimum
  assert np.all(ratio <= 1.05), ratio.max()  # within 5 % of it


def test_fab_with_a_budget_keeps_only_perturbations_inside_it(linear):
  f, W, b, x, y = linear
  exact = exact_min_distance(W, b, x[:30], y[:30], 'l2')
  eps = float(np.median(exact))
  x_adv = A.fab_targeted(
    f, KEY, jnp.asarray(x[:30]), jnp.asarray(y[:30]), epsilon=eps, norm='l2', num_steps=20, num_targets=K - 1
  )
  moved = np.sqrt(np.sum((np.asarray(x_adv) - x[:30]) ** 2, axis=(1, 2, 3)))
  broken = np.argmax(np.asarray(f(x_adv, KEY)), -1) != y[:30]
  assert np.all(moved <= eps + 1e-5) and np.all(moved[~broken] == 0)
  assert broken.sum() >= np.sum(exact <= eps * 0.95)


def test_square_dropping_broken_points_changes_no_result(linear):
  """Eager Square drops broken examples after 50, 100, 200, ... queries; under a caller's jit it
  is one loop over the whole batch. Each example's point and query count are the same."""
  f, W, b, x, y = linear
  xs, ys = jnp.asarray(x[:40]), jnp.asarray(y[:40])
  run = lambda xx, yy: A.square(f, KEY, xx, yy, epsilon=0.04, num_queries=300, return_queries=True)  # noqa: E731
  x_eager, q_eager = run(xs, ys)
  x_jit, q_jit = jax.jit(run)(xs, ys)
  # Two programs (the eager one drops broken points): equal but for an example at a boundary.
  assert_attacks_agree(x_eager, x_jit, share=0.05)
  assert_mostly_equal(q_eager, q_jit)
  assert 0 < int((np.asarray(q_eager) < 300).sum()) < 40  # some broken early, some not


@pytest.mark.long
@pytest.mark.parametrize('norm,eps', [('linf', 0.04), ('l2', 0.3)])
def test_square_eot_in_chunks_equals_the_whole_batch_on_a_deterministic_model(linear, norm, eps):
  """EOT draws evaluated in chunks of 7 examples (padded last chunk, broken points dropped along
  the way) give a deterministic model the same bits and query counts as the whole batch."""
  f, W, b, x, y = linear
  xs, ys = jnp.asarray(x[:40]), jnp.asarray(y[:40])
  run = lambda m: A.square(  # noqa: E731
    f, KEY, xs, ys, epsilon=eps, norm=norm, num_queries=120, eot_samples=3, microbatch=m, return_queries=True
  )
  (x0, q0), (x7, q7) = run(0), run(7)
  assert_attacks_agree(x0, x7, share=0.05)
  assert_mostly_equal(q0, q7)
  assert 0 < int((np.asarray(q0) < 120).sum()) < 40  # broken points were dropped mid-way
  # A stochastic model's chunks draw their own noise: the chunked path is the one that ran.
  noisy = lambda xx, k: f(xx, k) + 0.3 * jax.random.normal(k, (xx.shape[0], K))  # noqa: E731
  xn = [
    A.square(noisy, KEY, xs, ys, epsilon=eps, norm=norm, num_queries=30, eot_samples=3, microbatch=m)
    for m in (0, 7)
  ]
  assert not np.array_equal(np.asarray(xn[0]), np.asarray(xn[1]))
  for bad in (-1, 2.5, True):
    with pytest.raises(ValueError, match='square: microbatch'):
      A.square(f, KEY, xs, ys, epsilon=eps, num_queries=10, microbatch=bad)


def test_square_reference_windows_never_reach_the_last_column(linear):
  """With `reference_windows`, positions are drawn as the reference's `random_int(0, n - s)` does
  (never the last): after the vertical stripes of the start, nothing changes the last column, so
  it stays constant down each image; by default windows reach it. The model is never broken (a
  large bias on the label) but its margin moves with x, so steps are accepted."""
  _, W, _, x, _ = linear
  bias = jnp.asarray([1000.0] + [0.0] * (K - 1))
  f = jax.tree_util.Partial(lambda W, x, key: x.reshape(x.shape[0], -1) @ W + bias, jnp.asarray(W))
  xs, ys = jnp.full((16, 6, 6, 1), 0.5), jnp.zeros(16, jnp.int32)
  last_column = {}
  for ref in (True, False):
    x_adv = A.square(f, KEY, xs, ys, epsilon=0.1, num_queries=200, reference_windows=ref)
    delta = np.asarray(x_adv) - 0.5
    assert np.allclose(np.abs(delta), 0.1, atol=1e-6)  # every pixel at a corner of the ball
    last_column[ref] = np.all(delta[:, :, 5] == delta[:, :1, 5], axis=(1, 2))  # constant per image
  assert last_column[True].all() and not last_column[False].all()


def test_square_never_differentiates_the_model(linear):
  f, _, _, x, y = linear

  @jax.custom_jvp
  def no_grad(z):
    return z

  @no_grad.defjvp
  def _(primals, tangents):
    raise AssertionError('Square differentiated the model')

  g = lambda x, key: no_grad(f(x, key))
  A.square(g, KEY, jnp.asarray(x[:16]), jnp.asarray(y[:16]), epsilon=0.05, num_queries=50)
  A.square(g, KEY, jnp.asarray(x[:16]), jnp.asarray(y[:16]), epsilon=0.5, norm='l2', num_queries=50)
  with pytest.raises(AssertionError, match='differentiated'):
    jax.grad(lambda x: g(x, KEY).sum())(jnp.asarray(x[:2]))


def test_square_l2_stays_in_the_ball_and_lowers_accuracy(linear):
  f, _, _, x, y = linear
  x_adv, queries = A.square(
    f, KEY, jnp.asarray(x), jnp.asarray(y), epsilon=0.3, norm='l2', num_queries=300, return_queries=True
  )
  norms = np.sqrt(np.sum((np.asarray(x_adv) - x) ** 2, axis=(1, 2, 3)))
  assert np.all(norms <= 0.3 + 1e-4) and np.all((x_adv >= 0) & (x_adv <= 1))
  assert accuracy(f, x_adv, y) < 0.9
  broken = np.argmax(np.asarray(f(x_adv, KEY)), -1) != y
  assert np.all(np.asarray(queries)[~broken] == 301)  # robust points spent the whole budget


@pytest.mark.long
@pytest.mark.parametrize('attack', ['apgd_t', 'fab_t', 'square'])
def test_same_key_same_bits_and_alone_equals_inside_a_batch(linear, attack):
  f, _, _, x, y = linear
  x, y = jnp.asarray(x[:8]), jnp.asarray(y[:8])
  fn = {
    'apgd_t': lambda k, x, y: A.apgd_targeted(f, k, x, y, epsilon=0.04, num_steps=10, num_targets=3),
    'fab_t': lambda k, x, y: A.fab_targeted(f, k, x, y, epsilon=0.04, num_steps=10, num_targets=3),
    'square': lambda k, x, y: A.square(f, k, x, y, epsilon=0.04, num_queries=100),
  }[attack]
  keys = jax.random.split(KEY, 8)
  a = fn(keys, x, y)
  np.testing.assert_array_equal(a, fn(keys, x, y))  # the same program: the same bits
  assert_attacks_agree(a[3:4], fn(keys[3:4], x[3:4], y[3:4]))  # another program


@pytest.mark.long
def test_autoattack_attacks_only_robust_points_and_its_report_adds_up(linear):
  f, W, b, x, y = linear
  calls = []

  def counting(name, attack):
    def run(g, k, xx, yy):
      calls.append((name, xx.shape[0]))
      return attack(g, k, xx, yy)

    return run

  suite = {
    'fgsm': counting('fgsm', lambda g, k, xx, yy: A.fgsm(g, k, xx, yy, epsilon=0.04)),
    'apgd_t': counting(
      'apgd_t', lambda g, k, xx, yy: A.apgd_targeted(g, k, xx, yy, epsilon=0.04, num_steps=10, num_targets=2)
    ),
  }
  y_wrong = y.copy()
  y_wrong[:10] = (y_wrong[:10] + 1) % K  # 10 points misclassified from the start
  x_adv, rep = A.autoattack(
    f,
    KEY,
    jnp.asarray(x),
    jnp.asarray(y_wrong),
    epsilon=0.04,
    version='custom',
    attacks=suite,
    batch_size=64,
    devices=jax.devices()[:1],  # the counting wrappers count host calls, not traced shards
  )
  n = len(x)
  assert rep['clean'] == pytest.approx((n - 10) / n)
  assert calls[0] == ('fgsm', 64) and sum(c for name, c in calls if name == 'fgsm') == n - 10
  after_fgsm = round(rep['robust_accuracy']['fgsm'] * n)
  assert sum(c for name, c in calls if name == 'apgd_t') == after_fgsm  # only the survivors
  clean_count = round(rep['clean'] * n)
  assert clean_count - sum(rep['broken'].values()) == round(rep['robust_accuracy']['apgd_t'] * n)
  assert rep['robust_accuracy']['apgd_t'] == pytest.approx(accuracy(f, x_adv, y_wrong))
  assert np.array_equal(rep['robust'], np.argmax(np.asarray(f(x_adv, KEY)), -1) == y_wrong)
  assert float(jnp.max(jnp.abs(x_adv - x))) <= 0.04 + 1e-6


@pytest.mark.long
def test_autoattack_over_four_devices_equals_one_device(linear):
  """Each attack call split over the 4 simulated devices (37 points: padded to 40): every point,
  the adversarial batch and the report are those of the single-device run."""
  assert jax.device_count() == 4
  f, W, b, x, y = linear
  run = (
    lambda devices: A.autoattack(  # noqa: E731
      f,
      KEY,
      jnp.asarray(x[:37]),
      jnp.asarray(y[:37]),
      epsilon=0.04,
      batch_size=37,
      num_steps=10,
      num_queries=200,
      devices=devices,
    )
  )
  x1, r1 = run(jax.devices()[:1])
  x4, r4 = run(jax.devices())
  # Two programs: equal but for an example that rounding may move across a decision boundary.
  assert_attacks_agree(x1, x4, share=0.05)
  assert_mostly_equal(r1['robust'], r4['robust'])
  for name, acc in r1['robust_accuracy'].items():
    assert abs(acc - r4['robust_accuracy'][name]) <= 1 / 37 + 1e-9, (name, acc, r4['robust_accuracy'][name])
  assert r1['clean'] > r1['robust_accuracy']['square']  # the attacks did break points


@pytest.mark.long
def test_autoattack_standard_on_a_linear_model_is_exact(linear):
  f, W, b, x, y = linear
  x_adv, rep = A.autoattack(
    f,
    KEY,
    jnp.asarray(x[:48]),
    jnp.asarray(y[:48]),
    epsilon=0.04,
    batch_size=48,
    num_steps=20,
    num_queries=1000,
  )
  assert list(rep['robust_accuracy']) == ['apgd_ce', 'apgd_t', 'fab_t', 'square']
  assert rep['robust_accuracy']['square'] == pytest.approx(
    exact_linf_robust(W, b, x[:48], y[:48], 0.04), abs=1e-9
  )
  assert rep['warnings'] == ['the model has 5 classes: APGD-T and FAB-T use 4 targets']
  assert not rep['flags']['randomized'] and not rep['flags']['gradient_masking']


def test_sanity_checks_flag_randomness_probabilities_and_zero_gradients(linear):
  f, _, _, x, y = linear
  x, y = jnp.asarray(x[:32]), jnp.asarray(y[:32])
  noisy = lambda xx, key: f(xx, key) + 0.01 * jax.random.normal(key, (xx.shape[0], K))
  flags, msgs = A.sanity_checks(noisy, x, y, KEY, version='standard')
  assert flags['randomized'] and "use version='rand'" in msgs[0]
  probs = lambda xx, key: jax.nn.softmax(f(xx, key))
  flags, msgs = A.sanity_checks(probs, x, y, KEY, version='standard')
  assert flags['probabilities'] and any('pass logits' in m for m in msgs)
  flat = lambda xx, key: jax.lax.stop_gradient(f(xx, key))
  flags, msgs = A.sanity_checks(flat, x, y, KEY, version='standard')
  assert flags['zero_gradients'] == 1.0 and any('zero gradient' in m for m in msgs)


def test_gradient_masking_flag_fires_when_square_beats_white_box(linear):
  """A model whose gradient is zero (stop_gradient on the logits) defeats every gradient attack;
  Square, which needs none, breaks it, and the flag fires."""
  f, _, _, x, y = linear
  masked = lambda xx, key: jax.lax.stop_gradient(f(xx, key))
  suite = {'apgd_ce': {'name': 'apgd_ce', 'num_steps': 10}, 'square': {'name': 'square', 'num_queries': 500}}
  _, rep = A.autoattack(
    masked, KEY, jnp.asarray(x[:64]), jnp.asarray(y[:64]), epsilon=0.05, version='custom', attacks=suite
  )
  assert rep['broken']['square'] > rep['broken']['apgd_ce']  # APGD breaks only by its random start
  assert rep['flags']['gradient_masking'] and any('masked' in w for w in rep['warnings'])


def test_autoattack_passes_its_microbatch_to_every_gradient_attack_and_refuses_a_bad_one(linear, monkeypatch):
  from jaxrobust.attacks import _autoattack

  f, _, _, x, y = linear
  with pytest.raises(ValueError, match='microbatch'):
    A.autoattack(f, jax.random.key(0), x[:8], y[:8], epsilon=0.1, microbatch=-1)
  seen = []
  for name in ('apgd', 'apgd_targeted', 'fab_targeted'):
    real = getattr(_autoattack, name)
    spy = lambda *a, real=real, **k: seen.append(k.get('microbatch')) or real(*a, **k)
    monkeypatch.setattr(_autoattack, name, spy)
  for version in ('standard', 'rand'):
    seen.clear()
    A.autoattack(
      f,
      jax.random.key(0),
      x[:8],
      y[:8],
      epsilon=0.3,
      version=version,
      num_steps=2,
      num_queries=2,
      microbatch=3,
    )
    assert seen and all(m == 3 for m in seen), (version, seen)


def test_rand_version_returns_x_for_the_points_apgd_did_not_fool(linear):
  """As the reference's `perturb`: AA-rand's APGD hands back x itself for an unfooled point, so
  the one-draw re-vote judges the point as itself, not at APGD's highest-loss point (which on a
  randomised model a single noisy draw may misclassify, an extra 'break' no attack made)."""
  f, _, _, x, y = linear
  xs, ys = jnp.asarray(x[:60]), jnp.asarray(y[:60])
  out = A.apgd(f, KEY, xs, ys, epsilon=0.02, num_steps=10, return_x_unless_fooled=True)
  best = A.apgd(f, KEY, xs, ys, epsilon=0.02, num_steps=10)
  fooled = np.asarray(f(best, KEY)).argmax(-1) != np.asarray(ys)
  assert 0 < fooled.sum() < 60  # some points broken, some not
  np.testing.assert_array_equal(np.asarray(out)[~fooled], np.asarray(xs)[~fooled])
  np.testing.assert_array_equal(np.asarray(out)[fooled], np.asarray(best)[fooled])
  assert not np.array_equal(
    np.asarray(best)[~fooled], np.asarray(xs)[~fooled]
  )  # the old behaviour moved them


def test_square_far_draws_on_a_deterministic_model_change_nothing(linear):
  """Every draw of a deterministic model is the same, so the sequential test finds every standing
  point far (zero spread) and runs it on 2 draws instead of 8: the same search."""
  from jaxrobust.attacks import _square

  f, W, b, x, y = linear
  xs, ys = jnp.asarray(x[:40]), jnp.asarray(y[:40])
  run = lambda fd: A.square(  # noqa: E731
    f, KEY, xs, ys, epsilon=0.04, num_queries=300, eot_samples=8, far_draws=fd, return_queries=True
  )
  (x0, q0), (x2, q2) = run(None), run(2)
  assert_attacks_agree(x0, x2, share=0.05)
  assert_mostly_equal(q0, q2)
  keys_ = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(40))
  *_, broken, far = _square._square_impl(
    f, keys_, xs, ys, 0.04, 0.0, 1.0, far_draws=2, num_queries=300, norm='linf', p_init=0.8,
    targeted=False, rescale=False, eot_samples=8, microbatch=0, reference_windows=False,
  )  # fmt: skip
  assert np.all(np.asarray(far)[~np.asarray(broken)] >= 1)  # the standing points ran on 2 draws
  for bad in (0, 9, 2.5, True):
    with pytest.raises(ValueError, match='square: far_draws'):
      A.square(f, KEY, xs, ys, epsilon=0.04, num_queries=10, eot_samples=8, far_draws=bad)


def _two_class_noise(scale: float):
  """Two classes; the true class 0 leads by scale·x[0, 0, 0] plus N(0, 1) noise per draw."""

  def f(xx, key):
    lead = scale * xx[:, 0, 0, 0]
    noise = jax.random.normal(key, (xx.shape[0], 2)) / np.sqrt(2.0)
    return jnp.stack([lead, jnp.zeros_like(lead)], -1) + noise

  return f


def _square_far(f, x, *, far_draws, num_queries=400, eot_samples=16):
  from jaxrobust.attacks import _square

  keys_ = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(len(x)))
  y = jnp.zeros(len(x), jnp.int32)
  _, _, queries, broken, far = _square._square_impl(
    A.as_pytree_fn(f), keys_, jnp.asarray(x), y, 1e-3, 0.0, 1.0, far_draws=far_draws, num_queries=num_queries,
    norm='linf', p_init=0.8, targeted=False, rescale=False, eot_samples=eot_samples, microbatch=0,
    reference_windows=False,
  )  # fmt: skip
  return np.asarray(queries), np.asarray(broken), np.asarray(far)


def test_square_sequential_test_gives_few_draws_only_to_points_far_from_breaking():
  """A margin of mean 10 and spread 1 is 28 standard errors of a 2-draw mean above zero: far, on 2
  draws at every stage (50, 100, 200, 400 queries). A margin of mean 0.2 is within 4 standard
  errors: every query keeps 16 draws."""
  x = np.zeros((20, 4, 4, 1), np.float32)
  x[:10, 0, 0, 0], x[10:, 0, 0, 0] = 1.0, 0.02
  _, broken, far = _square_far(_two_class_noise(10.0), x, far_draws=2)
  assert np.all(far[:10] == 4) and not broken[:10].any()
  assert np.all(far[10:] == 0)


def test_square_few_draws_never_end_a_search(monkeypatch):
  """With the far threshold lowered to 0.5 standard errors, margins of mean 1.5 run on 2 draws,
  which call them broken about once in 60 queries (Φ(−1.5·√2)); the perturbation (ε = 0.001)
  cannot move them, and 16 draws call them broken with probability 1e-9. The searches pause at
  each false break, and the next re-measurement on 16 draws resumes them: no point ends broken."""
  from jaxrobust.attacks import _square

  monkeypatch.setattr(_square, '_FAR_Z', 0.5)
  x = np.zeros((40, 4, 4, 1), np.float32)
  x[:, 0, 0, 0] = 0.15
  queries, broken, far = _square_far(_two_class_noise(10.0), x, far_draws=2)
  assert np.all(far == 4)
  assert not broken.any(), f'{broken.sum()} of 40 unbreakable points reported broken'
  paused = int((queries < 400).sum())
  assert paused >= 10, f'only {paused} of 40 searches paused: the false breaks this test needs did not happen'


def test_square_l2_budgets_the_new_window_per_channel_as_the_reference():
  """The reference's L2 update (`square.py`): the old window content is normalised per channel,
  the new window is normalised per channel to sqrt(max(ε² − ‖δ‖², 0)/c + ‖δ_windows‖²), then the
  whole δ is rescaled to ε. So on 3 channels, each channel's new window carries the same norm,
  whatever the channels held before; a budget over all channels at once would not."""
  from jaxrobust.attacks import _square

  b, h, w, c = 4, 12, 12, 3
  rng = np.random.default_rng(0)
  x = jnp.full((b, h, w, c), 0.5, jnp.float32)
  # δ differs per pixel and per channel, so that a budget over all channels gives channels
  # different norms
  delta0 = jnp.asarray(np.array([0.01, 0.02, 0.03]) * (0.5 + rng.uniform(size=(b, h, w, c))), jnp.float32)
  f = lambda xx, key: xx.reshape(xx.shape[0], -1)[:, :5]  # noqa: E731
  y = jnp.zeros(b, jnp.int32)
  static = dict(
    num_queries=100, norm='l2', p_init=0.05, targeted=False, rescale=True, eot_samples=1,
    microbatch=None, reference_windows=True,
  )  # fmt: skip
  _, _, propose, _ = _square._search(f, KEY, x, y, jnp.float32(0.5), 0.0, 1.0, **static)
  moved = np.asarray(propose(0, x + delta0) - x)
  ratio = moved / np.asarray(delta0)
  for e in range(b):
    g = np.median(ratio[e])  # outside both windows δ is only rescaled
    outside = np.isclose(ratio[e], g, rtol=1e-4).all(-1)
    cleared = np.isclose(moved[e], 0, atol=1e-7).all(-1)
    new_window = ~outside & ~cleared
    assert 9 <= new_window.sum() <= 49, new_window.sum()  # one s×s window (s odd, ≥ 3)
    norms = np.sqrt((moved[e][new_window] ** 2).sum(0))  # per channel
    np.testing.assert_allclose(norms, norms[0], rtol=1e-4)
    assert np.linalg.norm(moved[e]) == pytest.approx(0.5, rel=1e-4)  # the whole δ at ε
