"""Attack throughput against torchattacks on the same weights, measured side by side in this run.

  python -m benchmarks.attacks [--models=small_cnn,wrn16_4] [--batch=128] [--repeats=3]

For each model: one input gradient, FGSM and PGD-10 (ε = 8/255, α = 2/255, random start) in
jaxrobust (as a user calls it: default settings, the whole batch; and PGD-10 with gradients in
chunks of 16, `microbatch=16`) and in torchattacks on
a torch twin holding the same weights (the small CNN's twin, and RobustBench's WideResNet read by
our converter), alternating, medians of `repeats` runs. It prints one JSON line per measurement,
the speed-ups, the CPU, and ratio_to_limit = t(PGD-10) / (10 · t(input gradient)) (target ≤ 1.0).
With foolbox 3 installed (the `parity` extra), foolbox's LinfPGD on the same Flax model (JAX
through eagerpy: an eager loop) joins the same alternation, with the same ε, step, 10 steps and
random start (it also classifies its result once). Without torch (the `parity` extra) it prints
jaxrobust's figures and says no ratio was measured.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import side_by_side
from absl import flags

from benchmarks.common import emit, parse_flags
from jaxrobust import attacks as A
from jaxrobust.models import create_model, make_logits_fn
from jaxrobust.machine import cpu_model, usable_cores

SHAPES = {'wrn16_4': (32, 32, 3), 'small_cnn': (28, 28, 1)}
EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10


def models(name: str, with_torch: bool):
  """(flax model, variables, torch twin or None) with the same weights."""
  shape = SHAPES[name]
  if name == 'wrn16_4' and with_torch:
    import torch

    from tests.fixtures.zoo_twins import RobustBenchWRN
    from jaxrobust.models.zoo import convert

    torch.manual_seed(0)
    twin = RobustBenchWRN(depth=16, widen=4).eval()
    model, variables = convert(
      'wrn16_4', 'torch', {k: v.numpy() for k, v in twin.state_dict().items()}, 'cifar10'
    )
    return model, variables, twin
  model = create_model(name, num_classes=10)
  variables = jax.jit(model.init)(jax.random.key(2), jnp.zeros((2,) + shape))
  twin = None
  if with_torch:
    from tests.fixtures.torch_twins import small_cnn_from_flax

    twin = small_cnn_from_flax(model, variables).eval()
  return model, variables, twin


def torch_contenders(twin, x, y):
  import torch
  import torchattacks

  xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
  yt = torch.from_numpy(np.asarray(y).astype(np.int64))
  loss = torch.nn.CrossEntropyLoss()

  def input_grad():
    xg = xt.clone().requires_grad_(True)
    return torch.autograd.grad(loss(twin(xg), yt), xg)[0]

  fgsm = torchattacks.FGSM(twin, eps=EPS)
  pgd = torchattacks.PGD(twin, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
  return {'input_grad': input_grad, 'fgsm': lambda: fgsm(xt, yt), 'pgd10': lambda: pgd(xt, yt)}


def foolbox_pgd10(f, key, x, y):
  """foolbox 3's LinfPGD (10 steps, random start) on the same Flax model, or None without foolbox."""
  try:
    import foolbox as fb
  except ImportError:
    return None
  fmodel = fb.JAXModel(lambda z: f(z, key), bounds=(0.0, 1.0))
  attack = fb.attacks.LinfPGD(steps=STEPS, abs_stepsize=ALPHA, random_start=True)
  return lambda: attack(fmodel, x, y, epsilons=EPS)[1]


def bench(name: str, batch: int, repeats: int, with_torch: bool):
  model, variables, twin = models(name, with_torch)
  x = jax.random.uniform(jax.random.key(0), (batch,) + SHAPES[name])
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  f = make_logits_fn(model, variables)  # a Partial: parameters are jit arguments
  key = jax.random.key(3)

  @functools.partial(jax.jit, static_argnames=('microbatch',))
  def input_grad(f, x, y, microbatch=None):
    return A.loss_and_grad(f, A.cross_entropy, x, y, key, microbatch=microbatch)[2]

  pgd = functools.partial(A.pgd, epsilon=EPS, step_size=ALPHA, num_steps=STEPS)
  ours = {
    'input_grad': lambda: input_grad(f, x, y),
    'fgsm': lambda: A.fgsm(f, key, x, y, epsilon=EPS),
    'pgd10': lambda: pgd(f, key, x, y),
    'pgd10_microbatch16': lambda: pgd(f, key, x, y, microbatch=16),
  }
  contenders = {f'jaxrobust/{k}': v for k, v in ours.items()}
  if twin is not None:
    contenders.update({f'torch/{k}': v for k, v in torch_contenders(twin, x, y).items()})
  foolbox = foolbox_pgd10(f, key, x, y) if twin is not None else None
  if foolbox is not None:
    contenders['foolbox/pgd10'] = foolbox
  t = side_by_side.alternate(contenders, repeats)
  for what, v in t.items():
    emit(
      model=name,
      batch=batch,
      measure=what,
      median_s=round(v['median_s'], 4),
      first_call_s=round(v['first_s'], 2),
    )
  med = {k: v['median_s'] for k, v in t.items()}
  summary = dict(
    model=name,
    batch=batch,
    measure='summary',
    cpu=cpu_model(),
    ratio_to_limit=round(med['jaxrobust/pgd10'] / (STEPS * med['jaxrobust/input_grad']), 3),
  )
  if twin is None:
    summary['speedup_vs_torchattacks'] = None
    summary['note'] = 'torch not installed (the parity extra) or --torch=0: no ratio was measured'
  else:
    for m in ('input_grad', 'fgsm', 'pgd10'):
      summary[f'speedup_{m}'] = round(med[f'torch/{m}'] / med[f'jaxrobust/{m}'], 2)
    summary['speedup_pgd10_microbatch16'] = round(med['torch/pgd10'] / med['jaxrobust/pgd10_microbatch16'], 2)
    if 'foolbox/pgd10' in med:
      summary['speedup_pgd10_vs_foolbox'] = round(med['foolbox/pgd10'] / med['jaxrobust/pgd10'], 2)
  emit(**summary)


FLAGS = flags.FlagValues()
flags.DEFINE_string('models', 'small_cnn,wrn16_4', 'models, comma-separated', flag_values=FLAGS)
flags.DEFINE_integer('batch', 128, 'images per batch', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 3, 'timed calls per side', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool('torch', True, 'time the torch side too, when torch is installed', flag_values=FLAGS)


def main():
  F = parse_flags(FLAGS)
  with_torch = side_by_side.torch_available() and F.torch
  if with_torch:
    import torch

    torch.set_num_threads(usable_cores())
  for name in F.models.split(','):
    bench(name, F.batch, F.repeats, with_torch)


if __name__ == '__main__':
  main()
