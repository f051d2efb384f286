"""Building blocks shared by the models: the one forward pass, the stochastic-layer protocol,
input normalisation, activations, pooling.

The stochastic-layer protocol follows `nn.Dropout`: every stochastic layer (LWTA, the IBP layers,
PNI) has a `deterministic` field merged with a `deterministic` call argument (exactly one of the
two must be set, as `nn.merge_param` demands) and an `rng_collection` field naming where its keys
come from. Our models carry a `deterministic` field of their own and pass it down as the call
argument, so `model.clone(deterministic=True)` is the model without its noise: the surrogate of
transfer attacks.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxrobust.models.lane_conv import lane_conv

ModuleDef = Any
# Every stochastic layer (LWTA winners, IBP gates, PNI noise) draws from this rng collection, so
# one `rngs={STOCHASTIC: key}` drives a whole model.
STOCHASTIC = 'stochastic'
# Stochastic layers sow their KL terms (the ELBO's regulariser) into this collection.
KL_COLLECTION = 'kl'


MIXED_DTYPES = ('bfloat16', 'float16')


def compute_dtype(dtype) -> jnp.dtype | None:
  """A model's computation dtype: None for float32 (the default path, unchanged), else bfloat16
  or float16 (mixed precision: float32 parameters, BatchNorm statistics and logits).

  Raises:
    ValueError: for any other dtype.
  """
  if dtype is None or jnp.dtype(dtype) == jnp.float32:
    return None
  if jnp.dtype(dtype).name not in MIXED_DTYPES:
    raise ValueError(f'dtype must be float32, bfloat16 or float16, got {dtype!r}')
  return jnp.dtype(dtype)


def require_rng(module: nn.Module, collection: str, what: str):
  """The module's key from `collection`, or a clear error saying how to pass it."""
  if not module.has_rng(collection):
    raise ValueError(
      f'{what} is stochastic and needs a PRNG key: call apply(..., rngs={{"{collection}": key}}) '
      f'(or make it deterministic=True).'
    )
  return module.make_rng(collection)


def merge_deterministic(field, argument) -> bool:
  """`nn.Dropout`'s rule: the `deterministic` field or call argument, exactly one of them set."""
  return bool(nn.merge_param('deterministic', field, argument))


def model_variables(params, batch_stats=None) -> dict:
  """The variables of a model: params, and BatchNorm statistics when it has any."""
  return {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}


def forward(apply_fn, variables, x, key, *, train: bool = False, mutable=False):
  """The one forward pass of every model in the library.

  Args:
    apply_fn: a Linen `model.apply`.
    variables: {'params': ..., 'batch_stats': ...} (see `model_variables`).
    x: inputs in pixel space.
    key: drives every stochastic layer through the `stochastic` rng collection.
    train: train mode (BatchNorm batch statistics, LWTA's training temperature).
    mutable: collections to return updated ('batch_stats', the KL collection), or False.

  Returns:
    logits, or (logits, updated collections) when `mutable` names any.
  """
  return apply_fn(variables, x, train=train, rngs={STOCHASTIC: key}, mutable=mutable)


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
  """ReLU as a module with the activation interface `(x, train, deterministic) -> y` of LWTA."""

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    del train, deterministic
    return nn.relu(x)


class Swish(nn.Module):
  """x·sigmoid(x) (SiLU), the activation of DeepMind's robust WideResNets; ReLU's interface."""

  @nn.compact
  def __call__(self, x, train: bool = False, deterministic: bool | None = None):
    del train, deterministic
    return nn.swish(x)


def conv_padding(convention: str, stride: int):
  """Padding of a 3×3 convolution under a framework's convention.

  'torch': PyTorch's explicit (1, 1) on both sides, whatever the stride (TRADES, RobustBench).
  'same': TensorFlow/Haiku 'SAME', which pads a stride-2 convolution of an even input by (0, 1):
  DeepMind's models, in both their JAX and their PyTorch releases. The two agree at stride 1 and
  shift a stride-2 output by one pixel, so a converted checkpoint must keep its own convention.
  """
  if convention == 'torch':
    return ((1, 1), (1, 1))
  if convention == 'same':
    return 'SAME'
  raise ValueError(f"padding convention must be 'torch' or 'same', got {convention!r}")


def max_pool_2x2(x):
  """2×2 max pooling, stride 2, written as reshape + max.

  Why: on XLA's CPU backend the gradient of reshape+max is faster than that of
  `reduce_window` (docs/performance.md); odd sizes fall back to `nn.max_pool`.
  """
  n, h, w, c = x.shape
  if h % 2 or w % 2:
    return nn.max_pool(x, (2, 2), (2, 2), padding='VALID')
  return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def conv_kernel_init():
  """He init with fan-out, N(0, 2/(k·k·out)), as in the TRADES WideResNet."""
  return nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


Activation = Callable[..., nn.Module]


def call_layer(layer: nn.Module, x, train: bool, deterministic: bool):
  """Calls a conv/dense layer: stochastic layers (IBP, PNI: `stochastic_layer = True`) take the
  mode and the `deterministic` switch; plain nn.Conv / nn.Dense are called with x alone."""
  if getattr(layer, 'stochastic_layer', False):
    return layer(x, train=train, deterministic=deterministic)
  return layer(x)


def add_bias(module: nn.Module, y):
  """y + the module's 'bias' parameter when `module.use_bias` (nn.Dense/nn.Conv semantics)."""
  if module.use_bias:
    y = y + module.param('bias', module.bias_init, (module.features,))
  return y


def conv_with_kernel(module: nn.Module, x, w):
  """nn.Conv's computation with a given (gated or noisy) HWIO kernel: conv, then bias."""
  # lane_conv: the kernel is drawn per forward pass, so under an EOT vmap it differs per lane.
  return add_bias(module, lane_conv(x, w, module.strides, module.padding))
