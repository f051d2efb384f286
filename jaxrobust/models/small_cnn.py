"""The small CNN of the reference figures: conv32-pool-conv64-pool-dense128-dense."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn

from jaxrobust.models.common import ModuleDef, Normalize, ReLU, call_layer, max_pool_2x2
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

  @nn.compact
  def __call__(self, x, train: bool = False):
    det = self.deterministic
    act = lambda h: self.act()(h, train, deterministic=det)
    x = Normalize(self.mean, self.std)(x)
    x = call_layer(self.conv(32 * self.width, (3, 3), padding='SAME'), x, train, det)
    x = max_pool_2x2(act(x))
    x = call_layer(self.conv(64 * self.width, (3, 3), padding='SAME'), x, train, det)
    x = max_pool_2x2(act(x))
    x = x.reshape(x.shape[0], -1)
    x = act(call_layer(self.dense(128 * self.width), x, train, det))
    return call_layer(self.head(self.num_classes), x, train, det)
