"""Parametric Noise Injection: weight noise with a trainable scale, on in training and at test.

W̃ = W + α·η with η ~ N(0, std(W)²) drawn per forward pass; std(W) and η carry no gradient, so
only α learns through the noise. α ('noise_scale', 0.25 at init) is one scalar per layer or one
per output channel, and is excluded from weight decay by the optimiser's default mask.

References:
  He, Rakin & Fan 2019, "Parametric Noise Injection: Trainable Randomness to Improve Deep Neural
  Network Robustness against Adversarial Attack", CVPR, arXiv:1811.09310
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrobust.models.common import STOCHASTIC, add_bias, conv_with_kernel, merge_deterministic, require_rng


def _noisy(module: nn.Module, w, deterministic: bool):
  """W + α·η, or W itself when deterministic (the noise-free surrogate); α exists either way."""
  shape = (w.shape[-1],) if module.channelwise else ()
  alpha = module.param('noise_scale', nn.initializers.constant(module.noise_init), shape)
  if deterministic:
    return w
  std = jax.lax.stop_gradient(jnp.std(w))
  key = require_rng(module, module.rng_collection, 'PNI layer')
  eta = jax.lax.stop_gradient(std * jax.random.normal(key, w.shape, w.dtype))
  return w + alpha * eta


class PNIConv(nn.Module):
  """nn.Conv with parametric weight noise (same constructor arguments, plus PNI options)."""

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] | int = (1, 1)
  padding: Any = 'SAME'
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  channelwise: bool = False
  noise_init: float = 0.25
  deterministic: bool | None = None
  rng_collection: str = STOCHASTIC
  stochastic_layer = True

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    del train  # the noise stays on at test time, as in the paper
    w = self.param('kernel', self.kernel_init, tuple(self.kernel_size) + (x.shape[-1], self.features))
    w = _noisy(self, w, merge_deterministic(self.deterministic, deterministic))
    return conv_with_kernel(self, x, w)


class PNIDense(nn.Module):
  """nn.Dense with parametric weight noise."""

  features: int
  use_bias: bool = True
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  channelwise: bool = False
  noise_init: float = 0.25
  deterministic: bool | None = None
  rng_collection: str = STOCHASTIC
  stochastic_layer = True

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    del train
    w = self.param('kernel', self.kernel_init, (x.shape[-1], self.features))
    return add_bias(self, x @ _noisy(self, w, merge_deterministic(self.deterministic, deterministic)))
