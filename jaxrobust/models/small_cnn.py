"""The small CNN of the reference figures: conv32-pool-conv64-pool-dense128-dense."""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxrobust.models.common import ModuleDef, Normalize, ReLU, call_layer, compute_dtype, max_pool_2x2
from jaxrobust.models.conv import Conv


class SmallCNN(nn.Module):
  """conv3×3(32)-act-maxpool2, conv3×3(64)-act-maxpool2, dense 128-act, dense classes.

  Args (fields):
    num_classes: output classes.
    mean, std: per-channel input normalisation, applied inside the model.
    act: activation module class, called as `act()(x, train)` (ReLU, LWTA, ...).
    conv, dense: layer factories with the signatures of nn.Conv / nn.Dense (PNI, IBP slot in).
    head: factory of the final classification layer (nn.Dense signature).
    width: multiplier of the channel counts (1 gives 32/64/128).
    deterministic: every stochastic layer without its noise (the transfer surrogate).
    dtype: the computation dtype of activations and layers ('bfloat16', 'float16'; None:
      float32). Parameters stay float32 and the logits are returned as float32, so losses and
      an attack's perturbation arithmetic stay in float32 (`compute_dtype` below).
  """

  num_classes: int = 10
  mean: Sequence[float] = (0.0,)
  std: Sequence[float] = (1.0,)
  act: ModuleDef = ReLU
  conv: ModuleDef = Conv
  dense: ModuleDef = nn.Dense
  head: ModuleDef = nn.Dense
  width: int = 1
  deterministic: bool = False
  bn_axis_name: str | None = None  # no BatchNorm here; every model takes the field alike
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    det = self.deterministic
    act = lambda h: self.act()(h, train, deterministic=det)
    dt = compute_dtype(self.dtype)
    conv, dense, head = (
      (self.conv, self.dense, self.head)
      if dt is None
      else (functools.partial(f, dtype=dt) for f in (self.conv, self.dense, self.head))
    )
    x = Normalize(self.mean, self.std)(x)
    x = x if dt is None else x.astype(dt)
    x = call_layer(conv(32 * self.width, (3, 3), padding='SAME'), x, train, det)
    x = max_pool_2x2(act(x))
    x = call_layer(conv(64 * self.width, (3, 3), padding='SAME'), x, train, det)
    x = max_pool_2x2(act(x))
    x = x.reshape(x.shape[0], -1)
    x = act(call_layer(dense(128 * self.width), x, train, det))
    logits = call_layer(head(self.num_classes), x, train, det)
    return logits if dt is None else logits.astype(jnp.float32)
