"""Write, or check against live torch, the model-zoo fixtures of tests/data/zoo (the `parity` extra).

  python -m benchmarks.zoo_fixtures --write   # make the fixtures (torch, fixed seeds)
  python -m benchmarks.zoo_fixtures           # check: torch logits of the committed files = ours
  python -m benchmarks.zoo_fixtures --full    # also full-size WRN-28-10/ResNet-18/PreActResNet-18

Each fixture is a tiny random-weight network in a published family's naming and file format,
with BatchNorm statistics drawn at random so that none of them can be dropped unnoticed:

| file | family | format |
|---|---|---|
| rb_wrn.pt | RobustBench WRN-10-1 (base 4, with TRADES' unused sub_block1), under 'state_dict' with DataParallel's 'module.' | zip |
| dm_wrn.pt | DeepMind WRN-10-2 (base 4), swish, CIFAR-10 normalisation | zip |
| dm_wrn_haiku.npy | DeepMind's Haiku WRN-10-2 (base 4): pickled (params, state) | .npy |
| preact_resnet.pt | PreActResNet (1 block per stage, widths 4-8-8-16, final bn) | legacy (torch < 1.6) |
| resnet.safetensors | ResNet (1 block per stage, widths 4-8-8-16) | safetensors |

expected.npz holds the inputs (NHWC in [0, 1]) and each fixture's logits from torch.
"""

from __future__ import annotations

import json
import os
import struct
import sys

import numpy as np

FIXTURES = os.path.join(os.path.dirname(__file__), '..', 'tests', 'data', 'zoo')
# (file, arch for jaxrobust, model overrides) — the tests load each with these.
SPECS = {
  'rb_wrn.pt': ('wrn28_10', dict(depth=10, widen=1, base_width=4)),
  'dm_wrn.pt': ('wrn28_10', dict(depth=10, widen=2, base_width=4)),
  'dm_wrn_haiku.npy': ('wrn28_10', dict(depth=10, widen=2, base_width=4)),
  'preact_resnet.pt': ('preact_resnet18', dict(stage_blocks=(1, 1, 1, 1), widths=(4, 8, 8, 16))),
  'resnet.safetensors': ('resnet18', dict(stage_blocks=(1, 1, 1, 1), widths=(4, 8, 8, 16))),
}


def _torch_models():
  import torch

  from benchmarks import zoo_twins as T

  g = torch.Generator().manual_seed(0)
  torch.manual_seed(0)
  models = {
    'rb_wrn.pt': T.RobustBenchWRN(depth=10, widen=1, base=4, sub_block1=True),
    'dm_wrn.pt': T.DeepMindWRN(depth=10, width=2, base=4),
    'preact_resnet.pt': T.CifarResNet(preact=True, blocks=(1, 1, 1, 1), widths=(4, 8, 8, 16)),
    'resnet.safetensors': T.CifarResNet(preact=False, blocks=(1, 1, 1, 1), widths=(4, 8, 8, 16)),
  }
  for m in models.values():
    T.randomize_batchnorm(m, g)
    m.eval()
  return models


def _write_safetensors(path, state_dict):
  header, blobs, offset = {}, [], 0
  for name, tensor in state_dict.items():
    a = tensor.detach().cpu().numpy()
    dtype = {np.float32: 'F32', np.int64: 'I64'}[a.dtype.type]
    raw = np.ascontiguousarray(a).astype(a.dtype.newbyteorder('<')).tobytes()
    header[name] = {'dtype': dtype, 'shape': list(a.shape), 'data_offsets': [offset, offset + len(raw)]}
    blobs.append(raw)
    offset += len(raw)
  h = json.dumps(header).encode()
  with open(path, 'wb') as f:
    f.write(struct.pack('<Q', len(h)) + h + b''.join(blobs))


def _inputs():
  return np.random.RandomState(0).rand(4, 32, 32, 3).astype(np.float32)


def write():
  import torch

  from benchmarks import zoo_twins as T

  os.makedirs(FIXTURES, exist_ok=True)
  x = _inputs()
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  logits = {}
  for name, model in _torch_models().items():
    path = os.path.join(FIXTURES, name)
    sd = model.state_dict()
    if name == 'rb_wrn.pt':
      torch.save({'state_dict': {f'module.{k}': v for k, v in sd.items()}, 'epoch': 99}, path)
    elif name == 'preact_resnet.pt':
      torch.save(sd, path, _use_new_zipfile_serialization=False)
    elif name.endswith('.safetensors'):
      _write_safetensors(path, sd)
    else:
      torch.save(sd, path)
    with torch.no_grad():
      logits[name] = model(xt).numpy()
  params, state = T.haiku_wrn_params(depth=10, width=2, base=4)
  pair = np.empty(2, dtype=object)
  pair[0], pair[1] = params, state
  np.save(os.path.join(FIXTURES, 'dm_wrn_haiku.npy'), pair, allow_pickle=True)
  logits['dm_wrn_haiku.npy'] = T.haiku_wrn_forward(params, state, x, depth=10)
  np.savez(os.path.join(FIXTURES, 'expected.npz'), inputs=x, **logits)
  for name in sorted(os.listdir(FIXTURES)):
    print(json.dumps({'fixture': name, 'bytes': os.path.getsize(os.path.join(FIXTURES, name))}))


