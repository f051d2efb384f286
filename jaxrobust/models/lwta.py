"""Stochastic Local-Winner-Takes-All activations: Gumbel-softmax winners inside blocks of U units.

Channels are split into blocks of U consecutive units; one winner per block (per position for
convolutions) is drawn from a Gumbel-softmax over the block's pre-activations, and the output is
h ⊙ ξ: the winner keeps its linear value (which may be negative), the losers output 0.

References:
  Panousis et al. 2019, "Nonparametric Bayesian Deep Networks with Local Competition", ICML
  Panousis et al. 2021, "Local Competition and Stochasticity for Adversarial Robustness in Deep
  Learning", AISTATS, arXiv:2101.01121
  Panousis et al. 2022, "Stochastic Local Winner-Takes-All Networks Enable Profound Adversarial
  Robustness", arXiv:2112.02671
  Jang et al. 2017, "Categorical Reparameterization with Gumbel-Softmax", arXiv:1611.01144
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxrobust.models.common import STOCHASTIC

MODES = ('auto', 'relaxed', 'eval', 'hard', 'argmax')
KL_COLLECTION = 'kl'


def gumbel_noise(key, shape, dtype=jnp.float32):
  """G = −log(−log(V + 1e−8) + 1e−8), V ~ U(0,1), as the reference code."""
  v = jax.random.uniform(key, shape, dtype)
  return -jnp.log(-jnp.log(v + 1e-8) + 1e-8)


def categorical_kl_uniform(logits, axis=-1):
  """KL(softmax(logits) ‖ Uniform(1/U)) = Σ q (log q + log U), summed over `axis`; ≥ 0."""
  logq = jax.nn.log_softmax(logits, axis)
  return jnp.sum(jnp.exp(logq) * (logq + jnp.log(logits.shape[axis])), axis)


def require_rng(module: nn.Module, collection: str, what: str):
  """The module's key from `collection`, or a clear error saying how to pass it."""
  if not module.has_rng(collection):
    raise ValueError(
        f'{what} is stochastic and needs a PRNG key: call apply(..., rngs={{"{collection}": key}}) '
        f'(or use a deterministic mode such as "argmax").')
  return module.make_rng(collection)


class LWTA(nn.Module):
  """Stochastic LWTA activation, with the activation interface `(x, train) -> y`.

  Attributes:
    U: units per block (channels must be divisible by U).
    temperature: the training (relaxed) temperature T, fixed (HEAD code: 0.67).
    learn_temperature: T = softplus(τ) with a learnable τ per layer initialised at −0.01
      (T₀ ≈ 0.688, the released checkpoint's variant).
    eval_temperature: T at test time and under attack (0.01: nearly one-hot, still stochastic).
    mode: 'auto' (relaxed when train, eval temperature otherwise), 'relaxed', 'eval', 'hard'
      (straight-through: one-hot forward, relaxed gradient), or 'argmax' (deterministic winner
      = argmax h, no noise: the surrogate for transfer attacks).
    rng_collection: where keys come from.
    collect_kl: sow KL(q(ξ) ‖ Uniform) into the 'kl' collection (q = softmax(h) per block).
  """
  U: int = 2
  temperature: float = 0.67
  learn_temperature: bool = False
  eval_temperature: float = 0.01
  mode: str = 'auto'
  rng_collection: str = STOCHASTIC
  collect_kl: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.mode not in MODES:
      raise ValueError(f'LWTA: unknown mode {self.mode!r}; use one of {MODES}')
    c = x.shape[-1]
    if c % self.U:
      raise ValueError(f'LWTA: {c} channels are not divisible into blocks of U={self.U}')
    h = x.reshape(x.shape[:-1] + (c // self.U, self.U))
    t_train = self.temperature
    if self.learn_temperature:
      t_train = nn.softplus(self.param('temperature', nn.initializers.constant(-0.01), ()))
    mode = ('relaxed' if train else 'eval') if self.mode == 'auto' else self.mode
    if self.collect_kl and train:
      self.sow(KL_COLLECTION, 'xi', jnp.sum(categorical_kl_uniform(h)) / x.shape[0])
    if mode == 'argmax':
      xi = jax.nn.one_hot(jnp.argmax(h, -1), self.U, dtype=h.dtype)
    else:
      g = gumbel_noise(require_rng(self, self.rng_collection, 'LWTA'), h.shape, h.dtype)
      temp = self.eval_temperature if mode == 'eval' else t_train
      xi = jax.nn.softmax((h + g) / temp, axis=-1)
      if mode == 'hard':
        hard = jax.nn.one_hot(jnp.argmax(h + g, -1), self.U, dtype=h.dtype)
        xi = xi + jax.lax.stop_gradient(hard - xi)
    return (h * xi).reshape(x.shape)
