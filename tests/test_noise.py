"""Open-interval uniforms, Gumbel and logistic noise: moments and bin counts within 4σ, bit stability."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import models as M

K0, K1 = jax.random.key(0), jax.random.key(1)
N = 400_000


def _within_4_sigma(samples, mean, var):
  return abs(float(samples.mean()) - mean) <= 4 * np.sqrt(var / samples.size)


def test_uniform_open_is_uniform_and_strictly_inside_the_unit_interval():
  u = M.uniform_open(K0, (N // 8, 8))
  assert u.dtype == jnp.float32 and float(u.min()) > 0 and float(u.max()) < 1
  assert _within_4_sigma(u, 0.5, 1 / 12)
  counts = np.bincount(np.asarray(u * 20, dtype=int).ravel(), minlength=20)
  p = 1 / 20
  assert np.all(np.abs(counts / u.size - p) <= 4 * np.sqrt(p * (1 - p) / u.size)), counts
  # Both words of each hash are used: the two halves of the last axis must be uncorrelated.
  a, b = np.asarray(u[:, :4]).ravel(), np.asarray(u[:, 4:]).ravel()
  assert abs(np.corrcoef(a, b)[0, 1]) <= 4 / np.sqrt(a.size)
  # Neighbours along every axis are uncorrelated too (counters differ in every position).
  assert abs(np.corrcoef(np.asarray(u[:-1, 0]), np.asarray(u[1:, 0]))[0, 1]) <= 4 / np.sqrt(u.shape[0])


def test_uniform_open_bits_are_stable_and_key_dependent():
  a = M.uniform_open(K0, (3, 5, 7))  # odd last axis
  assert a.shape == (3, 5, 7)
  np.testing.assert_array_equal(a, jax.jit(M.uniform_open, static_argnums=1)(K0, (3, 5, 7)))
  assert not np.array_equal(a, M.uniform_open(K1, (3, 5, 7)))
  assert len(np.unique(np.asarray(a))) == a.size
  batched = jax.vmap(lambda k: M.uniform_open(k, (4, 6)))(jnp.stack([K0, K1]))
  np.testing.assert_array_equal(batched[0], M.uniform_open(K0, (4, 6)))
  np.testing.assert_array_equal(batched[1], M.uniform_open(K1, (4, 6)))
  assert M.uniform_open(K0, ()).shape == ()


def test_gumbel_and_logistic_moments():
  g = M.gumbel_noise(K0, (N,))
  assert _within_4_sigma(g, float(np.euler_gamma), np.pi**2 / 6)
  assert abs(float(g.var()) - np.pi**2 / 6) <= 0.05
  lg = M.logistic_noise(K1, (N,))
  assert _within_4_sigma(lg, 0.0, np.pi**2 / 3)
  assert abs(float(lg.var()) - np.pi**2 / 3) <= 0.1
  assert np.all(np.isfinite(g)) and np.all(np.isfinite(lg))
  # P(L ≤ x) = σ(x)
  for x in (-2.0, 0.0, 1.5):
    cdf = float(jax.nn.sigmoid(x))
    assert abs(float(jnp.mean(lg <= x)) - cdf) <= 4 * np.sqrt(cdf * (1 - cdf) / N)
  assert M.logistic_noise(K0, (4,), jnp.bfloat16).dtype == jnp.bfloat16


def test_counters_refuse_shapes_they_cannot_index():
  with pytest.raises(ValueError, match='too many elements per example'):
    jax.eval_shape(lambda: M.uniform_open(K0, (2, 2**16, 2**17)))
