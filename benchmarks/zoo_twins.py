"""PyTorch definitions of the published architectures, with their state-dict names, to write the
model-zoo test fixtures and check our converters against live torch (the `parity` extra).

They follow the public definitions: RobustBench's (TRADES) WideResNet, ResNet and kuangliu's
PreActResNet, and DeepMind's adversarial_robustness WideResNet (PyTorch release). `base` shrinks
the widths for fixtures of a few kilobytes; at 16 (WRN) and 64 (ResNets) they are the real ones.
`haiku_wrn_params` builds a parameter dict in the naming and shapes of DeepMind's Haiku WideResNet
and `haiku_wrn_forward` computes that network directly from the dict (torch ops, no Flax).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


class Swish(nn.Module):
  def forward(self, x):
    return x * torch.sigmoid(x)


# ---- RobustBench / TRADES WideResNet ----
class RBBasicBlock(nn.Module):
  def __init__(self, in_planes, out_planes, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(out_planes)
    self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
    self.equal = in_planes == out_planes
    self.convShortcut = None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)

  def forward(self, x):
    if not self.equal:
      x = F.relu(self.bn1(x))
      out = x
    else:
      out = F.relu(self.bn1(x))
    out = self.conv2(F.relu(self.bn2(self.conv1(out))))
    return (x if self.equal else self.convShortcut(x)) + out


class RBNetworkBlock(nn.Module):
  def __init__(self, n, in_planes, out_planes, stride):
    super().__init__()
    self.layer = nn.Sequential(
      *[
        RBBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
        for i in range(n)
      ]
    )

  def forward(self, x):
    return self.layer(x)


class RobustBenchWRN(nn.Module):
  def __init__(self, depth=28, widen=10, num_classes=10, base=16, sub_block1=False):
    super().__init__()
    w = [base, base * widen, 2 * base * widen, 4 * base * widen]
    n = (depth - 4) // 6
    self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
    self.block1 = RBNetworkBlock(n, w[0], w[1], 1)
    if sub_block1:  # built and saved, never called (as in TRADES)
      self.sub_block1 = RBNetworkBlock(n, w[0], w[1], 1)
    self.block2 = RBNetworkBlock(n, w[1], w[2], 2)
    self.block3 = RBNetworkBlock(n, w[2], w[3], 2)
    self.bn1 = nn.BatchNorm2d(w[3])
    self.fc = nn.Linear(w[3], num_classes)

  def forward(self, x):
    out = self.block3(self.block2(self.block1(self.conv1(x))))
    out = F.relu(self.bn1(out))
    return self.fc(out.mean(dim=(2, 3)))


# ---- DeepMind WideResNet (PyTorch release) ----
class DMBlock(nn.Module):
  def __init__(self, in_planes, out_planes, stride):
    super().__init__()
    self.batchnorm_0 = nn.BatchNorm2d(in_planes)
    self.relu_0 = Swish()
    self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride, 0, bias=False)
    self.batchnorm_1 = nn.BatchNorm2d(out_planes)
    self.relu_1 = Swish()
    self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
    self.has_shortcut = in_planes != out_planes
    self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False) if self.has_shortcut else None
    self.stride = stride

  def forward(self, x):
    if self.has_shortcut:
      x = self.relu_0(self.batchnorm_0(x))
      v = x
    else:
      v = self.relu_0(self.batchnorm_0(x))
    v = F.pad(v, (1, 1, 1, 1) if self.stride == 1 else (0, 1, 0, 1))
    out = self.conv_1(self.relu_1(self.batchnorm_1(self.conv_0(v))))
    return (self.shortcut(x) if self.has_shortcut else x) + out


class DMBlockGroup(nn.Module):
  def __init__(self, n, in_planes, out_planes, stride):
    super().__init__()
    self.block = nn.Sequential(
      *[DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(n)]
    )

  def forward(self, x):
    return self.block(x)


class DeepMindWRN(nn.Module):
  def __init__(self, depth=28, width=10, num_classes=10, base=16, mean=CIFAR10_MEAN, std=CIFAR10_STD):
    super().__init__()
    self.mean = torch.tensor(mean).view(1, -1, 1, 1)
    self.std = torch.tensor(std).view(1, -1, 1, 1)
    c = [base, base * width, 2 * base * width, 4 * base * width]
    n = (depth - 4) // 6
    self.init_conv = nn.Conv2d(3, c[0], 3, 1, 1, bias=False)
    self.layer = nn.Sequential(
      DMBlockGroup(n, c[0], c[1], 1), DMBlockGroup(n, c[1], c[2], 2), DMBlockGroup(n, c[2], c[3], 2)
    )
    self.batchnorm = nn.BatchNorm2d(c[3])
    self.relu = Swish()
    self.logits = nn.Linear(c[3], num_classes)

  def forward(self, x):
    out = self.layer(self.init_conv((x - self.mean) / self.std))
    out = self.relu(self.batchnorm(out))
    return self.logits(out.mean(dim=(2, 3)))


# ---- ResNet-18 and PreActResNet-18 (kuangliu, as RobustBench) ----
class ResBasicBlock(nn.Module):
  def __init__(self, in_planes, planes, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.shortcut = nn.Sequential()
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(
        nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
      )

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
  def __init__(self, in_planes, planes, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(in_planes)
    self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    if stride != 1 or in_planes != planes:
      self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

  def forward(self, x):
    out = F.relu(self.bn1(x))
    shortcut = self.shortcut(out) if hasattr(self, 'shortcut') else x
    return self.conv2(F.relu(self.bn2(self.conv1(out)))) + shortcut


class CifarResNet(nn.Module):
  def __init__(self, preact, blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512), num_classes=10, final_bn=True):
    super().__init__()
    self.preact, self.final_bn = preact, preact and final_bn
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    if not preact:
      self.bn1 = nn.BatchNorm2d(widths[0])
    block = PreActBlock if preact else ResBasicBlock
    in_planes = widths[0]
    for s, (n, w) in enumerate(zip(blocks, widths)):
      layers = []
      for i in range(n):
        layers.append(block(in_planes, w, 2 if (s > 0 and i == 0) else 1))
        in_planes = w
      setattr(self, f'layer{s + 1}', nn.Sequential(*layers))
    if self.final_bn:
      self.bn = nn.BatchNorm2d(widths[-1])
    self.linear = nn.Linear(widths[-1], num_classes)

  def forward(self, x):
    out = self.conv1(x)
    if not self.preact:
      out = F.relu(self.bn1(out))
    for s in range(4):
      out = getattr(self, f'layer{s + 1}')(out)
    if self.final_bn:
      out = F.relu(self.bn(out))
    return self.linear(out.mean(dim=(2, 3)))


def randomize_batchnorm(model: nn.Module, generator: torch.Generator):
  """Random BN affine parameters and running statistics, so a converter that drops or swaps
  them changes the logits."""
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=generator))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=generator))
        m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=generator))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator))
        m.num_batches_tracked.fill_(7)


# ---- DeepMind WideResNet (Haiku release): a parameter dict and its direct forward ----
def haiku_wrn_params(depth, width, num_classes=10, base=16, seed=0):
  """(params, state) in Haiku's naming and shapes for DeepMind's JAX WideResNet: module paths
  'wide_res_net/...', HWIO kernels 'w', BatchNorm 'scale'/'offset' of shape (1, 1, 1, C), EMA
  states 'mean_ema'/'var_ema' with 'average', 'hidden' and 'counter'; a projection shortcut in
  each group's first block."""
  rng = np.random.RandomState(seed)
  params, state = {}, {}
  root = 'wide_res_net'

  def conv(name, k, cin, cout):
    params[f'{root}/{name}'] = {
      'w': (rng.randn(k, k, cin, cout) * np.sqrt(2 / (k * k * cout))).astype(np.float32)
    }

  def bn(name, c):
    params[f'{root}/{name}'] = {
      'scale': (1 + 0.2 * rng.randn(1, 1, 1, c)).astype(np.float32),
      'offset': (0.2 * rng.randn(1, 1, 1, c)).astype(np.float32),
    }
    for ema, value in (('mean_ema', 0.2 * rng.randn(1, 1, 1, c)), ('var_ema', 0.5 + rng.rand(1, 1, 1, c))):
      state[f'{root}/{name}/~/{ema}'] = {
        'average': value.astype(np.float32),
        'hidden': value.astype(np.float32),
        'counter': np.array(1000, np.int32),
      }

  conv('init_conv', 3, 3, base)
  n = (depth - 4) // 6
  cin = base
  for layer, f in enumerate([width * base, 2 * width * base, 4 * width * base]):
    for i in range(n):
      m = f'resnet_lay_{layer}_block_{i}'
      bn(f'{m}/batchnorm_0', cin)
      conv(f'{m}/conv_0', 3, cin, f)
      bn(f'{m}/batchnorm_1', f)
      conv(f'{m}/conv_1', 3, f, f)
      if i == 0:
        conv(f'{m}/shortcut', 1, cin, f)
      cin = f
  bn('batchnorm', cin)
  params[f'{root}/logits'] = {
    'w': (0.1 * rng.randn(cin, num_classes)).astype(np.float32),
    'b': (0.1 * rng.randn(num_classes)).astype(np.float32),
  }
  return params, state


