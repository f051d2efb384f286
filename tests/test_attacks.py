"""Attack tests against closed forms, invariants and statistics (docs/design.md, testing)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrobust import attacks as A
from jaxrobust.attacks import _loop
from jaxrobust.data import load_synthetic
from tests.conftest import assert_attacks_agree

KEY = jax.random.key(0)


# ------------------------------------------------------------------------------------ models
def binary_linear(w, b=0.0):
  """Two-class linear model: logits [−s/2, s/2] with s = w·x + b."""

  def f(x, key):
    s = x.reshape(x.shape[0], -1) @ w + b
    return jnp.stack([-s / 2, s / 2], -1)

  return f


def multiclass_linear(W, b):
  return lambda x, key: x.reshape(x.shape[0], -1) @ W + b


@pytest.fixture(scope='module')
def trained():
  """A small MLP trained on the synthetic dataset: (logits_fn, x_test, y_test)."""
  ds = load_synthetic(seed=0, num_train=1024, num_test=128, image_shape=(6, 6, 1), num_classes=4)
  x = jnp.asarray(ds.train_images, jnp.float32) / 255
  y = jnp.asarray(ds.train_labels)
  k1, k2 = jax.random.split(jax.random.key(1))
  p = {
    'w1': jax.random.normal(k1, (36, 64)) / 6,
    'b1': jnp.zeros(64),
    'w2': jax.random.normal(k2, (64, 4)) / 8,
    'b2': jnp.zeros(4),
  }

  def apply(p, x, key=None):
    h = jax.nn.relu(x.reshape(x.shape[0], -1) @ p['w1'] + p['b1'])
    return h @ p['w2'] + p['b2']

  tx = optax.adam(1e-2)
  st = tx.init(p)

  @jax.jit
  def step(p, st):
    g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(apply(p, x), y).mean())(p)
    u, st = tx.update(g, st)
    return optax.apply_updates(p, u), st

  for _ in range(150):
    p, st = step(p, st)
  logits_fn = jax.tree_util.Partial(apply, p)
  xt = jnp.asarray(ds.test_images, jnp.float32) / 255
  return logits_fn, xt, jnp.asarray(ds.test_labels)


def acc(f, x, y):
  return float(jnp.mean(jnp.argmax(f(x, KEY), -1) == y))


ATTACKS_LINF = {
  'fgsm': lambda f, k, x, y, e: A.fgsm(f, k, x, y, epsilon=e),
  'pgd': lambda f, k, x, y, e: A.pgd(f, k, x, y, epsilon=e, num_steps=5, restarts=2),
  'pgd_margin': lambda f, k, x, y, e: A.pgd(f, k, x, y, epsilon=e, num_steps=5, loss='margin', kappa=5.0),
  'pgd_dlr': lambda f, k, x, y, e: A.pgd(
    f, k, x, y, epsilon=e, num_steps=5, loss='dlr', random_init='normal'
  ),
  'apgd': lambda f, k, x, y, e: A.apgd(f, k, x, y, epsilon=e, num_steps=10),
  'eot_pgd': lambda f, k, x, y, e: A.eot(A.pgd, 3)(f, k, x, y, epsilon=e, num_steps=3),
  'uniform': lambda f, k, x, y, e: A.uniform_noise(f, k, x, y, epsilon=e),
  'gaussian': lambda f, k, x, y, e: A.gaussian_noise(f, k, x, y, sigma=1.0, epsilon=e, norm='linf'),
}
ATTACKS_L2 = {
  'fgm': lambda f, k, x, y, e: A.fgm(f, k, x, y, epsilon=e),
  'pgd_l2': lambda f, k, x, y, e: A.pgd(f, k, x, y, epsilon=e, num_steps=5, norm='l2', restarts=2),
  'apgd_l2': lambda f, k, x, y, e: A.apgd(f, k, x, y, epsilon=e, num_steps=10, norm='l2', loss='dlr'),
  'cw_l2': lambda f, k, x, y, e: A.cw_l2(
    f, k, x, y, epsilon=e, max_iterations=20, binary_search_steps=2, initial_const=10.0
  ),
  'uniform_l2': lambda f, k, x, y, e: A.uniform_noise(f, k, x, y, epsilon=e, norm='l2'),
  'gaussian_l2': lambda f, k, x, y, e: A.gaussian_noise(f, k, x, y, sigma=0.5, epsilon=e),
}


# ----------------------------------------------------------------------------------- bounds
@pytest.mark.long
@pytest.mark.parametrize('name', sorted(ATTACKS_LINF) + sorted(ATTACKS_L2))
def test_bounds_hold_and_zero_epsilon_is_identity(trained, name):
  f, x, y = trained
  x, y = x[:32], y[:32]
  x_np = np.array(x)
  norm, attack = ('linf', ATTACKS_LINF[name]) if name in ATTACKS_LINF else ('l2', ATTACKS_L2[name])
  eps = 0.1 if norm == 'linf' else 0.8
  xa = attack(f, KEY, x, y, eps)
  assert xa.shape == x.shape and xa.dtype == x.dtype
  assert np.all(np.asarray(A.per_example_norm(xa - x, norm)) <= eps + 1e-6)
  assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
  np.testing.assert_array_equal(np.asarray(x), x_np)  # input unmodified
  x0 = attack(f, KEY, x, y, 0.0)
  np.testing.assert_array_equal(np.asarray(x0), np.asarray(x))
  # Per-example ε: each row respects its own radius; custom bounds are respected.
  eps_vec = jnp.linspace(0.0, eps, x.shape[0])
  xv = attack(f, KEY, x, y, eps_vec)
  assert np.all(np.asarray(A.per_example_norm(xv - x, norm)) <= np.asarray(eps_vec) + 1e-6)


def test_custom_and_per_example_bounds(trained):
  f, x, y = trained
  x = jnp.clip(x[:16], 0.2, 0.8)
  lo = jnp.full((16,), 0.2)
  xa = A.pgd(f, KEY, x, y[:16], epsilon=0.3, num_steps=3, bounds=(lo, 0.8))
  assert float(xa.min()) >= 0.2 - 1e-7 and float(xa.max()) <= 0.8 + 1e-7


# ------------------------------------------------------------------------------ closed forms
@pytest.fixture
def binary_setup():
  w = jnp.array([0.6, -0.4, 0.2, -0.8, 0.3, 0.5])
  x = jax.random.uniform(jax.random.key(3), (10, 6))  # some coordinates near the box edges
  y = jnp.array([0, 1] * 5)
  s = (2 * y - 1)[:, None].astype(jnp.float32)  # +1 for class 1, −1 for class 0
  return binary_linear(w), w, x, y, s


def test_fgsm_and_pgd_linf_closed_form_on_binary_linear(binary_setup):
  f, w, x, y, s = binary_setup
  eps = 0.07
  expected = jnp.clip(x - eps * s * jnp.sign(w), 0, 1)
  np.testing.assert_allclose(A.fgsm(f, KEY, x, y, epsilon=eps), expected, atol=1e-6)
  np.testing.assert_allclose(
    A.pgd(f, KEY, x, y, epsilon=eps, step_size=0.02, num_steps=10), expected, atol=1e-6
  )


def test_fgm_and_pgd_l2_closed_form_on_binary_linear(binary_setup):
  f, w, _, y, s = binary_setup
  x = 0.5 + 0.1 * jax.random.uniform(jax.random.key(4), (10, 6), minval=-1, maxval=1)  # interior
  eps = 0.2
  expected = x - eps * s * w / jnp.linalg.norm(w)
  np.testing.assert_allclose(A.fgm(f, KEY, x, y, epsilon=eps), expected, atol=1e-6)
  np.testing.assert_allclose(
    A.pgd(f, KEY, x, y, epsilon=eps, step_size=0.05, num_steps=6, norm='l2', random_init=None),
    expected,
    atol=1e-6,
  )
  # From a random start, PGD-L2 still ends on (nearly) the same point.
  xr = A.pgd(f, KEY, x, y, epsilon=eps, step_size=0.05, num_steps=40, norm='l2')
  np.testing.assert_allclose(xr, expected, atol=2e-3)


def test_targeted_moves_toward_target(binary_setup):
  f, w, x, y, s = binary_setup
  eps = 0.05
  # Target = the true class: the targeted step must *increase* its margin (opposite of untargeted).
  np.testing.assert_allclose(
    A.fgsm(f, KEY, x, y, epsilon=eps, targeted=True), jnp.clip(x + eps * s * jnp.sign(w), 0, 1), atol=1e-6
  )


def test_cw_l2_finds_minimal_distance_on_multiclass_linear():
  # Orthonormal class weights make every ‖w_y − w_j‖ equal, so the nearest boundary is the one
  # against the runner-up class. (With arbitrary weights CW's margin follows the runner-up logit,
  # which need not be the nearest boundary: CW is a local method.)
  d, k = 12, 5
  W = 3.0 * jnp.linalg.qr(jax.random.normal(jax.random.key(5), (d, k)))[0]
  b = jax.random.normal(jax.random.key(6), (k,)) * 0.1
  x = jax.random.uniform(jax.random.key(7), (40, d), minval=0.35, maxval=0.65)
  z = x @ W + b
  y = jnp.argmax(z, -1)
  zy = jnp.take_along_axis(z, y[:, None], 1)
  wd = jnp.linalg.norm(W[:, y].T[:, :, None] - W[None], axis=1)  # ‖w_y − w_j‖, (B, K)
  dist = jnp.where(jax.nn.one_hot(y, k, dtype=bool), jnp.inf, (zy - z) / wd).min(1)
  interior = np.asarray(dist < 0.3)  # the minimiser stays inside [0,1]: coordinates move < 0.3
  assert interior.sum() >= 10
  f = multiclass_linear(W, b)
  xa = A.cw_l2(f, KEY, x, y, max_iterations=1000, binary_search_steps=9)
  found = np.asarray(jnp.linalg.norm(xa - x, axis=1))
  fooled = np.asarray(jnp.argmax(f(xa, None), -1) != y)
  assert fooled[interior].all()
  ratio = found[interior] / np.asarray(dist)[interior]
  assert ratio.min() >= 1 - 1e-3 and ratio.max() <= 1.05, ratio


# --------------------------------------------------------------------------------- strength
def test_strength_ordering_on_trained_model(trained):
  f, x, y = trained
  eps = 0.12
  clean = acc(f, x, y)
  a_fgsm = acc(f, A.fgsm(f, KEY, x, y, epsilon=eps), y)
  a_pgd = acc(f, A.pgd(f, KEY, x, y, epsilon=eps, step_size=0.01, num_steps=20), y)
  a_apgd = acc(f, A.apgd(f, KEY, x, y, epsilon=eps, num_steps=20), y)
  a_noise = acc(f, A.uniform_noise(f, KEY, x, y, epsilon=eps), y)
  assert clean > 0.95
  assert a_pgd <= a_fgsm < clean
  assert a_apgd <= a_pgd
  assert a_noise > a_fgsm  # blind noise is weaker than a gradient step


def test_cw_reduces_accuracy_with_small_perturbations(trained):
  f, x, y = trained
  xa = A.cw_l2(
    f,
    KEY,
    x[:32],
    y[:32],
    max_iterations=60,
    binary_search_steps=4,
    initial_const=1.0,
    learning_rate=0.05,
    unroll=10,
  )  # chunked loop: exercises the while-loop path
  assert acc(f, xa, y[:32]) < 0.2
  # The L2 budget variant keeps only successes within ε: with ε = 0 nothing changes.
  np.testing.assert_array_equal(
    A.cw_l2(f, KEY, x[:8], y[:8], max_iterations=10, binary_search_steps=1, epsilon=0.0), x[:8]
  )


def test_restarts_never_worse_than_one_start(trained):
  f, x, y = trained
  kw = dict(epsilon=0.1, num_steps=3, loss='ce')
  one = A.pgd(f, KEY, x, y, **kw)
  many = A.pgd(f, KEY, x, y, restarts=4, **kw)
  assert acc(f, many, y) <= acc(f, one, y)


def test_eot_on_deterministic_model_equals_plain(trained):
  f, x, y = trained
  plain = A.pgd(f, KEY, x, y, epsilon=0.1, num_steps=4)
  eot = A.eot(A.pgd, 4)(f, KEY, x, y, epsilon=0.1, num_steps=4)
  # Two programs: equal up to the rare pixel whose gradient is within rounding of zero.
  assert_attacks_agree(plain, eot)
  plain_a = A.apgd(f, KEY, x, y, epsilon=0.1, num_steps=5)
  eot_a = A.eot(A.apgd, 2)(f, KEY, x, y, epsilon=0.1, num_steps=5)
  assert_attacks_agree(plain_a, eot_a)


def test_eot_averages_gradients_of_a_stochastic_model():
  # f(x, k) = s·x with s = ±1 at random: the expected gradient is 0 for the target class; a single
  # draw is ±1. With a fixed class-1 label, EOT over many keys gives a small mean gradient.
  def f(x, key):
    s = jnp.where(jax.random.bernoulli(key, 0.75), 1.0, -1.0)
    z = s * x.sum(-1)
    return jnp.stack([-z, z], -1)

  x = jnp.full((1, 3), 0.5)
  y = jnp.array([1])
  _, _, g = A.loss_and_grad(f, A.margin, x, y, KEY, eot_samples=4000)
  # margin = −max(z_y − z_other, 0) = −2·s·Σx for s=+1 (gap>0), 0 for s=−1: E[∇] = −2·0.75.
  np.testing.assert_allclose(g, -1.5, atol=0.06)


def test_apgd_checkpoints_match_autoattack():
  ks = A.checkpoint_schedule(100)
  assert np.nonzero(ks)[0].tolist() == [21, 40, 56, 69, 79, 86, 92, 98]
  assert ks[21] == 22 and ks[40] == 19 and ks[92] == 6


# --------------------------------------------------------------------------- reproducibility
def test_same_key_same_bits_and_different_key_differs(trained):
  f, x, y = trained
  a = A.pgd(f, KEY, x, y, epsilon=0.1, num_steps=3)
  b = A.pgd(f, KEY, x, y, epsilon=0.1, num_steps=3)
  c = A.pgd(f, jax.random.key(9), x, y, epsilon=0.1, num_steps=3)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize('attack', ['pgd', 'apgd', 'uniform'])
def test_one_example_alone_equals_inside_batch_with_per_example_keys(trained, attack):
  f, x, y = trained
  x, y = x[:8], y[:8]
  keys = jax.random.split(KEY, 8)
  fn = {
    'pgd': functools.partial(A.pgd, epsilon=0.1, num_steps=3),
    'apgd': functools.partial(A.apgd, epsilon=0.1, num_steps=5),
    'uniform': functools.partial(A.uniform_noise, epsilon=0.1),
  }[attack]
  batch = fn(f, keys, x, y)
  alone = fn(f, keys[3:4], x[3:4], y[3:4])
  assert_attacks_agree(batch[3:4], alone)


def test_scalar_epsilon_equals_constant_vector(trained):
  f, x, y = trained
  a = A.pgd(f, KEY, x, y, epsilon=0.1, step_size=0.03, num_steps=3)
  b = A.pgd(
    f, KEY, x, y, epsilon=jnp.full((x.shape[0],), 0.1), step_size=jnp.full((x.shape[0],), 0.03), num_steps=3
  )
  assert_attacks_agree(a, b)  # a broadcast and a per-example array: two programs


def test_epsilon_grid_under_vmap_equals_loop(trained):
  f, x, y = trained
  x, y = x[:16], y[:16]
  grid = jnp.array([0.0, 0.05, 0.1, 0.2])
  out = A.over_epsilons(A.pgd, f, KEY, x, y, grid, num_steps=3)
  for i, e in enumerate(grid):
    assert_attacks_agree(out[i], A.pgd(f, KEY, x, y, epsilon=e, num_steps=3))


def test_second_call_does_not_retrace():
  traces = []
  W = jnp.ones((4, 3))

  def f(x, key):
    traces.append(1)
    return x @ W

  x = jnp.full((5, 4), 0.5)
  y = jnp.zeros(5, jnp.int32)
  A.pgd(f, KEY, x, y, epsilon=0.1, num_steps=2)
  n = len(traces)
  A.pgd(f, jax.random.key(1), x + 0.1, y, epsilon=0.2, num_steps=2)
  assert len(traces) == n


def test_attacks_compose_under_outer_jit(trained):
  f, x, y = trained
  inner = A.pgd(f, KEY, x, y, epsilon=0.1, num_steps=3)
  outer = jax.jit(
    lambda p, k, x, y: A.pgd(jax.tree_util.Partial(f.func, p), k, x, y, epsilon=0.1, num_steps=3)
  )(f.args[0], KEY, x, y)
  assert_attacks_agree(inner, outer)


# --------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
  'kwargs,match',
  [
    (dict(epsilon=-0.1), 'epsilon must be >= 0'),
    (dict(epsilon=0.1, num_steps=0), 'num_steps must be >= 1'),
    (dict(epsilon=jnp.nan), 'epsilon is NaN'),
    (dict(epsilon=0.1, norm='l1'), "unknown norm 'l1'"),
    (dict(epsilon=0.1, loss='hinge'), "unknown attack loss 'hinge'"),
    (dict(epsilon=jnp.ones(3)), r'epsilon must be a scalar or have shape \(4,\)'),
  ],
)
def test_bad_hyperparameters_raise(kwargs, match):
  f = multiclass_linear(jnp.ones((2, 3)), jnp.zeros(3))
  x = jnp.full((4, 2), 0.5)
  y = jnp.zeros(4, jnp.int32)
  with pytest.raises(ValueError, match=match):
    A.pgd(f, KEY, x, y, **kwargs)


@pytest.mark.parametrize(
  'x,y,match',
  [
    (jnp.full((4, 2), 1.5), jnp.zeros(4, jnp.int32), 'outside its bounds'),
    (jnp.full((4, 2), jnp.nan), jnp.zeros(4, jnp.int32), 'x contains NaN'),
    (jnp.full((4, 2), 0.5), jnp.array([0, 1, 2, 3]), 'label out of range.*3 classes'),
    (jnp.full((4, 2), 0.5), jnp.array([0, -1, 0, 0]), 'label out of range'),
    (jnp.full((4, 2), 0.5), jnp.zeros(3, jnp.int32), r'y must have shape \(4,\)'),
    (jnp.full((4, 2), 0.5), jnp.zeros(4), 'integer labels'),
  ],
)
@pytest.mark.parametrize(
  'attack',
  [
    functools.partial(A.pgd, epsilon=0.1),
    functools.partial(A.cw_l2, max_iterations=2),
    functools.partial(A.apgd, epsilon=0.1),
    functools.partial(A.fgsm, epsilon=0.1),
    functools.partial(A.uniform_noise, epsilon=0.1),
  ],
)
def test_bad_inputs_raise_naming_the_problem(attack, x, y, match):
  f = multiclass_linear(jnp.ones((2, 3)), jnp.zeros(3))
  with pytest.raises(ValueError, match=match):
    attack(f, KEY, x, y)


def test_cw_early_abort_barely_moves_the_distances(trained):
  """Aborting when the batch's summed objective stalls (as the reference does) keeps the
  attack's distances: the median L2 moves by less than 1 % against running the whole budget."""
  f, x, y = trained
  kw = dict(max_iterations=200, binary_search_steps=1, initial_const=1.0, learning_rate=0.01)
  dists = []
  for abort in (True, False):
    xa = A.cw_l2(f, KEY, x, y, abort_early=abort, **kw)
    ok = np.asarray(jnp.argmax(f(xa, KEY), -1) != y)
    dists.append(np.sqrt(np.sum((np.asarray(xa) - np.asarray(x)) ** 2, axis=tuple(range(1, x.ndim))))[ok])
  assert len(dists[0]) > 0.5 * len(x) and abs(len(dists[0]) - len(dists[1])) <= 0.02 * len(x)
  assert abs(np.median(dists[0]) / np.median(dists[1]) - 1) < 0.01


