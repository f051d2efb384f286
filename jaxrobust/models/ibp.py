"""Indian Buffet Process layers with LWTA blocks: `LWTADense` and `LWTAConv`.

Each output block of U units has a utility gate z ~ Bernoulli(π) under a stick-breaking IBP prior
π_k = ∏_{i≤k} u_i, u_i ~ Beta(α, 1), with a Kumaraswamy(a, b) posterior over u and a relaxed
Bernoulli posterior over z (shared by the U units of a block: `repeat`, not `tile`). Weights may
be Gaussian, N(μ, softplus(ρ)²), reparameterised. The layers sow their KL terms into the 'kl'
collection; the LWTA competition itself is the `LWTA` activation applied to their output.

Test time (train=False) or deterministic: z = σ(t)·1[σ(t) > 0.01] and the weights are the
posterior means. The layers follow `nn.Dropout`'s protocol (`deterministic` field or call
argument, `rng_collection`).

References:
  Panousis et al. 2019, "Nonparametric Bayesian Deep Networks with Local Competition", ICML
  Nalisnick & Smyth 2017, "Stick-Breaking Variational Autoencoders" (Kumaraswamy KL), arXiv:1605.06197
  Maddison et al. 2017, "The Concrete Distribution", arXiv:1611.00712
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.scipy.special import digamma

from jaxrobust.models.common import (
  KL_COLLECTION,
  STOCHASTIC,
  add_bias,
  conv_with_kernel,
  merge_deterministic,
  require_rng,
)

EULER_GAMMA = 0.5772156649015329


# ------------------------------------------------------------------------- distributions
def kumaraswamy_sample(key, a, b, shape=None):
  """Inverse-CDF sample u = (1 − (1−V)^{1/b})^{1/a}, V ~ U(0,1) (not the reference's u ≈ 1 bug)."""
  shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b)) if shape is None else shape
  v = jax.random.uniform(key, shape, minval=1e-6, maxval=1.0 - 1e-6)
  u = (1.0 - (1.0 - v) ** (1.0 / b)) ** (1.0 / a)
  # Keep u in the open interval (float32 rounds u to 1 for b < 1), so log u and log(1−u) are finite.
  return jnp.clip(u, jnp.finfo(u.dtype).tiny, jnp.nextafter(jnp.asarray(1.0, u.dtype), 0.0))


def kumaraswamy_mean(a, b):
  """E[u] = b·B(1 + 1/a, b)."""
  lg = jax.scipy.special.gammaln
  return b * jnp.exp(lg(1.0 + 1.0 / a) + lg(b) - lg(1.0 + 1.0 / a + b))


def kl_kumaraswamy_beta(a, b, alpha=1.0):
  """KL(Kumaraswamy(a, b) ‖ Beta(α, 1)) = (1−α/a)(−γ−ψ(b)−1/b) + log(ab/α) − (b−1)/b (exact for β=1)."""
  return (1.0 - alpha / a) * (-EULER_GAMMA - digamma(b) - 1.0 / b) + jnp.log(a * b / alpha) - (b - 1.0) / b


def kl_bernoulli(q, log_pi, eps=1e-7):
  """KL(Bernoulli(q) ‖ Bernoulli(π)), with π given as log π."""
  q = jnp.clip(q, eps, 1 - eps)
  pi = jnp.clip(jnp.exp(log_pi), eps, 1 - eps)
  return q * (jnp.log(q) - jnp.log(pi)) + (1 - q) * (jnp.log1p(-q) - jnp.log1p(-pi))


def kl_gaussian_std_normal(mu, sigma):
  """KL(N(μ, σ²) ‖ N(0, 1)) = −log σ + (σ² + μ²)/2 − 1/2 (the reference used 2σ for 2 log σ)."""
  return -jnp.log(sigma) + 0.5 * (sigma**2 + mu**2) - 0.5


def relaxed_bernoulli(key, logit, temperature):
  """σ((L + t)/T) with logistic noise L = log V − log(1−V)."""
  v = jax.random.uniform(key, jnp.shape(logit), minval=1e-6, maxval=1.0 - 1e-6)
  return jax.nn.sigmoid((jnp.log(v) - jnp.log1p(-v) + logit) / temperature)