def haiku_wrn_forward(params, state, x, depth, mean=CIFAR10_MEAN, std=CIFAR10_STD):
  """DeepMind's Haiku WideResNet in eval mode, computed directly from the dict with torch ops:
  NHWC input in [0, 1], dataset normalisation, TF 'SAME' padding, swish, EMA statistics."""
  root = 'wide_res_net'
  t = lambda a: torch.from_numpy(np.asarray(a))  # noqa: E731

  def conv(h, name, stride):
    w = t(params[f'{root}/{name}']['w']).permute(3, 2, 0, 1)  # HWIO → OIHW
    k = w.shape[-1]
    if k == 3:
      h = F.pad(h, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))  # 'SAME' for even sizes
    return F.conv2d(h, w, stride=stride)

  def bn(h, name):
    p, s = params[f'{root}/{name}'], state
    mean_ = t(s[f'{root}/{name}/~/mean_ema']['average']).reshape(1, -1, 1, 1)
    var = t(s[f'{root}/{name}/~/var_ema']['average']).reshape(1, -1, 1, 1)
    return (h - mean_) / torch.sqrt(var + 1e-5) * t(p['scale']).reshape(1, -1, 1, 1) + t(p['offset']).reshape(
      1, -1, 1, 1
    )

  swish = lambda h: h * torch.sigmoid(h)  # noqa: E731
  h = torch.from_numpy(x).permute(0, 3, 1, 2)
  h = (h - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
  h = conv(h, 'init_conv', 1)
  n = (depth - 4) // 6
  for layer in range(3):
    for i in range(n):
      m = f'resnet_lay_{layer}_block_{i}'
      stride = 2 if (layer > 0 and i == 0) else 1
      a = swish(bn(h, f'{m}/batchnorm_0'))
      shortcut = conv(a, f'{m}/shortcut', stride) if i == 0 else h
      o = conv(a, f'{m}/conv_0', stride)
      o = conv(swish(bn(o, f'{m}/batchnorm_1')), f'{m}/conv_1', 1)
      h = shortcut + o
  h = swish(bn(h, 'batchnorm')).mean(dim=(2, 3))
  return (h @ t(params[f'{root}/logits']['w']) + t(params[f'{root}/logits']['b'])).numpy()
