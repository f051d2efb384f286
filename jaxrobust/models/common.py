"""Building blocks shared by the models: input normalisation, activations, pooling."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ModuleDef = Any
# Every stochastic layer (LWTA winners, IBP gates, PNI noise) draws from this rng collection, so
# one `rngs={STOCHASTIC: key}` drives a whole model.
STOCHASTIC = 'stochastic'


class Normalize(nn.Module):
  """Per-channel (x - mean) / std inside the model, so attacks work in [0,1] pixel space."""
  mean: Sequence[float] = (0.0,)
  std: Sequence[float] = (1.0,)

  @nn.compact
  def __call__(self, x):
    mean = jnp.asarray(self.mean, x.dtype)
    std = jnp.asarray(self.std, x.dtype)
    return (x - mean) / std


class ReLU(nn.Module):
  """ReLU as a module with the activation interface `(x, train) -> y` that LWTA shares."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return nn.relu(x)


def max_pool_2x2(x):
  """2×2 max pooling, stride 2, written as reshape + max.

  Why: on XLA's CPU backend the gradient of reshape+max is ~2× faster than that of
  `reduce_window` (perf-cpu.md); odd sizes fall back to `nn.max_pool`.
  """
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    return nn.max_pool(x, (2, 2), (2, 2), padding='VALID')
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv_kernel_init():
  """He init with fan-out, N(0, 2/(k·k·out)), as in the TRADES WideResNet."""
  return nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


Activation = Callable[..., nn.Module]


def call_layer(layer: nn.Module, x, train: bool):
  """Calls a conv/dense layer, passing `train` to those that take it (IBP, PNI layers set
  `takes_train = True`); plain nn.Conv / nn.Dense are called with x alone."""
  return layer(x, train=train) if getattr(layer, 'takes_train', False) else layer(x)


def add_bias(module: nn.Module, y):
  """y + the module's 'bias' parameter when `module.use_bias` (nn.Dense/nn.Conv semantics)."""
  if module.use_bias:
    y = y + module.param('bias', module.bias_init, (module.features,))
  return y


def conv_with_kernel(module: nn.Module, x, w):
  """nn.Conv's computation with a given (gated or noisy) HWIO kernel: conv, then bias."""
  strides = (module.strides,) * 2 if isinstance(module.strides, int) else tuple(module.strides)
  y = jax.lax.conv_general_dilated(x, w, strides, module.padding,
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  return add_bias(module, y)
