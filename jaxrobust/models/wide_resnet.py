"""Pre-activation WideResNet (the TRADES/Madry variant), with pluggable activation and layers.

References:
  Zagoruyko & Komodakis 2016, "Wide Residual Networks", arXiv:1605.07146
  Zhang et al. 2019, "TRADES", arXiv:1901.08573 (models/wideresnet.py, followed exactly)
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxrobust.models.common import (
  ModuleDef,
  Normalize,
  ReLU,
  call_layer,
  compute_dtype,
  conv_kernel_init,
  conv_padding,
)
from jaxrobust.models.conv import Conv


class WRNBlock(nn.Module):
  """Pre-activation basic block.

  With a projection (in != out, or always in a group's first block for Haiku's WRN):
  x <- act(bn1(x)); shortcut = 1×1 strided conv of that activated x.
  Without: shortcut is the raw x; the residual branch starts from act(bn1(x)).
  Then conv3×3(stride) -> act(bn2) -> conv3×3, and out = shortcut + branch.
  """

  in_planes: int
  out_planes: int
  stride: int
  act: ModuleDef
  conv: ModuleDef
  norm: ModuleDef
  deterministic: bool = False
  padding: str = 'torch'
  projection: bool | None = None  # None: when in != out

  @nn.compact
  def __call__(self, x, train: bool = False):
    equal = not self.projection if self.projection is not None else self.in_planes == self.out_planes
    det = self.deterministic
    o = self.act()(self.norm()(x), train, deterministic=det)
    shortcut = (
      x
      if equal
      else call_layer(
        self.conv(self.out_planes, (1, 1), (self.stride, self.stride), padding='VALID', use_bias=False),
        o,
        train,
        det,
      )
    )
    o = call_layer(
      self.conv(
        self.out_planes,
        (3, 3),
        (self.stride, self.stride),
        padding=conv_padding(self.padding, self.stride),
        use_bias=False,
      ),
      o,
      train,
      det,
    )
    o = self.act()(self.norm()(o), train, deterministic=det)
    o = call_layer(
      self.conv(self.out_planes, (3, 3), (1, 1), padding=conv_padding(self.padding, 1), use_bias=False),
      o,
      train,
      det,
    )
    return shortcut + o


class WideResNet(nn.Module):
  """WRN-depth-widen: stem conv, three groups of (depth-4)/6 blocks, bn-act-avgpool-fc.

  Args (fields):
    depth: 6n + 4 (34 gives 5 blocks per group).
    widen: widen factor k; group widths are 16k, 32k, 64k after a 16-channel stem.
    num_classes: output classes.
    mean, std: input normalisation inside the model ((0,), (1,) = none, as the study).
    act: activation module class called as `act()(x, train)`.
    conv, dense: layer factories (nn.Conv/nn.Dense signatures).
    bn_axis_name: mapped axis over which BatchNorm averages batch statistics.
    deterministic: every stochastic layer without its noise (the transfer surrogate).
    base_width: the stem's width and the unit of the group widths (16; smaller in test fixtures).
    padding: 'torch' (explicit 1-pixel padding, TRADES/RobustBench) or 'same' (DeepMind's
      releases); see `conv_padding`.
    projection_first: a 1×1 projection shortcut in every group's first block, even when the
      widths agree (Haiku's WRN); otherwise only where they differ (TRADES, DeepMind's PyTorch).
    dtype: the computation dtype ('bfloat16', 'float16'; None: float32): convolutions and
      activations in it; parameters, BatchNorm statistics and the returned logits in float32.
  """

  # The reference code (TRADES' WideResNet) sets its own initialisation, N(0, 2/(9·out)) for the
  # convolutions (`conv_kernel_init`), so config.model.init='torch' leaves it as it is.
  sets_own_init: ClassVar[bool] = True

  depth: int = 34
  widen: int = 1
  num_classes: int = 10
  mean: Sequence[float] = (0.0,)
  std: Sequence[float] = (1.0,)
  act: ModuleDef = ReLU
  conv: ModuleDef = Conv
  dense: ModuleDef = nn.Dense
  bn_axis_name: str | None = None
  deterministic: bool = False
  base_width: int = 16
  padding: str = 'torch'
  projection_first: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth < 10 or (self.depth - 4) % 6:
      raise ValueError(f'WideResNet depth must be 6n+4 with n >= 1, got {self.depth}')
    n = (self.depth - 4) // 6
    b = self.base_width
    widths = [b, b * self.widen, 2 * b * self.widen, 4 * b * self.widen]
    dt = compute_dtype(self.dtype)
    mixed: dict[str, Any] = {} if dt is None else {'dtype': dt}
    conv = functools.partial(self.conv, kernel_init=conv_kernel_init(), **mixed)
    norm = functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=0.9,
      epsilon=1e-5,
      axis_name=self.bn_axis_name,
      **mixed,
    )
    dense = functools.partial(self.dense, **mixed)
    x = Normalize(self.mean, self.std)(x)
    x = x if dt is None else x.astype(dt)
    det = self.deterministic
    x = call_layer(
      conv(widths[0], (3, 3), padding=conv_padding(self.padding, 1), use_bias=False), x, train, det
    )
    in_planes = widths[0]
    for g, stride in enumerate((1, 2, 2)):
      for i in range(n):
        projection = True if (self.projection_first and i == 0) else None
        x = WRNBlock(
          in_planes,
          widths[g + 1],
          stride if i == 0 else 1,
          self.act,
          conv,
          norm,
          det,
          self.padding,
          projection,
        )(x, train)
        in_planes = widths[g + 1]
    x = self.act()(norm()(x), train, deterministic=det)
    x = jnp.mean(x, axis=(1, 2))  # avgpool over the final 8×8 map (global for 32×32 inputs)
    logits = call_layer(dense(self.num_classes, bias_init=nn.initializers.zeros), x, train, det)
    return logits if dt is None else logits.astype(jnp.float32)


WRN34_1 = functools.partial(WideResNet, depth=34, widen=1)
WRN34_5 = functools.partial(WideResNet, depth=34, widen=5)
WRN34_10 = functools.partial(WideResNet, depth=34, widen=10)
WRN16_4 = functools.partial(WideResNet, depth=16, widen=4)
WRN28_10 = functools.partial(WideResNet, depth=28, widen=10)
WRN34_20 = functools.partial(WideResNet, depth=34, widen=20)
WRN70_16 = functools.partial(WideResNet, depth=70, widen=16)
WRN_TINY = functools.partial(WideResNet, depth=10, widen=1)  # tests only
