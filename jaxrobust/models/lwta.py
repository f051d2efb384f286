"""Stochastic Local-Winner-Takes-All activations: Gumbel-softmax winners inside blocks of U units.

Channels are split into blocks of U consecutive units; one winner per block (per position for
convolutions) is drawn from a Gumbel-softmax over the block's pre-activations, and the output is
h ⊙ ξ: the winner keeps its linear value (which may be negative), the losers output 0.

For U = 2 (the default) the two-way Gumbel-softmax is computed in its exact closed form: with
G₁ − G₂ ~ Logistic(0, 1), softmax((h + G)/T)₁ = σ((h₁ − h₂ + L)/T) (the binary Concrete). One
logistic variate per block instead of two Gumbels, and no (…, C/U, U) regrouping: same law, about a
third of the cost on the CPU (benchmarks/lwta.py).

References:
  Panousis et al. 2019, "Nonparametric Bayesian Deep Networks with Local Competition", ICML
  Panousis et al. 2021, "Local Competition and Stochasticity for Adversarial Robustness in Deep
  Learning", AISTATS, arXiv:2101.01121
  Panousis et al. 2022, "Stochastic Local Winner-Takes-All Networks Enable Profound Adversarial
  Robustness", arXiv:2112.02671
  Jang et al. 2017, "Categorical Reparameterization with Gumbel-Softmax", arXiv:1611.01144
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from jaxrobust.counts import is_count
from jaxrobust.models.common import KL_COLLECTION, STOCHASTIC, merge_deterministic, require_rng
from jaxrobust.models.noise import gumbel_noise, logistic_noise

LWTA_MODES = ('auto', 'relaxed', 'eval', 'hard', 'mean')


def categorical_kl_uniform(logits, axis=-1):
  """KL(softmax(logits) ‖ Uniform(1/U)) = Σ q (log q + log U), summed over `axis`; ≥ 0."""
  logq = jax.nn.log_softmax(logits, axis)
  return jnp.sum(jnp.exp(logq) * (logq + jnp.log(logits.shape[axis])), axis)


def binary_kl_uniform(diff):
  """KL(q ‖ Uniform(½)) for blocks of two units, q = softmax((h₁, h₂)) = (σ(d), σ(−d)), d = h₁ − h₂:
  the U = 2 case of `categorical_kl_uniform` without regrouping the channels."""
  q = jax.nn.sigmoid(diff)
  return q * jax.nn.log_sigmoid(diff) + (1 - q) * jax.nn.log_sigmoid(-diff) + jnp.log(2.0)


class LWTA(nn.Module):
  """Stochastic LWTA activation, with the activation interface `(x, train, deterministic) -> y`.

  Attributes:
    U: units per block (channels must be divisible by U).
    temperature: the training (relaxed) temperature T, fixed (HEAD code: 0.67).
    learn_temperature: T = softplus(τ) with a learnable τ per layer initialised at −0.01
      (T₀ ≈ 0.688, the released checkpoint's variant).
    eval_temperature: T at test time and under attack (0.01: nearly one-hot, still stochastic).
    mode: 'auto' (relaxed when train, eval temperature otherwise), 'relaxed', 'eval', 'hard'
      (straight-through: one-hot forward, relaxed gradient), or 'mean' (mean field: no sampling,
      each unit weighted by its probability of winning, softmax(h) over its block, which is
      the expected output at a low temperature; a deterministic surrogate for transfer attacks).
    deterministic: the winner is argmax h, without noise (the surrogate of transfer attacks);
      merged with the call argument as `nn.Dropout` does (set exactly one of the two).
    rng_collection: where keys come from.
    collect_kl: sow KL(q(ξ) ‖ Uniform) into the 'kl' collection (q = softmax(h) per block).
  """

  U: int = 2
  temperature: float = 0.67
  learn_temperature: bool = False
  eval_temperature: float = 0.01
  mode: str = 'auto'
  deterministic: bool | None = None
  rng_collection: str = STOCHASTIC
  collect_kl: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    deterministic = merge_deterministic(self.deterministic, deterministic)
    if self.mode not in LWTA_MODES:
      raise ValueError(f'LWTA: unknown mode {self.mode!r}; use one of {LWTA_MODES}')
    if not is_count(self.U, 2):
      raise ValueError(f'LWTA: U (units per block) must be an integer >= 2, got {self.U!r}')
    for name in ('temperature', 'eval_temperature'):
      t = getattr(self, name)
      # T <= 0 would flip or blow up the Gumbel-softmax (z / T) without any error.
      if isinstance(t, bool) or not (isinstance(t, numbers.Real) and math.isfinite(t) and float(t) > 0):
        raise ValueError(f'LWTA: {name} must be a finite number > 0, got {t!r}')
    c = x.shape[-1]
    if c % self.U:
      raise ValueError(f'LWTA: {c} channels are not divisible into blocks of U={self.U}')
    t_train: Any = self.temperature  # a learned one is an array
    if self.learn_temperature:
      t_train = nn.softplus(self.param('temperature', nn.initializers.constant(-0.01), ()))
    mode = ('relaxed' if train else 'eval') if self.mode == 'auto' else self.mode
    temp = self.eval_temperature if mode == 'eval' else t_train
    if self.U == 2:
      return self._pairs(x, mode, temp, train, deterministic)
    h = x.reshape(x.shape[:-1] + (c // self.U, self.U))
    if self.collect_kl and train:
      self.sow(KL_COLLECTION, 'xi', jnp.sum(categorical_kl_uniform(h)) / x.shape[0])
    if deterministic:
      xi = jax.nn.one_hot(jnp.argmax(h, -1), self.U, dtype=h.dtype)
    elif mode == 'mean':  # P(unit i wins) = softmax(h)ᵢ under Gumbel-max
      xi = jax.nn.softmax(h, axis=-1)
    else:
      g = gumbel_noise(self._key(), h.shape, h.dtype)
      xi = jax.nn.softmax((h + g) / temp, axis=-1)
      if mode == 'hard':
        hard = jax.nn.one_hot(jnp.argmax(h + g, -1), self.U, dtype=h.dtype)
        xi = xi + jax.lax.stop_gradient(hard - xi)
    return (h * xi).reshape(x.shape)

  def _key(self):
    return require_rng(self, self.rng_collection, 'LWTA')

  def _pairs(self, x, mode, temp, train, deterministic):
    """U = 2: ξ₁ = σ((h₁ − h₂ + L)/T), ξ₂ = 1 − ξ₁, units (2k, 2k+1) forming block k."""
    h1, h2 = x[..., 0::2], x[..., 1::2]
    d = h1 - h2
    if self.collect_kl and train:
      self.sow(KL_COLLECTION, 'xi', jnp.sum(binary_kl_uniform(d)) / x.shape[0])
    if deterministic:  # ties go to the first unit, like argmax
      xi1 = (d >= 0).astype(x.dtype)
    elif mode == 'mean':  # P(h₁ + G₁ > h₂ + G₂) = σ(h₁ − h₂)
      xi1 = jax.nn.sigmoid(d)
    else:
      z = d + logistic_noise(self._key(), d.shape, d.dtype)
      xi1 = jax.nn.sigmoid(z / temp)
    xi2 = 1 - xi1
    if mode == 'hard' and not deterministic:  # each side gets its own straight-through so the
      win = (z >= 0).astype(x.dtype)  # loser is exactly 0 in the forward pass
      xi1 = xi1 + jax.lax.stop_gradient(win - xi1)
      xi2 = xi2 + jax.lax.stop_gradient((1 - win) - xi2)
    return jnp.stack([h1 * xi1, h2 * xi2], -1).reshape(x.shape)