def check():
  """Loads each committed fixture into torch (weights_only) and into jaxrobust; all logits agree."""
  import jax
  import torch

  from benchmarks import zoo_twins as T
  from jaxrobust.models import make_logits_fn
  from jaxrobust.models.zoo import load_published

  expected = np.load(os.path.join(FIXTURES, 'expected.npz'))
  x = expected['inputs']
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  worst = 0.0
  for name, model in _torch_models().items():
    path = os.path.join(FIXTURES, name)
    if name.endswith('.safetensors'):
      from jaxrobust.models.zoo import read_safetensors

      sd = {k: torch.from_numpy(v) for k, v in read_safetensors(path).items()}
    else:
      sd = torch.load(path, weights_only=True)
      sd = sd.get('state_dict', sd)
      sd = {k.removeprefix('module.'): v for k, v in sd.items()}
    model.load_state_dict(sd)
    with torch.no_grad():
      live = model(xt).numpy()
    arch, kw = SPECS[name]
    m, v = load_published(path, arch, 'cifar10', **kw)
    ours = np.asarray(make_logits_fn(m, v)(jax.numpy.asarray(x), jax.random.key(0)))
    row = dict(
      fixture=name,
      torch_vs_stored=float(np.abs(live - expected[name]).max()),
      jaxrobust_vs_torch=float(np.abs(ours - live).max()),
    )
    worst = max(worst, row['jaxrobust_vs_torch'], row['torch_vs_stored'])
    print(json.dumps(row))
  params_state = np.load(os.path.join(FIXTURES, 'dm_wrn_haiku.npy'), allow_pickle=True)  # our own file
  live = T.haiku_wrn_forward(params_state[0], params_state[1], x, depth=10)
  m, v = load_published(
    os.path.join(FIXTURES, 'dm_wrn_haiku.npy'),
    *SPECS['dm_wrn_haiku.npy'][:1],
    'cifar10',
    **SPECS['dm_wrn_haiku.npy'][1],
  )
  ours = np.asarray(make_logits_fn(m, v)(jax.numpy.asarray(x), jax.random.key(0)))
  print(json.dumps(dict(fixture='dm_wrn_haiku.npy', jaxrobust_vs_direct=float(np.abs(ours - live).max()))))
  worst = max(worst, float(np.abs(ours - live).max()))
  if worst > 1e-4:
    raise SystemExit(f'a fixture disagrees by {worst} > 1e-4')
  print(json.dumps({'all_fixtures_agree_within': 1e-4, 'worst': worst}))


def check_full_size(tmp_dir='/tmp/jaxrobust-zoo-full'):
  """Full-size random-weight networks of each family, saved by torch (or as a Haiku dict), read
  back by jaxrobust: the real depths, widths and key counts, not only the tiny fixtures."""
  import jax
  import torch

  from benchmarks import zoo_twins as T
  from jaxrobust.models import make_logits_fn
  from jaxrobust.models.zoo import load_published

  os.makedirs(tmp_dir, exist_ok=True)
  x = _inputs()
  xt = torch.from_numpy(x).permute(0, 3, 1, 2)
  g = torch.Generator().manual_seed(1)
  torch.manual_seed(1)
  cases = {
    'robustbench_wrn28_10.pt': ('wrn28_10', T.RobustBenchWRN(depth=28, widen=10, sub_block1=True)),
    'deepmind_wrn28_10.pt': ('wrn28_10', T.DeepMindWRN(depth=28, width=10)),
    'resnet18.pt': ('resnet18', T.CifarResNet(preact=False)),
    'preact_resnet18.pt': ('preact_resnet18', T.CifarResNet(preact=True)),
  }
  worst = 0.0
  for name, (arch, model) in cases.items():
    T.randomize_batchnorm(model, g)
    model.eval()
    path = os.path.join(tmp_dir, name)
    torch.save(model.state_dict(), path)
    with torch.no_grad():
      live = model(xt).numpy()
    m, v = load_published(path, arch, 'cifar10')
    ours = np.asarray(jax.jit(make_logits_fn(m, v))(jax.numpy.asarray(x), jax.random.key(0)))
    diff = float(np.abs(ours - live).max())
    worst = max(worst, diff)
    print(
      json.dumps(
        dict(full_size=name, parameters=sum(p.numel() for p in model.parameters()), jaxrobust_vs_torch=diff)
      )
    )
  params, state = T.haiku_wrn_params(depth=28, width=10)
  pair = np.empty(2, dtype=object)
  pair[0], pair[1] = params, state
  path = os.path.join(tmp_dir, 'deepmind_wrn28_10.npy')
  np.save(path, pair, allow_pickle=True)
  m, v = load_published(path, 'wrn28_10', 'cifar10')
  ours = np.asarray(jax.jit(make_logits_fn(m, v))(jax.numpy.asarray(x), jax.random.key(0)))
  diff = float(np.abs(ours - T.haiku_wrn_forward(params, state, x, depth=28)).max())
  worst = max(worst, diff)
  print(json.dumps(dict(full_size='deepmind_wrn28_10.npy', jaxrobust_vs_direct=diff)))
  if worst > 1e-4:
    raise SystemExit(f'a full-size network disagrees by {worst} > 1e-4')


if __name__ == '__main__':
  if '--write' in sys.argv[1:]:
    write()
  else:
    check()
    if '--full' in sys.argv[1:]:
      check_full_size()
