"""Published checkpoints → our Flax networks: names, layouts, padding and normalisation.

Each family of published files has its own naming, recognised from its keys:

| family | where from | naming (first keys) |
|---|---|---|
| `robustbench_wrn` | RobustBench, TRADES, MART, AWP ... (PyTorch) | `conv1`, `block1.layer.0.bn1` |
| `deepmind_wrn_torch` | DeepMind's adversarial_robustness `.pt` | `init_conv`, `layer.0.block.0.batchnorm_0` |
| `deepmind_wrn_haiku` | DeepMind's adversarial_robustness `.npy` (JAX) | `wide_res_net/resnet_lay_0_block_0/...` |
| `resnet` | RobustBench's ResNet-18 (kuangliu) | `conv1`, `bn1`, `layer1.0.conv1` |
| `preact_resnet` | PreActResNet-18 (kuangliu, Wong 2020, Rice 2020) | `conv1`, `layer1.0.bn1`, optional `bn` |

What a conversion changes, and why:
- PyTorch kernels are OIHW and dense weights (out, in); Flax wants HWIO and (in, out).
- BatchNorm: weight/bias → scale/bias, running_mean/var → batch_stats (eval mode uses them);
  Haiku keeps (1, 1, 1, C) scale/offset and `mean_ema`/`var_ema` averages.
- DeepMind's models pad like TensorFlow ('SAME': (0, 1) on stride-2 convolutions), use swish,
  normalise the input with the dataset's mean and std inside the model, and (Haiku) put a
  projection shortcut in the first block of every group. RobustBench's models take [0, 1] inputs
  unnormalised and pad (1, 1).
Anything the architecture expects and the file lacks, anything the file holds that the
architecture does not use, and any shape disagreement is an `ArchitectureMismatchError` naming the
first keys, so a wrong `--arch` never loads silently.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.models.common import Swish
from jaxrobust.models.resnet import ResNet
from jaxrobust.models.traits import DETERMINISTIC, declare
from jaxrobust.models.wide_resnet import WideResNet

# Dataset statistics DeepMind's models normalise with (their model_zoo's constants).
DEEPMIND_NORMALIZATION = {
  'cifar10': ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
  'cifar100': ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100}

# --arch names: the network family and its size.
ARCHS: dict[str, dict[str, Any]] = {
  'wrn28_10': dict(kind='wrn', depth=28, widen=10),
  'wrn34_10': dict(kind='wrn', depth=34, widen=10),
  'wrn34_20': dict(kind='wrn', depth=34, widen=20),
  'wrn70_16': dict(kind='wrn', depth=70, widen=16),
  'wrn16_4': dict(kind='wrn', depth=16, widen=4),
  'resnet18': dict(kind='resnet', stage_blocks=(2, 2, 2, 2)),
  'preact_resnet18': dict(kind='preact_resnet', stage_blocks=(2, 2, 2, 2)),
}


class ArchitectureMismatchError(ValueError):
  """The checkpoint does not hold the parameters of the architecture asked for."""


def detect_family(fmt: str, keys) -> str:
  """The naming family of a checkpoint's keys (see the module table).

  Raises:
    ArchitectureMismatchError: keys of no known family (the first ones are listed).
  """
  keys = set(keys)
  if fmt == 'haiku':
    if any(k.endswith('/init_conv/w') for k in keys):
      return 'deepmind_wrn_haiku'
  elif 'init_conv.weight' in keys and 'layer.0.block.0.batchnorm_0.weight' in keys:
    return 'deepmind_wrn_torch'
  elif 'conv1.weight' in keys and 'block1.layer.0.bn1.weight' in keys:
    return 'robustbench_wrn'
  elif 'conv1.weight' in keys and 'layer1.0.conv1.weight' in keys:
    return 'resnet' if 'bn1.weight' in keys else 'preact_resnet'
  raise ArchitectureMismatchError(
    f'unknown checkpoint naming; first keys: {sorted(keys)[:8]}. Known families: RobustBench/TRADES '
    'WideResNet, DeepMind WideResNet (PyTorch or JAX), ResNet-18, PreActResNet-18.'
  )


@dataclasses.dataclass(frozen=True)
class _Entry:
  """One target variable: its path in our variables, the source key, how to reshape it."""

  target: tuple[str, ...]
  source: str
  layout: str  # 'conv' (OIHW→HWIO), 'dense' ((out,in)→(in,out)), 'vector' (flatten), 'copy'


def _torch_bn(target: tuple[str, ...], prefix: str) -> list[_Entry]:
  return [
    _Entry(('params', *target, 'scale'), prefix + 'weight', 'copy'),
    _Entry(('params', *target, 'bias'), prefix + 'bias', 'copy'),
    _Entry(('batch_stats', *target, 'mean'), prefix + 'running_mean', 'copy'),
    _Entry(('batch_stats', *target, 'var'), prefix + 'running_var', 'copy'),
  ]


def _haiku_bn(target: tuple[str, ...], module: str) -> list[_Entry]:
  return [
    _Entry(('params', *target, 'scale'), f'params/{module}/scale', 'vector'),
    _Entry(('params', *target, 'bias'), f'params/{module}/offset', 'vector'),
    _Entry(('batch_stats', *target, 'mean'), f'state/{module}/~/mean_ema/average', 'vector'),
    _Entry(('batch_stats', *target, 'var'), f'state/{module}/~/var_ema/average', 'vector'),
  ]


def _wrn_blocks(depth: int, widen: int, base: int, projection_first: bool):
  """(flax block name, group, index in group, has projection) of each WRN block, in order."""
  n = (depth - 4) // 6
  widths = [base, base * widen, 2 * base * widen, 4 * base * widen]
  j = 0
  for g in range(3):
    for i in range(n):
      in_planes = widths[g] if i == 0 else widths[g + 1]
      projection = (projection_first and i == 0) or in_planes != widths[g + 1]
      yield f'WRNBlock_{j}', g, i, projection
      j += 1


def _wrn_entries(family: str, model: WideResNet) -> list[_Entry]:
  entries = []
  blocks = _wrn_blocks(model.depth, model.widen, model.base_width, model.projection_first)
  if family == 'deepmind_wrn_haiku':
    root = 'wide_res_net'
    entries.append(_Entry(('params', 'Conv_0', 'kernel'), f'params/{root}/init_conv/w', 'copy'))
    for name, g, i, projection in blocks:
      m = f'{root}/resnet_lay_{g}_block_{i}'
      convs = ['shortcut', 'conv_0', 'conv_1'] if projection else ['conv_0', 'conv_1']
      for c, conv in enumerate(convs):
        entries.append(_Entry(('params', name, f'Conv_{c}', 'kernel'), f'params/{m}/{conv}/w', 'copy'))
      entries += _haiku_bn((name, 'BatchNorm_0'), f'{m}/batchnorm_0')
      entries += _haiku_bn((name, 'BatchNorm_1'), f'{m}/batchnorm_1')
    entries += _haiku_bn(('BatchNorm_0',), f'{root}/batchnorm')
    entries.append(_Entry(('params', 'Dense_0', 'kernel'), f'params/{root}/logits/w', 'copy'))
    entries.append(_Entry(('params', 'Dense_0', 'bias'), f'params/{root}/logits/b', 'copy'))
    return entries
  deepmind = family == 'deepmind_wrn_torch'
  stem, top_bn, head = ('init_conv', 'batchnorm', 'logits') if deepmind else ('conv1', 'bn1', 'fc')
  entries.append(_Entry(('params', 'Conv_0', 'kernel'), f'{stem}.weight', 'conv'))
  for name, g, i, projection in blocks:
    p = f'layer.{g}.block.{i}.' if deepmind else f'block{g + 1}.layer.{i}.'
    bn0, bn1, c0, c1, sc = (
      ('batchnorm_0', 'batchnorm_1', 'conv_0', 'conv_1', 'shortcut')
      if deepmind
      else ('bn1', 'bn2', 'conv1', 'conv2', 'convShortcut')
    )
    convs = [sc, c0, c1] if projection else [c0, c1]
    for c, conv in enumerate(convs):
      entries.append(_Entry(('params', name, f'Conv_{c}', 'kernel'), f'{p}{conv}.weight', 'conv'))
    entries += _torch_bn((name, 'BatchNorm_0'), f'{p}{bn0}.')
    entries += _torch_bn((name, 'BatchNorm_1'), f'{p}{bn1}.')
  entries += _torch_bn(('BatchNorm_0',), f'{top_bn}.')
  entries.append(_Entry(('params', 'Dense_0', 'kernel'), f'{head}.weight', 'dense'))
  entries.append(_Entry(('params', 'Dense_0', 'bias'), f'{head}.bias', 'copy'))
  return entries


def _resnet_entries(model: ResNet) -> list[_Entry]:
  entries = [_Entry(('params', 'Conv_0', 'kernel'), 'conv1.weight', 'conv')]
  if not model.preact:
    entries += _torch_bn(('BatchNorm_0',), 'bn1.')
  in_planes, j = model.widths[0], 0
  for stage, (blocks, features) in enumerate(zip(model.stage_blocks, model.widths)):
    for i in range(blocks):
      stride = 2 if (stage > 0 and i == 0) else 1
      projection = stride != 1 or in_planes != features
      p = f'layer{stage + 1}.{i}.'
      if model.preact:
        name = f'PreActBlock_{j}'
        convs = ['shortcut.0', 'conv1', 'conv2'] if projection else ['conv1', 'conv2']
        entries += _torch_bn((name, 'BatchNorm_0'), p + 'bn1.') + _torch_bn((name, 'BatchNorm_1'), p + 'bn2.')
      else:
        name = f'BasicBlock_{j}'
        convs = ['conv1', 'conv2'] + (['shortcut.0'] if projection else [])
        entries += _torch_bn((name, 'BatchNorm_0'), p + 'bn1.') + _torch_bn((name, 'BatchNorm_1'), p + 'bn2.')
        if projection:
          entries += _torch_bn((name, 'BatchNorm_2'), p + 'shortcut.1.')
      for c, conv in enumerate(convs):
        entries.append(_Entry(('params', name, f'Conv_{c}', 'kernel'), f'{p}{conv}.weight', 'conv'))
      in_planes, j = features, j + 1
  if model.preact and model.final_norm:
    entries += _torch_bn(('BatchNorm_0',), 'bn.')
  entries.append(_Entry(('params', 'Dense_0', 'kernel'), 'linear.weight', 'dense'))
  entries.append(_Entry(('params', 'Dense_0', 'bias'), 'linear.bias', 'copy'))
  return entries


_LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
  'conv': lambda a: a.transpose(2, 3, 1, 0),
  'dense': lambda a: a.T,
  'vector': lambda a: a.reshape(-1),
  'copy': lambda a: a,
}


def _ignorable(family: str, key: str) -> bool:
  """Keys a checkpoint may hold that no forward pass reads."""
  if key.endswith('num_batches_tracked'):  # BatchNorm's step counter
    return True
  if family == 'robustbench_wrn' and key.startswith('sub_block1.'):  # built, never called (TRADES)
    return True
  if family == 'deepmind_wrn_haiku' and key.startswith('state/') and key.endswith(('/counter', '/hidden')):
    return True  # EMA bookkeeping; `average` is what Haiku's BatchNorm reads at test time
  return False


def _assemble(entries: list[_Entry], source: dict[str, np.ndarray], template, family: str, what: str):
  """Our variables from the entries, checked against the model's own variable shapes."""
  target_shapes = {
    tuple(getattr(k, 'key', str(k)) for k in path): leaf.shape
    for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]
  }
  mapped = {e.target for e in entries}
  unmapped = sorted('/'.join(t) for t in target_shapes if t not in mapped)
  if unmapped:  # a bug of ours, not of the file: every variable needs a source
    raise AssertionError(f'{what}: no source for {unmapped[:5]}')
  missing = [e.source for e in entries if e.source not in source]
  used = {e.source for e in entries}
  unexpected = sorted(k for k in source if k not in used and not _ignorable(family, k))
  shapes = []
  out: dict = {}
  for e in entries:
    if e.source not in source:
      continue
    value = _LAYOUTS[e.layout](np.asarray(source[e.source]))
    want = target_shapes[e.target]
    if value.shape != want:
      shapes.append(f'{e.source}: {tuple(source[e.source].shape)} → {value.shape}, expected {want}')
      continue
    node = out
    for part in e.target[:-1]:
      node = node.setdefault(part, {})
    node[e.target[-1]] = jnp.asarray(value, jnp.float32)
  if missing or unexpected or shapes:
    parts = [f'the checkpoint ({family} naming) does not hold the parameters of {what}:']
    for label, items in (
      ('missing keys', missing),
      ('unexpected keys', unexpected),
      ('wrong shapes', shapes),
    ):
      if items:
        parts.append(f'{len(items)} {label}, first: {items[:5]}')
    raise ArchitectureMismatchError(' '.join(parts))
  return out