def test_unrolled_and_rolled_loops_agree(trained, monkeypatch):
  """The CPU default unrolls short attack loops and rolls long ones (the suite itself runs rolled,
  for compile time)."""
  f, x, y = trained
  monkeypatch.setattr(_loop, '_UNROLL_OVERRIDE', [None])
  assert A.default_unroll(10) == (10 if jax.default_backend() == 'cpu' else 1)
  assert A.default_unroll(20) == (20 if jax.default_backend() == 'cpu' else 1)
  assert A.default_unroll(100) == 1
  assert A.default_unroll(10, eot_samples=20) == 1  # EOT steps compile 11× slower straight-line
  for attack in (
    functools.partial(A.pgd, epsilon=0.1, num_steps=4),
    functools.partial(A.apgd, epsilon=0.1, num_steps=6),
  ):
    assert_attacks_agree(attack(f, KEY, x, y), attack(f, KEY, x, y, unroll=1))
  A.set_default_unroll(3)
  assert A.default_unroll(10) == 3 and A.default_unroll(2) == 2
  with pytest.raises(ValueError, match='set_default_unroll: unroll'):
    A.set_default_unroll(0)


@pytest.mark.parametrize('attack', ['pgd', 'apgd'])
def test_eot_attacks_run_rolled_loops_by_default(attack, monkeypatch):
  """The unroll factor the attack hands its loop: straight-line for one draw on the CPU, rolled
  with EOT (a fresh shape, so that the attack is traced and its loop built here)."""
  monkeypatch.setattr(_loop, '_UNROLL_OVERRIDE', [None])
  seen = []
  fori = _loop.fori
  monkeypatch.setattr(
    _loop, 'fori', lambda n, body, init, unroll: seen.append(unroll) or fori(n, body, init, unroll)
  )
  f = lambda x, key: x.reshape(x.shape[0], -1)[:, :4] * 3.0  # noqa: E731
  x, y = jnp.full((3, 2, 3, 1), 0.5), jnp.array([0, 1, 2])
  for eot in (1, 2):
    seen.clear()
    getattr(A, attack)(f, KEY, x, y, epsilon=0.1, num_steps=5, eot_samples=eot)
    assert seen and max(seen) == (5 if eot == 1 and jax.default_backend() == 'cpu' else 1), (eot, seen)


