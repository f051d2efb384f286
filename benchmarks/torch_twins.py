"""PyTorch twins of our networks, for parity checks and side-by-side benchmarks (the `parity`
extra; never imported by the library or the tests).

The small CNN's twin computes exactly what ours does: normalisation inside the model, max pooling
as reshape + max (whose gradient, like ours, splits a tie evenly between the maxima; torch's
MaxPool2d sends it to one of them), and flattening in NHWC order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class SmallCNN(nn.Module):
  """conv3×3(32)-ReLU-maxpool2, conv3×3(64)-ReLU-maxpool2, dense 128-ReLU, dense classes."""

  def __init__(self, num_classes: int = 10, in_ch: int = 1, hw: int = 28, mean=(0.0,), std=(1.0,)):
    super().__init__()
    self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
    self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
    self.conv1 = nn.Conv2d(in_ch, 32, 3, padding=1)
    self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
    self.fc1 = nn.Linear((hw // 4) * (hw // 4) * 64, 128)
    self.fc2 = nn.Linear(128, num_classes)

  @staticmethod
  def _pool(x):
    n, c, h, w = x.shape
    return x.view(n, c, h // 2, 2, w // 2, 2).amax(dim=(3, 5))

  def forward(self, x):
    x = (x - self.mean) / self.std
    x = self._pool(torch.relu(self.conv1(x)))
    x = self._pool(torch.relu(self.conv2(x)))
    x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # NHWC order, as Flax flattens
    return self.fc2(torch.relu(self.fc1(x)))


def small_cnn_from_flax(model, variables) -> SmallCNN:
  """The twin of a Flax `SmallCNN` (width 1) with its weights copied (HWIO → OIHW, dense
  kernels transposed)."""
  p = variables['params']
  conv1 = np.asarray(p['Conv_0']['kernel'])
  twin = SmallCNN(
    num_classes=int(np.asarray(p['Dense_1']['bias']).shape[0]),
    in_ch=conv1.shape[2],
    mean=tuple(model.mean),
    std=tuple(model.std),
  )
  twin.fc1 = nn.Linear(int(np.asarray(p['Dense_0']['kernel']).shape[0]), 128)
  with torch.no_grad():
    for name, key in (('conv1', 'Conv_0'), ('conv2', 'Conv_1')):
      getattr(twin, name).weight.copy_(
        torch.from_numpy(np.asarray(p[key]['kernel']).transpose(3, 2, 0, 1).copy())
      )
      getattr(twin, name).bias.copy_(torch.from_numpy(np.asarray(p[key]['bias'])))
    for name, key in (('fc1', 'Dense_0'), ('fc2', 'Dense_1')):
      getattr(twin, name).weight.copy_(torch.from_numpy(np.asarray(p[key]['kernel']).T.copy()))
      getattr(twin, name).bias.copy_(torch.from_numpy(np.asarray(p[key]['bias'])))
  return twin.eval()
