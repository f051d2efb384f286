"""Stochastic LWTA and IBP layers: statistics within 4σ, closed-form KLs against Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import models as M

K0, K1 = jax.random.key(0), jax.random.key(1)


def lwta_apply(mode, h, key=None, **kw):
  det = mode == 'argmax'
  m = M.LWTA(mode='auto' if det else mode, deterministic=det, **kw)
  rngs = {} if key is None else {'stochastic': key}
  v = m.init({'params': K0, 'stochastic': K0}, h)
  return m.apply(v, h, rngs=rngs)


def winners(y, h, U):
  """Index of the non-zero unit in each block (hard outputs are h at the winner, 0 elsewhere)."""
  return jnp.argmax(jnp.abs(y).reshape(y.shape[:-1] + (-1, U)), -1)


def test_same_key_same_output_and_different_keys_differ():
  h = jax.random.normal(K0, (16, 8, 8, 6))
  a = lwta_apply('eval', h, K1)
  np.testing.assert_array_equal(a, lwta_apply('eval', h, K1))
  b = lwta_apply('eval', h, jax.random.key(2))
  assert not np.array_equal(winners(a, h, 2), winners(b, h, 2))


def test_winner_frequencies_match_softmax_within_4_sigma():
  h = jnp.array([[0.3, -0.5, 1.2, 0.1, 2.0, -1.0, 0.5, 0.6]])  # two blocks of U=4, no zeros
  n = 6000
  keys = jax.random.split(K1, n)
  y = jax.vmap(lambda k: lwta_apply('hard', h, k, U=4))(keys)[:, 0]
  w = np.asarray(winners(y, h, 4))  # (n, 2)
  p = np.asarray(jax.nn.softmax(h.reshape(2, 4), -1))
  for blk in range(2):
    freq = np.bincount(w[:, blk], minlength=4) / n
    sigma = np.sqrt(p[blk] * (1 - p[blk]) / n)
    assert np.all(np.abs(freq - p[blk]) <= 4 * sigma), (freq, p[blk])


@pytest.mark.parametrize('mode', ['hard', 'eval'])
def test_two_unit_winner_frequencies_match_sigmoid_within_4_sigma(mode):
  # U = 2 takes the closed form σ((h₁ − h₂ + L)/T): P(first unit wins) must be σ(h₁ − h₂).
  h = jnp.array([[0.3, -0.5, 1.2, 0.1, -2.0, 1.0, 0.5, 0.5]])
  n = 8000
  y = jax.vmap(lambda k: lwta_apply(mode, h, k))(jax.random.split(K1, n))[:, 0]
  first = np.asarray(jnp.abs(y.reshape(n, 4, 2))[..., 0] > jnp.abs(y.reshape(n, 4, 2))[..., 1])
  p = np.asarray(jax.nn.sigmoid(h[0, 0::2] - h[0, 1::2]))
  sigma = np.sqrt(p * (1 - p) / n)
  assert np.all(np.abs(first.mean(0) - p) <= 4 * sigma), (first.mean(0), p)


def test_two_unit_relaxed_law_is_the_binary_concrete():
  # ξ₁ = softmax((h + G)/T)₁ has CDF P(ξ₁ ≤ s) = σ(T·logit(s) − (h₁ − h₂)); check it at several s,
  # against the general Gumbel-softmax path (U = 2 written as one block of a U = 2 softmax).
  h1, h2, temp, n = 0.7, -0.2, 0.67, 20_000
  h = jnp.array([[h1, h2]])
  keys = jax.random.split(K0, n)
  xi = jax.vmap(lambda k: lwta_apply('relaxed', h, k, temperature=temp))(keys)[:, 0, 0] / h1
  g = jax.vmap(lambda k: M.gumbel_noise(k, (2,)))(keys)
  xi_gumbel = jax.nn.softmax((h[0] + g) / temp, -1)[:, 0]
  for s in (0.05, 0.2, 0.5, 0.8, 0.95):
    cdf = float(jax.nn.sigmoid(temp * np.log(s / (1 - s)) - (h1 - h2)))
    tol = 4 * np.sqrt(cdf * (1 - cdf) / n)
    assert abs(float(jnp.mean(xi <= s)) - cdf) <= tol, s
    assert abs(float(jnp.mean(xi_gumbel <= s)) - cdf) <= tol, s


def test_two_unit_kl_equals_the_categorical_kl():
  h = jax.random.normal(K0, (64, 2)) * 3
  np.testing.assert_allclose(M.binary_kl_uniform(h[:, 0] - h[:, 1]), M.categorical_kl_uniform(h), atol=1e-6)


def test_hard_mode_has_exactly_one_winner_and_low_t_is_near_one_hot():
  h = jax.random.normal(K0, (32, 10)) + 0.1
  y = lwta_apply('hard', h, K1)
  nz = (np.asarray(y).reshape(32, 5, 2) != 0).sum(-1)
  assert np.all(nz == 1)
  # Straight-through: forward is one-hot, so y ∈ {h at the winner, 0}.
  y_eval = lwta_apply('eval', h, K1).reshape(32, 5, 2)
  hb = np.asarray(h).reshape(32, 5, 2)
  xi = np.asarray(y_eval) / hb
  assert np.mean(np.max(xi, -1) > 0.99) > 0.9  # T = 0.01: nearly one-hot
  y_relaxed = lwta_apply('relaxed', h, K1, temperature=5.0).reshape(32, 5, 2)
  assert np.mean(np.max(np.asarray(y_relaxed) / hb, -1) > 0.99) < 0.2  # high T: soft


def test_argmax_mode_is_deterministic_and_key_free():
  h = jax.random.normal(K0, (8, 12))
  a = lwta_apply('argmax', h)  # no key needed
  b = lwta_apply('argmax', h, K1)
  np.testing.assert_array_equal(a, b)
  hb = h.reshape(8, 6, 2)
  np.testing.assert_array_equal(a, (hb * jax.nn.one_hot(jnp.argmax(hb, -1), 2)).reshape(8, 12))


def test_missing_key_gives_clear_error_and_bad_channels():
  with pytest.raises(ValueError, match='needs a PRNG key.*stochastic'):
    lwta_apply('eval', jnp.ones((2, 4)))
  with pytest.raises(ValueError, match='not divisible into blocks of U=2'):
    lwta_apply('argmax', jnp.ones((2, 5)))


@pytest.mark.parametrize(
  'fields, match',
  [
    (dict(temperature=0.0), 'temperature must be a finite number > 0, got 0.0'),
    (dict(temperature=-0.67), 'temperature must be a finite number > 0'),
    (dict(eval_temperature=float('nan')), 'eval_temperature must be a finite number > 0'),
    (dict(U=1), r'U \(units per block\) must be an integer >= 2, got 1'),
    (dict(U=2.0), 'U .* must be an integer >= 2'),
  ],
)
def test_temperatures_and_block_sizes_that_would_give_silent_nonsense_are_refused(fields, match):
  with pytest.raises(ValueError, match=match):
    M.LWTA(**fields).init({'params': K0, 'stochastic': K0}, jnp.ones((1, 4)), deterministic=False)


def test_learnable_temperature_starts_at_softplus_minus_001():
  m = M.LWTA(learn_temperature=True)
  v = m.init({'params': K0, 'stochastic': K0}, jnp.ones((1, 4)), deterministic=False)
  assert float(v['params']['temperature']) == pytest.approx(-0.01)


# ----------------------------------------------------------------------------------- KL terms
@pytest.mark.parametrize('a,b,alpha', [(2.0, 1.0, 1.0), (0.8, 3.0, 1.0), (5.0, 0.7, 2.0), (1.0, 1.0, 1.0)])
def test_kumaraswamy_beta_kl_matches_monte_carlo(a, b, alpha):
  u = M.kumaraswamy_sample(K1, a, b, (400_000,))
  v = jax.random.uniform(K1, (400_000,), minval=1e-6, maxval=1.0 - 1e-6)  # the sampler's uniforms
  np.testing.assert_allclose(u, (1 - (1 - v) ** (1 / b)) ** (1 / a), rtol=1e-6)
  # log q(u) with log(1 − u^a) = log(1 − v)/b exactly (u^a rounds to 1 in float32 when b < 1).
  log_q = jnp.log(a) + jnp.log(b) + (a - 1) * jnp.log(u) + (b - 1) / b * jnp.log1p(-v)
  log_p = jnp.log(alpha) + (alpha - 1) * jnp.log(u)  # Beta(α, 1)
  mc = log_q - log_p
  closed = float(M.kl_kumaraswamy_beta(a, b, alpha))
  assert closed >= 0
  assert abs(closed - float(mc.mean())) <= 4 * float(mc.std()) / np.sqrt(u.size) + 1e-3


@pytest.mark.parametrize('a,b', [(2.0, 1.0), (0.5, 3.0), (4.0, 0.6)])
def test_kumaraswamy_sample_mean_matches_analytic(a, b):
  u = M.kumaraswamy_sample(K0, a, b, (200_000,))
  mean = float(M.kumaraswamy_mean(a, b))
  assert abs(float(u.mean()) - mean) <= 4 * float(u.std()) / np.sqrt(u.size)
  assert float(u.max()) < 1.0 and float(u.min()) > 0.0


def test_bernoulli_categorical_gaussian_kls_match_monte_carlo():
  q, pi = 0.3, 0.8
  z = jax.random.bernoulli(K0, q, (400_000,))
  mc = jnp.where(z, jnp.log(q / pi), jnp.log((1 - q) / (1 - pi))).mean()
  assert float(M.kl_bernoulli(jnp.array(q), jnp.log(pi))) == pytest.approx(float(mc), abs=4e-3)
  logits = jnp.array([0.5, -1.0, 2.0])
  c = jax.random.categorical(K0, logits, shape=(400_000,))
  logq = jax.nn.log_softmax(logits)
  assert float(M.categorical_kl_uniform(logits)) == pytest.approx(
    float((logq[c] + jnp.log(3)).mean()), abs=4e-3
  )
  mu, sigma = 0.7, 0.4
  w = mu + sigma * jax.random.normal(K1, (400_000,))
  mc_g = (-jnp.log(sigma) - 0.5 * ((w - mu) / sigma) ** 2 + 0.5 * w**2).mean()
  assert float(M.kl_gaussian_std_normal(mu, sigma)) == pytest.approx(float(mc_g), abs=4e-3)
  for kl in (
    M.kl_bernoulli(jnp.linspace(0.01, 0.99, 9), jnp.log(jnp.linspace(0.05, 0.95, 9))),
    M.categorical_kl_uniform(jax.random.normal(K0, (50, 4))),
    M.kl_gaussian_std_normal(jax.random.normal(K0, (50,)), jnp.exp(jax.random.normal(K1, (50,)))),
    M.kl_kumaraswamy_beta(jnp.exp(jax.random.normal(K0, (50,))), jnp.exp(jax.random.normal(K1, (50,)))),
  ):
    assert float(kl.min()) >= -1e-6


def test_ibp_gate_is_shared_by_the_units_of_a_block():
  layer = M.LWTADense(features=6, U=3, deterministic=False)
  x = jnp.eye(4)
  v = layer.init({'params': K0, 'stochastic': K0}, x, train=True)
  v = jax.tree.map(lambda a: a, v)
  v['params']['weights']['kernel'] = jnp.ones((4, 6))
  y = layer.apply(v, x, train=True, rngs={'stochastic': K1}, mutable=['kl'])[0]
  # Row i = z[i, block] repeated over the U=3 units of each block (repeat, not tile).
  blocks = np.asarray(y).reshape(4, 2, 3)
  np.testing.assert_allclose(blocks, np.repeat(blocks[..., :1], 3, -1), rtol=1e-6)
  y_test = layer.apply(v, x, train=False)
  t = v['params']['gate']['t']
  q = jax.nn.sigmoid(t)
  np.testing.assert_allclose(y_test, jnp.repeat(q * (q > 0.01), 3, -1), rtol=1e-6)


@pytest.mark.long
@pytest.mark.parametrize(
  'name,mode',
  [('small_cnn_lwta', m) for m in ('auto', 'hard', 'argmax')]
  + [('small_cnn_ibp', 'auto'), ('wrn_tiny_lwta', 'auto')],
)
def test_gradients_are_finite_in_every_mode(name, mode):
  shape = (2, 8, 8, 1) if 'cnn' in name else (2, 8, 8, 3)
  kw = dict(deterministic=True) if mode == 'argmax' else dict(lwta_mode=mode)
  m = M.create_model(name, num_classes=10, **kw, **({'bayesian': True} if 'ibp' in name else {}))
  x = jax.random.uniform(K0, shape)
  v = m.init({'params': K0, 'stochastic': K0}, x)
  for train in (True, False) if mode == 'auto' else (True,):

    def loss(p, x):
      out = m.apply(
        {**v, 'params': p}, x, train=train, rngs={'stochastic': K1}, mutable=['kl', 'batch_stats']
      )
      logits, st = out
      return jnp.sum(logits**2) + (M.collect_kl(st.get('kl', {})) if train else 0.0)

    gp, gx = jax.grad(loss, argnums=(0, 1))(v['params'], x)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(gp))
    assert np.all(np.isfinite(gx))


def _wrn_count(depth, k):
  from tests.test_models import _wrn_param_count

  return _wrn_param_count(depth, k)


def test_lwta_model_shapes_and_parameter_counts():
  for name, depth, k, shape in [
    ('wrn34_1_lwta', 34, 1, (2, 32, 32, 3)),
    ('wrn16_4_lwta', 16, 4, (2, 32, 32, 3)),
  ]:
    m = M.create_model(name, num_classes=10)
    s = jax.eval_shape(lambda: m.init({'params': K0, 'stochastic': K0}, jnp.zeros(shape)))
    assert sum(np.prod(a.shape) for a in jax.tree.leaves(s['params'])) == _wrn_count(depth, k)
    assert jax.eval_shape(lambda v: m.apply(v, jnp.zeros(shape), rngs={'stochastic': K0}), s).shape == (2, 10)
  # Learnable temperatures add one scalar per LWTA layer: 2 per block × 15 blocks + the final one.
  m = M.create_model('wrn34_1_lwta', num_classes=10, learn_temperature=True)
  s = jax.eval_shape(lambda: m.init({'params': K0, 'stochastic': K0}, jnp.zeros((1, 32, 32, 3))))
  assert sum(np.prod(a.shape) for a in jax.tree.leaves(s['params'])) == _wrn_count(34, 1) + 31
  # IBP convolutions add a, b and t (one each per block of U=2 channels) to every conv.
  m = M.create_model('small_cnn_ibp', num_classes=10)
  s = jax.eval_shape(lambda: m.init({'params': K0, 'stochastic': K0}, jnp.zeros((1, 28, 28, 1))))
  n = sum(np.prod(a.shape) for a in jax.tree.leaves(s['params']))
  base = 421_642
  gates = (
    3 * 16 + 3 * 32 + (2 * 64 + 3136 * 64)
  )  # conv: a,b,t per block; dense: a,b per block, t per (input, block)
  assert n == base + gates
  assert jax.eval_shape(
    lambda v: m.apply(v, jnp.zeros((3, 28, 28, 1)), rngs={'stochastic': K0}), s
  ).shape == (3, 10)


@pytest.mark.long
def test_monte_carlo_prediction():
  m = M.create_model('small_cnn_lwta', num_classes=10)
  x = jax.random.uniform(K0, (4, 28, 28, 1))
  v = m.init({'params': K0, 'stochastic': K0}, x)
  p = M.predict_mc(m, v, x, K1, num_samples=8)
  np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
  singles = jnp.stack([M.predict_single(m, v, x, k) for k in jax.random.split(K1, 8)])
  np.testing.assert_allclose(p, singles.mean(0), rtol=1e-4, atol=1e-6)
  det = m.clone(deterministic=True)
  np.testing.assert_allclose(
    M.predict_mc(det, v, x, K1, num_samples=3), M.predict_single(det, v, x, K0), rtol=1e-5
  )


@pytest.mark.parametrize('U', [2, 4])
def test_mean_field_equals_the_monte_carlo_mean_at_the_eval_temperature(U):
  """The 'mean' mode (h ⊙ softmax(h) per block, no sampling) against the average of sampled
  outputs at the evaluation temperature, unit by unit within 4σ (σ from the samples' spread;
  the temperature's own bias is O(T²) = 1e-4, far below it)."""
  h = jax.random.normal(K0, (1, 16)) * 1.5
  n = 6000
  y = jax.vmap(lambda k: lwta_apply('eval', h, k, U=U))(jax.random.split(K1, n))[:, 0]
  mean_field = np.asarray(lwta_apply('mean', h, U=U))[0]
  mc, sd = np.asarray(y.mean(0)), np.asarray(y.std(0))
  assert np.all(np.abs(mc - mean_field) <= 4 * sd / np.sqrt(n) + 1e-6), (mc, mean_field)
  assert not np.allclose(mean_field, np.asarray(lwta_apply('argmax', h, U=U))[0])  # not the argmax surrogate


@pytest.mark.parametrize('temperature', [0.1, 1.0])
def test_with_lwta_mode_sets_the_test_temperature_of_every_layer(temperature):
  """`with_lwta_mode(model, eval_temperature=T)` builds the network's LWTA layers at T. With tied
  units (h₁ = h₂ = 1) the first output is ξ₁ = σ(L/T), L logistic, so it lies in (0.05, 0.95)
  with probability 2σ(T·logit(0.95)) − 1: checked within 4σ over draws of the layer the network
  would build."""
  model = M.create_model('small_cnn_lwta', num_classes=10)
  act = M.with_lwta_mode(model, eval_temperature=temperature).act
  layer = act(deterministic=False)
  h = jnp.ones((1, 2))
  n = 20000
  v = layer.init({'params': K0, 'stochastic': K0}, h)
  y = jax.vmap(lambda k: layer.apply(v, h, rngs={'stochastic': k}))(jax.random.split(K1, n))[:, 0, 0]
  inside = np.asarray((y > 0.05) & (y < 0.95))
  p = 2 * jax.nn.sigmoid(temperature * np.log(0.95 / 0.05)) - 1
  assert abs(inside.mean() - p) <= 4 * np.sqrt(p * (1 - p) / n), (inside.mean(), p)
  with pytest.raises(ValueError, match='eval_temperature'):
    M.with_lwta_mode(model, eval_temperature=0.0)