def test_the_gradient_is_chunked_by_default_only_inside_rolled_loops_on_the_cpu(monkeypatch):
  r = _loop.resolve_microbatch
  cpu = jax.default_backend() == 'cpu'
  assert r(None, 500, rolled=True) == (_loop.AUTO_MICROBATCH if cpu else None)
  assert r(None, 500, eot_samples=20, rolled=True) is None  # EOT: the whole batch, as measured
  assert r(16, 500, eot_samples=20) == 16
  assert r(None, 500, rolled=False) is None  # straight-line loops: no copy of the gradient per chunk
  assert r(None, _loop.AUTO_MICROBATCH, rolled=True) is None  # one chunk is the whole batch
  assert r(0, 500, rolled=True) is None and r(16, 500) == 16 and r(600, 500) is None
  monkeypatch.setattr(_loop.jax, 'default_backend', lambda: 'gpu')
  assert r(None, 500, rolled=True) is None


def _noisy_linear(x, key):
  """Logits of a linear map plus noise drawn per call: chunks must draw as the key schedule says."""
  z = x.reshape(x.shape[0], -1) @ jnp.linspace(-1.0, 1.0, 36 * 4).reshape(36, 4)
  return z + jax.random.normal(key, z.shape)


@pytest.mark.long
def test_mapped_chunks_equal_the_whole_batch_and_draw_as_the_straight_line_chunks(trained):
  f, x, y = trained
  x, y = x[:37], y[:37]  # 37 = 4 chunks of 10, the last one padded
  whole = _loop.loss_and_grad(f, A.cross_entropy, x, y, KEY)
  mapped = _loop.loss_and_grad(f, A.cross_entropy, x, y, KEY, microbatch=10, mapped=True)
  for w, m in zip(whole, mapped):
    assert w.shape == m.shape
    np.testing.assert_allclose(w, m, rtol=1e-5, atol=1e-6)
  straight = _loop.loss_and_grad(_noisy_linear, A.cross_entropy, x, y, KEY, eot_samples=3, microbatch=10)
  mapped = _loop.loss_and_grad(
    _noisy_linear, A.cross_entropy, x, y, KEY, eot_samples=3, microbatch=10, mapped=True
  )
  for s, m in zip(straight, mapped):
    np.testing.assert_allclose(s, m, rtol=1e-5, atol=1e-6)


