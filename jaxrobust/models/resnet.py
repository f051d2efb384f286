"""ResNet-18 and PreActResNet-18 for 32×32 inputs, as published robust CIFAR-10 models use them.

Both have a 3×3 stem with 64 channels, four stages of basic blocks (64, 128, 256, 512 channels,
the last three starting with stride 2), global average pooling over the final 4×4 map and a dense
classifier. They are here to evaluate checkpoints of the model zoo (`jaxrobust.models.zoo`); the
`widths` and `stage_blocks` fields make the tiny versions of the test fixtures.

References:
  He et al. 2016, "Deep Residual Learning for Image Recognition", arXiv:1512.03385
  He et al. 2016, "Identity Mappings in Deep Residual Networks", arXiv:1603.05027 (pre-activation)
  The CIFAR variants follow github.com/kuangliu/pytorch-cifar, as RobustBench's copies do.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxrobust.models.common import ModuleDef, Normalize, ReLU, conv_padding
from jaxrobust.models.conv import Conv


def _norm(train: bool, axis_name):
  # PyTorch's BatchNorm2d: running averages with momentum 0.1 (Flax's 0.9), eps 1e-5.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name)


class BasicBlock(nn.Module):
  """conv3×3(stride)-bn-act, conv3×3-bn, plus the shortcut (1×1 conv + bn when shapes change), act."""

  features: int
  stride: int
  act: ModuleDef
  padding: str
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = lambda h: self.act()(h, train)  # noqa: E731
    s = self.stride
    o = Conv(self.features, (3, 3), (s, s), padding=conv_padding(self.padding, s), use_bias=False)(x)
    o = act(_norm(train, self.bn_axis_name)(o))
    o = Conv(self.features, (3, 3), padding=conv_padding(self.padding, 1), use_bias=False)(o)
    o = _norm(train, self.bn_axis_name)(o)
    if s != 1 or x.shape[-1] != self.features:
      x = Conv(self.features, (1, 1), (s, s), padding='VALID', use_bias=False)(x)
      x = _norm(train, self.bn_axis_name)(x)
    return act(o + x)


class PreActBlock(nn.Module):
  """bn-act, conv3×3(stride), bn-act, conv3×3, plus the shortcut (a 1×1 conv when shapes change).

  `shortcut_from` says what the projection sees: 'activation' (act(bn1(x)), as kuangliu's code and
  most checkpoints built on it) or 'input' (the raw x, as RobustBench's `PreActBlock`).
  """

  features: int
  stride: int
  act: ModuleDef
  padding: str
  shortcut_from: str = 'activation'
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x, train: bool = False):
    act = lambda h: self.act()(h, train)  # noqa: E731
    s = self.stride
    pre = act(_norm(train, self.bn_axis_name)(x))
    shortcut = x
    if s != 1 or x.shape[-1] != self.features:
      shortcut = Conv(self.features, (1, 1), (s, s), padding='VALID', use_bias=False)(
        pre if self.shortcut_from == 'activation' else x
      )
    o = Conv(self.features, (3, 3), (s, s), padding=conv_padding(self.padding, s), use_bias=False)(pre)
    o = act(_norm(train, self.bn_axis_name)(o))
    o = Conv(self.features, (3, 3), padding=conv_padding(self.padding, 1), use_bias=False)(o)
    return o + shortcut


class ResNet(nn.Module):
  """A CIFAR ResNet of basic blocks (`preact` selects the pre-activation form).

  Args (fields):
    num_classes: output classes.
    stage_blocks: blocks per stage ((2, 2, 2, 2) is the 18-layer network).
    widths: channels per stage; the stem has widths[0].
    preact: pre-activation blocks (PreActResNet) instead of post-activation ones (ResNet).
    final_norm: for the pre-activation form, a bn-act before pooling (present in most robust
      checkpoints, absent in kuangliu's original).
    shortcut_from: see `PreActBlock`.
    mean, std: input normalisation inside the model.
    act: activation module class.
    padding: 'torch' or 'same' (`conv_padding`).
    deterministic: accepted like every model's; nothing here is stochastic.
  """

  num_classes: int = 10
  stage_blocks: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  preact: bool = False
  final_norm: bool = True
  shortcut_from: str = 'activation'
  mean: Sequence[float] = (0.0,)
  std: Sequence[float] = (1.0,)
  act: ModuleDef = ReLU
  padding: str = 'torch'
  bn_axis_name: str | None = None
  deterministic: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.shortcut_from not in ('activation', 'input'):
      raise ValueError(f"shortcut_from must be 'activation' or 'input', got {self.shortcut_from!r}")
    x = Normalize(self.mean, self.std)(x)
    x = Conv(self.widths[0], (3, 3), padding=conv_padding(self.padding, 1), use_bias=False)(x)
    if not self.preact:
      x = self.act()(_norm(train, self.bn_axis_name)(x), train)
    for stage, (blocks, features) in enumerate(zip(self.stage_blocks, self.widths)):
      for i in range(blocks):
        stride = 2 if (stage > 0 and i == 0) else 1
        if self.preact:
          x = PreActBlock(features, stride, self.act, self.padding, self.shortcut_from, self.bn_axis_name)(
            x, train
          )
        else:
          x = BasicBlock(features, stride, self.act, self.padding, self.bn_axis_name)(x, train)
    if self.preact and self.final_norm:
      x = self.act()(_norm(train, self.bn_axis_name)(x), train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


RESNET18 = functools.partial(ResNet, stage_blocks=(2, 2, 2, 2), preact=False)
PREACT_RESNET18 = functools.partial(ResNet, stage_blocks=(2, 2, 2, 2), preact=True)
