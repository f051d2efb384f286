"""Standard AutoAttack, time per image: jaxrobust against the reference (`pyautoattack`, the code of
fra31/auto-attack) and torchattacks, on the same weights and images, timed in this run.

  python -m benchmarks.autoattack [--workdir=runs/demo/fashion_mnist/pgd_at] [--n_cnn=200] [--n_wrn=8]
      [--eps_wrn=0.002] [--repeats=1] [--torch=1] [--libraries=jaxrobust,reference,torchattacks]
      [--num_steps=N --num_queries=N: smoke runs only]

Without torch (the `parity` extra) or with --torch=0, it times jaxrobust alone and says so.
`make parity` runs it with XLA_FLAGS sending convolutions to Eigen (docs/performance.md, item 4:
1.33x faster WRN-16-4 input gradients, neutral on the small CNN); each JSON line records the flags.

Models: the small CNN of a trained run (`--workdir`, ε = 0.1 on Fashion-MNIST), and WRN-16-4 with
random weights (RobustBench's WideResNet in torch, read into ours by the zoo converter) on random
32×32 images labelled with its own predictions, at a small ε so that points survive each attack
and all four run their full budgets. Each library runs the whole standard version (APGD-CE,
APGD-T with 9 targets, FAB-T with 9 targets, Square with 5000 queries; 100 iterations); the runs
alternate, `repeats` times each (one run of the reference on WRN-16-4 takes minutes).

Each line also gives the seconds of each attack in the last run of jaxrobust and of the reference
(their `perturb` calls timed) and the ratio per attack, so that a gap can be placed.

Also prints APGD's ratio_to_limit = t(APGD-CE, 100 iterations) / (100 · t(one input gradient)) on
each model's batch (target ≤ 1.1), from alternating medians of 3.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import side_by_side
from absl import flags

from benchmarks.common import emit, parse_flags
from benchmarks.parity.autoattack import run_ours, run_reference, run_torchattacks
from jaxrobust import attacks as A
from jaxrobust.models import make_logits_fn
from jaxrobust.machine import cpu_model, usable_cores


def small_cnn(workdir: str, n: int, with_torch: bool):
  from jaxrobust.train.restore import load_trained

  _, model, variables, ds = load_trained(workdir)
  x = np.asarray(ds.test_images[:n], np.float32) / 255.0
  twin = None
  if with_torch:
    from tests.fixtures.torch_twins import small_cnn_from_flax

    twin = small_cnn_from_flax(model, variables).eval()
  return make_logits_fn(model, variables), twin, x, np.asarray(ds.test_labels[:n])


def _random_images_own_labels(f, n, shape):
  x = np.asarray(jax.random.uniform(jax.random.key(0), (n,) + shape))
  return x, np.asarray(f(jnp.asarray(x), jax.random.key(0)).argmax(-1))


def wrn16_4(n: int, with_torch: bool):
  if not with_torch:
    from jaxrobust.models import create_model

    model = create_model('wrn16_4', num_classes=10)
    f = make_logits_fn(model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
    return (f, None, *_random_images_own_labels(f, n, (32, 32, 3)))
  import torch

  from tests.fixtures.zoo_twins import RobustBenchWRN, randomize_batchnorm
  from jaxrobust.models.zoo import convert

  torch.manual_seed(0)
  twin = RobustBenchWRN(depth=16, widen=4)
  randomize_batchnorm(twin, torch.Generator().manual_seed(0))
  twin.eval()
  model, variables = convert(
    'wrn16_4', 'torch', {k: v.numpy() for k, v in twin.state_dict().items()}, 'cifar10'
  )
  f = make_logits_fn(model, variables)
  return (f, twin, *_random_images_own_labels(f, n, (32, 32, 3)))


def apgd_ratio(f, x, y, eps, steps=100):
  key = jax.random.key(1)
  grad = jax.jit(lambda f, x, y: A.loss_and_grad(f, A.cross_entropy, x, y, key)[2])
  apgd = functools.partial(A.apgd, epsilon=eps, num_steps=steps)
  t = side_by_side.alternate({'grad': lambda: grad(f, x, y), 'apgd': lambda: apgd(f, key, x, y)}, 3)
  return t['apgd']['median_s'] / (steps * t['grad']['median_s'])


LIBRARIES = ('jaxrobust', 'reference', 'torchattacks')


def bench(name, f, twin, x, y, eps, repeats, budget, libraries=LIBRARIES):
  acc, contenders, diff = {}, {}, None
  split = {side: {} for side in libraries}  # seconds per attack, of the last run of each side
  if budget and twin is not None:
    raise SystemExit(
      '--num_steps/--num_queries are for smoke runs without torch: comparisons use the defaults'
    )

  def record(side, fn):
    def run():
      acc[side] = fn()[0]

    return run

  contenders['jaxrobust'] = record(
    'jaxrobust', lambda: run_ours(f, x, y, eps, batch_size=len(x), split=split['jaxrobust'], **budget)
  )
  if twin is not None:
    import torch

    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    yt = torch.from_numpy(y.astype(np.int64))
    with torch.no_grad():
      diff = float(np.abs(twin(xt).numpy() - np.asarray(f(jnp.asarray(x), jax.random.key(0)))).max())
    if diff > 1e-4:
      raise SystemExit(f'{name}: the torch twin disagrees with the Flax model by {diff} > 1e-4')
    contenders['reference'] = record(
      'reference', lambda: run_reference(twin, xt, yt, eps, batch_size=len(x), split=split['reference'])
    )
    contenders['torchattacks'] = record(
      'torchattacks', lambda: run_torchattacks(twin, xt, yt, eps, batch_size=len(x))
    )
  contenders = {side: run for side, run in contenders.items() if side in libraries}
  t = side_by_side.alternate(contenders, repeats)
  n = len(x)
  row = dict(model=name, n=n, epsilon=eps, cpu=cpu_model(), max_logit_difference=diff)
  for side, v in t.items():
    row[f'{side}_ms_per_image'] = round(1000 * v['median_s'] / n, 1)
    row[f'{side}_first_run_s'] = round(v['first_s'], 1)  # compilation included
    row[f'{side}_robust_accuracy'] = acc[side]
    if split.get(side):
      row[f'{side}_seconds_by_attack'] = {k: round(v, 1) for k, v in split[side].items()}
  if twin is None:
    row['note'] = 'torch not installed (the parity extra): no ratio was measured'
  for side in ('reference', 'torchattacks'):
    if side in t:
      row[f'speedup_vs_{side}'] = round(t[side]['median_s'] / t['jaxrobust']['median_s'], 2)
  if 'reference' in t:
    row['speedup_by_attack_vs_reference'] = {
      k: round(split['reference'][k] / v, 2)
      for k, v in split['jaxrobust'].items()
      if split['reference'].get(k)
    }
  row['apgd_ratio_to_limit'] = round(
    apgd_ratio(f, jnp.asarray(x), jnp.asarray(y), eps, budget.get('num_steps', 100)), 3
  )
  row['repeats'] = repeats
  emit(**row)


FLAGS = flags.FlagValues()
flags.DEFINE_string('workdir', 'runs/demo/fashion_mnist/pgd_at', 'the trained small CNN', flag_values=FLAGS)
flags.DEFINE_integer(
  'n_cnn', 200, 'test images for the small CNN (0: skip it)', lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_integer('n_wrn', 8, 'images for WRN-16-4 (0: skip it)', lower_bound=0, flag_values=FLAGS)
flags.DEFINE_float(
  'eps_wrn', 0.002, "WRN-16-4's ε (random weights: a small ε leaves points to attack)", flag_values=FLAGS
)
flags.DEFINE_integer('repeats', 1, 'timed calls per side', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool('torch', True, 'time the torch side too, when torch is installed', flag_values=FLAGS)
flags.DEFINE_integer(
  'num_steps', 0, 'APGD steps on both sides (0: the standard budget)', lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_integer(
  'num_queries', 0, 'Square queries on both sides (0: the standard budget)', lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_string(
  'libraries', ','.join(LIBRARIES), 'jaxrobust and the others timed, comma-separated', flag_values=FLAGS
)


def main():
  F = parse_flags(FLAGS)
  with_torch = side_by_side.torch_available() and F.torch
  if with_torch:
    import torch

    torch.set_num_threads(usable_cores())
  repeats = F.repeats
  budget = {k: v for k in ('num_steps', 'num_queries') if (v := F[k].value)}
  workdir = F.workdir
  libraries = tuple(F.libraries.split(','))
  if 'jaxrobust' not in libraries or not set(libraries) <= set(LIBRARIES):
    raise SystemExit(f'--libraries: jaxrobust and any of {LIBRARIES[1:]}, comma-separated; got {libraries}')
  if F.n_cnn > 0:
    bench('small_cnn', *small_cnn(workdir, F.n_cnn, with_torch), 0.1, repeats, budget, libraries)
  if F.n_wrn > 0:
    bench('wrn16_4', *wrn16_4(F.n_wrn, with_torch), F.eps_wrn, repeats, budget, libraries)


if __name__ == '__main__':
  main()