def test_a_rolled_attack_holds_one_copy_of_the_gradient_whatever_the_batch(trained):
  """The default chunks of a rolled loop are one `lax.map`, so the program does not grow with
  the batch (straight-line chunks would add a copy of the gradient per chunk)."""
  f, x, y = trained
  x, y = jnp.tile(x, (2, 1, 1, 1)), jnp.tile(y, 2)
  count = lambda n: (
    jax.jit(lambda x, y: A.apgd(f, KEY, x, y, epsilon=0.1, num_steps=30, unroll=1))
    .lower(x[:n], y[:n])
    .as_text()
    .count('dot_general')
  )
  assert count(4 * _loop.AUTO_MICROBATCH) == count(_loop.AUTO_MICROBATCH + 1)  # 4 chunks, 2 chunks


def test_each_attacks_declared_schema_is_what_its_function_takes():
  """The registry declares what a spec may set; the declaration must name exactly the function's
  keyword arguments (less the ones the name fixes), so a spec can neither miss an argument nor set
  one the function lacks."""
  import inspect

  from jaxrobust.attacks import _registry

  for name in _registry.attack_names():
    entry = _registry._ATTACKS[name]
    fn = A.fgsm if entry.fn is A.fgm else entry.fn  # fgm forwards its keywords to fgsm with norm='l2'
    fixed = set(entry.fixed) | ({'norm'} if entry.fn is A.fgm else set())
    takes = set(inspect.signature(fn).parameters) - {'logits_fn', 'key', 'x', 'y'} - fixed
    assert entry.settable == takes, (name, sorted(entry.settable ^ takes))
    A.build_attack({'name': name, **{k: v for k, v in [('epsilon', 0.1)] if k in entry.settable}})
