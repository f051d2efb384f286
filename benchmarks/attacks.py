"""Attack throughput: input gradient, FGSM, PGD-10, CW-L2 (100 steps, 1 binary step) per batch.

  python -m benchmarks.attacks [--models=small_cnn,wrn16_4] [--batch=128] [--repeats=3] [--microbatch=16] [--cw_steps=100 (0 skips CW)]
  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution python -m benchmarks.attacks

Prints one JSON line per measurement, then ratio_to_limit = t(PGD-k)/(k·t(grad)) (target ≤ 1.0).
It measures jaxrobust alone and prints no ratio to another library: a speed-up is only claimed
from both sides timed in the same run on the same machine.
"""

import functools

import jax

from benchmarks.common import arg, emit, timeit
from jaxrobust import attacks as A
from jaxrobust.models import create_model, make_logits_fn

SHAPES = {'wrn16_4': (32, 32, 3), 'small_cnn': (28, 28, 1)}


def bench(name: str, batch: int, repeats: int, cw_steps: int):
  model = create_model(name, num_classes=10)
  shape = SHAPES[name]
  x = jax.random.uniform(jax.random.key(0), (batch,) + shape)
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  variables = jax.jit(model.init)(jax.random.key(2), x[:2])
  f = make_logits_fn(model, variables)  # a Partial: parameters are jit arguments
  key = jax.random.key(3)

  mb = arg('microbatch', 16)

  @functools.partial(jax.jit, static_argnames=('microbatch',))
  def input_grad(f, x, y, microbatch=None):
    return A.loss_and_grad(f, A.cross_entropy, x, y, key, microbatch=microbatch)[2]

  pgd = functools.partial(A.pgd, epsilon=8 / 255, step_size=2 / 255, num_steps=10)
  runs = {
    'input_grad': lambda: input_grad(f, x, y),
    f'input_grad_mb{mb}': lambda: input_grad(f, x, y, microbatch=mb),
    'fgsm': lambda: A.fgsm(f, key, x, y, epsilon=8 / 255),
    'pgd10': lambda: pgd(f, key, x, y),
    f'pgd10_mb{mb}': lambda: pgd(f, key, x, y, microbatch=mb),
    'cw_l2': lambda: A.cw_l2(f, key, x, y, max_iterations=cw_steps, binary_search_steps=1, abort_early=False),
  }
  if cw_steps == 0:
    del runs['cw_l2']
  t = {}
  for what, fn in runs.items():
    first, med = timeit(fn, repeats=repeats if what != 'cw_l2' else 1)
    t[what] = med
    emit(model=name, batch=batch, measure=what, seconds=round(med, 4), first_call_s=round(first, 2))
  for variant, grad, pgd10 in (
    ('whole_batch', 'input_grad', 'pgd10'),
    (f'microbatch{mb}', f'input_grad_mb{mb}', f'pgd10_mb{mb}'),
  ):
    row = dict(
      model=name,
      batch=batch,
      measure='summary',
      variant=variant,
      ratio_to_limit=round(t[pgd10] / (10 * t[grad]), 3),
      pgd10_s=round(t[pgd10], 3),
      cw_per_step_over_grad=round(t['cw_l2'] / (cw_steps * t['input_grad']), 3) if cw_steps else None,
    )
    emit(**row)


def main():
  for name in arg('models', 'small_cnn,wrn16_4').split(','):
    bench(name, arg('batch', 128), arg('repeats', 3), arg('cw_steps', 100))


if __name__ == '__main__':
  main()
