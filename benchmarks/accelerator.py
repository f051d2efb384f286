"""The first command to run on a GPU or TPU: the study's workloads on every local device.

  python -m benchmarks.accelerator [--dtypes=float32,bfloat16] [--batch=128] [--aa_batch=64] [--tiny=0]

One JSON line per measurement, each naming the backend, the device kind and the device count
(after a line with the environment: versions, XLA flags, machine, commit):

- `pgd10`: images/s of PGD-10 (L∞, ε = 8/255, step 2/255, random start) on WRN-34-10 with
  CIFAR-10 shapes and random weights, the batch sharded over all local devices;
- `autoattack`: images/s of AutoAttack's standard version (ε = 8/255) on the same model;
- `lwta_train`: PGD-AT + ELBO training steps/s of the stochastic LWTA WRN-34-1 (the study's
  CIFAR-10 recipe: PGD-5, ε = 8/255) on synthetic data of CIFAR-10's shapes, data-parallel over
  all local devices (the training loop itself, timed between logged steps after compilation);
- `lwta_inference`: ms per image of one LWTA WRN-34-1 forward pass, beside the study's reported
  166 ms (a figure from the paper, on its own hardware: context, not a ratio we claim).

Each workload runs in float32 and in bfloat16 (`--dtypes`; mixed precision: bfloat16
activations and convolutions, float32 parameters, BatchNorm statistics and logits). `--tiny=1`
replaces the networks by WRN-10-1 (and its LWTA twin) at 8×8×3, with a few images and steps: the
smoke run of the test suite, whose numbers mean nothing.
"""

from __future__ import annotations

import tempfile
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from absl import flags

from benchmarks.common import emit, parse_flags
from jaxrobust import attacks as A
from jaxrobust.models import create_model, make_logits_fn

EPS = 8 / 255
STUDY_LWTA_MS_PER_IMAGE = 166.0  # the study's reported LWTA WRN-34 inference time per image
FLAGS = flags.FlagValues()
flags.DEFINE_string('dtypes', 'float32,bfloat16', 'compute dtypes, comma-separated', flag_values=FLAGS)
flags.DEFINE_bool('tiny', False, 'tiny models and sizes (the tests run it so)', flag_values=FLAGS)
flags.DEFINE_integer(
  'batch', None, 'images per batch (default 8 tiny, 128)', lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
  'aa_batch', None, "AutoAttack's batch (default 4 tiny, 64)", lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
  'repeats', None, 'timed calls per side (default 1 tiny, 3)', lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer(
  'train_steps', None, 'training steps timed (default 4 tiny, 20)', lower_bound=1, flag_values=FLAGS
)


def _devices_row() -> dict:
  d = jax.local_devices()
  return {'backend': jax.default_backend(), 'device_kind': d[0].device_kind, 'devices': len(d)}


def _sharded(x):
  mesh = Mesh(np.array(jax.local_devices()), ('data',))
  return jax.device_put(x, NamedSharding(mesh, P('data')))


def _median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile and warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def attacks(dtype: str, tiny: bool, batch: int, aa_batch: int, repeats: int) -> None:
  name, shape = ('wrn_tiny', (8, 8, 3)) if tiny else ('wrn34_10', (32, 32, 3))
  model = create_model(name, num_classes=10, dtype=None if dtype == 'float32' else dtype)
  x = jax.random.uniform(jax.random.key(0), (batch, *shape))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  f = make_logits_fn(model, jax.jit(model.init)(jax.random.key(2), x[:1]))
  key = jax.random.key(3)
  xs, ys = _sharded(x), _sharded(y)
  pgd = jax.jit(lambda f, k, x, y: A.pgd(f, k, x, y, epsilon=EPS, step_size=2 / 255, num_steps=10))
  s = _median_seconds(lambda: pgd(f, key, xs, ys), repeats)
  emit(
    measure='pgd10', model=name, dtype=dtype, batch=batch, seconds=s, images_per_s=batch / s, **_devices_row()
  )
  xa, ya = _sharded(x[:aa_batch]), _sharded(y[:aa_batch])
  budget = dict(num_steps=5, num_queries=20) if tiny else {}
  t0 = time.perf_counter()
  jax.block_until_ready(A.autoattack(f, key, xa, ya, epsilon=EPS, **budget)[0])
  s = time.perf_counter() - t0  # one call: AutoAttack's cost depends on how many points survive
  emit(
    measure='autoattack',
    model=name,
    dtype=dtype,
    batch=aa_batch,
    seconds=s,
    images_per_s=aa_batch / s,
    note='one call, compilation included',
    **_devices_row(),
  )


def lwta(dtype: str, tiny: bool, batch: int, repeats: int, train_steps: int) -> None:
  from jaxrobust.configs.defenses import defense_config
  from jaxrobust.evaluation.evaluator import inference_ms_per_image
  from jaxrobust.train import train_and_evaluate
  from jaxrobust.train.metrics import read_jsonl

  c = defense_config('lwta', 'cifar10')
  shape = (8, 8, 3) if tiny else (32, 32, 3)
  if tiny:
    c.model.name = 'wrn_tiny_lwta'
  n_dev = len(jax.local_devices())
  c.train.batch_size = max(batch // n_dev, 1) * n_dev
  c.data.name = 'synthetic'
  c.data.synthetic = dict(
    num_train=c.train.batch_size * 4, num_test=n_dev * 2, image_shape=shape, num_classes=10
  )
  c.train.num_steps, c.train.log_every = train_steps, 1
  c.train.checkpoint_every = train_steps
  if dtype != 'float32':
    c.model.kwargs = dict(c.model.get('kwargs', {}) or {}, dtype=dtype)
  with tempfile.TemporaryDirectory() as workdir:
    out = train_and_evaluate(c, workdir, progress=False)
    rows = [r for r in read_jsonl(f'{workdir}/metrics.jsonl') if 'elapsed_s' in r]
  # From the second logged step on: the first holds the compilation.
  first, last = rows[1], rows[-1]
  steps_per_s = (last['step'] - first['step']) / (last['elapsed_s'] - first['elapsed_s'])
  emit(
    measure='lwta_train',
    model=c.model.name,
    objective='PGD-AT + ELBO',
    dtype=dtype,
    global_batch=c.train.batch_size,
    steps_per_s=steps_per_s,
    images_per_s=steps_per_s * c.train.batch_size,
    timed_steps=last['step'] - first['step'],
    **_devices_row(),
  )
  ms = inference_ms_per_image(out['model'], out['state'].variables, shape, batch=batch, repeats=repeats)
  emit(
    measure='lwta_inference',
    model=c.model.name,
    dtype=dtype,
    batch=batch,
    ms_per_image=ms,
    study_ms_per_image=STUDY_LWTA_MS_PER_IMAGE,
    **_devices_row(),
  )


def main() -> None:
  F = parse_flags(FLAGS)
  tiny = F.tiny
  batch = F.batch or (8 if tiny else 128)
  repeats = F.repeats or (1 if tiny else 3)
  for dtype in F.dtypes.split(','):
    if dtype not in ('float32', 'bfloat16', 'float16'):
      raise SystemExit(f'--dtypes: float32, bfloat16 or float16, got {dtype!r}')
    attacks(dtype, tiny, batch, min(F.aa_batch or (4 if tiny else 64), batch), repeats)
    lwta(dtype, tiny, batch, repeats, F.train_steps or (4 if tiny else 20))


if __name__ == '__main__':
  main()