class _IBPGate(nn.Module):
  """Stick-breaking IBP gate over K blocks, for gate arrays of shape `gate_shape` (last axis K)."""

  num_blocks: int
  gate_shape: Sequence[int]
  alpha: float = 1.0
  a_init: float = 2.0
  b_init: float = 0.5453
  t_range: tuple[float, float] = (4.0, 5.0)
  temperature: float = 0.67
  threshold: float = 0.01
  rng_collection: str = STOCHASTIC

  @nn.compact
  def __call__(self, train: bool):
    k = self.num_blocks
    a = nn.softplus(self.param('a', nn.initializers.constant(self.a_init), (k,)))
    b = nn.softplus(self.param('b', nn.initializers.constant(self.b_init), (k,)))
    lo, hi = self.t_range
    t = self.param(
      't', lambda key, s: jax.random.uniform(key, s, minval=lo, maxval=hi), tuple(self.gate_shape)
    )
    q = jax.nn.sigmoid(t)
    if not train:
      return q * (q > self.threshold)
    key = require_rng(self, self.rng_collection, 'IBP layer')
    k_u, k_z = jax.random.split(key)
    u = kumaraswamy_sample(k_u, a, b)
    log_pi = jnp.cumsum(jnp.log(u))  # stick-breaking over blocks
    self.sow(KL_COLLECTION, 'kumaraswamy', jnp.sum(kl_kumaraswamy_beta(a, b, self.alpha)))
    self.sow(KL_COLLECTION, 'bernoulli', jnp.sum(kl_bernoulli(q, log_pi)))
    return relaxed_bernoulli(k_z, t, self.temperature)


class _Weights(nn.Module):
  """Deterministic weights, or a reparameterised Gaussian posterior N(μ, softplus(ρ)²)."""

  shape: Sequence[int]
  kernel_init: Any
  bayesian: bool = False
  rho_init: float = -5.0
  rng_collection: str = STOCHASTIC

  @nn.compact
  def __call__(self, train: bool):
    mu = self.param('kernel', self.kernel_init, tuple(self.shape))
    if not self.bayesian:
      return mu
    sigma = nn.softplus(self.param('rho', nn.initializers.constant(self.rho_init), tuple(self.shape)))
    if not train:
      return mu
    self.sow(KL_COLLECTION, 'weights', jnp.sum(kl_gaussian_std_normal(mu, sigma)))
    eps = jax.random.normal(require_rng(self, self.rng_collection, 'Bayesian weights'), mu.shape, mu.dtype)
    return mu + sigma * eps


class LWTADense(nn.Module):
  """Dense layer with IBP block gates: one z per (input, block), shared by the block's U units.

  Same call signature as nn.Dense plus `train`; follow it with the `LWTA` activation.
  """

  stochastic_layer = True
  features: int
  U: int = 2
  use_bias: bool = True
  bayesian: bool = False
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  gate: dict | None = None
  deterministic: bool | None = None
  rng_collection: str = STOCHASTIC

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    if self.features % self.U:
      raise ValueError(f'LWTADense: features={self.features} not divisible by U={self.U}')
    sample = not merge_deterministic(self.deterministic, deterministic) and train
    k = self.features // self.U
    w = _Weights(
      (x.shape[-1], self.features),
      self.kernel_init,
      self.bayesian,
      rng_collection=self.rng_collection,
      name='weights',
    )(sample)
    z = _IBPGate(k, (x.shape[-1], k), **(self.gate or {}), rng_collection=self.rng_collection, name='gate')(
      sample
    )
    return add_bias(self, x @ (w * jnp.repeat(z, self.U, axis=-1)))


class LWTAConv(nn.Module):
  """Convolution with IBP block gates: one z per output block, shared by its U channels.

  Accepts nn.Conv's arguments (so it slots into the WRN's `conv` factory) plus `train`.
  """

  stochastic_layer = True
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] | int = (1, 1)
  padding: Any = 'SAME'
  use_bias: bool = True
  U: int = 2
  bayesian: bool = False
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  gate: dict | None = None
  deterministic: bool | None = None
  rng_collection: str = STOCHASTIC

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    if self.features % self.U:
      raise ValueError(f'LWTAConv: features={self.features} not divisible by U={self.U}')
    sample = not merge_deterministic(self.deterministic, deterministic) and train
    k = self.features // self.U
    shape = tuple(self.kernel_size) + (x.shape[-1], self.features)
    w = _Weights(shape, self.kernel_init, self.bayesian, rng_collection=self.rng_collection, name='weights')(
      sample
    )
    z = _IBPGate(k, (k,), **(self.gate or {}), rng_collection=self.rng_collection, name='gate')(sample)
    w = w * jnp.repeat(z, self.U, axis=-1)
    return conv_with_kernel(self, x, w)


def collect_kl(kl_tree) -> jax.Array:
  """Σ of every KL term sown into the 'kl' collection (0 when there are none)."""
  leaves = jax.tree.leaves(kl_tree)
  return sum((jnp.sum(l) for l in leaves), jnp.zeros(()))