def zoo_network(arch: str, family: str, dataset: str, **overrides):
  """Our Flax network for `arch` in the conventions of the checkpoint family (see module doc).

  Args:
    arch: a key of `ARCHS`.
    family: from `detect_family`.
    dataset: 'cifar10' or 'cifar100' (classes; DeepMind's input normalisation).
    **overrides: model fields to replace (e.g. `base_width` of the small test fixtures, or
      `mean`/`std` for a RobustBench model trained on normalised inputs).

  Raises:
    ValueError: an unknown arch or dataset, or an arch of another kind than the file holds.
  """
  if arch not in ARCHS:
    raise ValueError(f'unknown arch {arch!r}; known: {", ".join(sorted(ARCHS))}')
  if dataset not in NUM_CLASSES:
    raise ValueError(f'unknown dataset {dataset!r} for published models; use one of {sorted(NUM_CLASSES)}')
  spec = dict(ARCHS[arch])
  kind = spec.pop('kind')
  file_kind = {'resnet': 'resnet', 'preact_resnet': 'preact_resnet'}.get(family, 'wrn')
  if kind != file_kind:
    raise ArchitectureMismatchError(
      f'--arch={arch} is a {kind} network, but the checkpoint holds a {file_kind} ({family} naming)'
    )
  fields: dict[str, Any] = dict(num_classes=NUM_CLASSES[dataset], **spec)
  if family.startswith('deepmind'):
    mean, std = DEEPMIND_NORMALIZATION[dataset]
    fields.update(act=Swish, padding='same', mean=mean, std=std)
    if family == 'deepmind_wrn_haiku':
      fields.update(projection_first=True)
  if kind == 'wrn':
    fields.update(overrides)
    return declare(WideResNet(**fields), DETERMINISTIC)
  fields.update(preact=kind == 'preact_resnet')
  fields.update(overrides)
  return declare(ResNet(**fields), DETERMINISTIC)


def convert(arch: str, fmt: str, source: dict[str, np.ndarray], dataset: str, **overrides):
  """(model, variables) of a published checkpoint's arrays, ready for `make_logits_fn`.

  Args:
    arch: a key of `ARCHS`.
    fmt: the reader's format ('torch', 'safetensors' or 'haiku').
    source: the arrays by name, from `readers.read_checkpoint`.
    dataset: 'cifar10' or 'cifar100'.
    **overrides: model fields (see `zoo_network`).

  Raises:
    ArchitectureMismatchError: the file's keys or shapes do not fit the architecture.
  """
  family = detect_family(fmt, source)
  if family == 'preact_resnet' and 'final_norm' not in overrides:
    overrides['final_norm'] = 'bn.weight' in source  # kuangliu's original has no final bn-act
  model = zoo_network(arch, family, dataset, **overrides)
  entries = _resnet_entries(model) if isinstance(model, ResNet) else _wrn_entries(family, model)
  template = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
  variables = _assemble(entries, source, template, family, f'--arch={arch}')
  return model, variables
