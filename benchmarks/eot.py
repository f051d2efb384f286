"""The cost of an EOT gradient: PGD with the gradient averaged over S draws (vmap over keys)
against S times the same PGD on one draw, on the stochastic small CNNs (LWTA and PNI).

  python -m benchmarks.eot [--models=small_cnn_lwta,small_cnn_pni] [--batch=128] [--samples=20] [--steps=5] [--repeats=5] [--side=28]
  python -m benchmarks.eot --microbatch=6 --models=small_cnn_lwta   # the EOT gradient in chunks of 6
  python -m benchmarks.eot --chunks=0,1,3,6,12 [--batch=48] [--steps=25]   # EOT gradients in chunks

ratio = t(PGD with eot_samples=S) / (S · t(PGD with one draw)); target ≤ 1.0 (S draws under
`vmap` must cost no more than S single gradients); with --microbatch=k the EOT gradient is taken in
chunks of k examples (k · S draws at a time) and the single draws over the whole batch. The two programs alternate (side_by_side),
so both see the same machine state; medians are printed with the CPU model.
"""

import jax

from benchmarks import side_by_side
from absl import flags

from benchmarks.common import emit, parse_flags
from jaxrobust import attacks as A
from jaxrobust.models import STOCHASTIC, create_model, make_logits_fn
from jaxrobust.machine import cpu_model


def bench(
  name: str, batch: int, samples: int, steps: int, repeats: int, side: int = 28, microbatch: int = 0
) -> None:
  model = create_model(name, num_classes=10)
  x = jax.random.uniform(jax.random.key(0), (batch, side, side, 1))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  variables = jax.jit(lambda x: model.init({'params': jax.random.key(2), STOCHASTIC: jax.random.key(3)}, x))(
    x[:2]
  )
  f = make_logits_fn(model, variables)
  hyper = dict(epsilon=0.1, step_size=0.025, num_steps=steps)
  run = {
    f'eot{samples}': jax.jit(
      lambda k: A.pgd(f, k, x, y, eot_samples=samples, microbatch=microbatch, **hyper)
    ),
    'single': jax.jit(lambda k: A.pgd(f, k, x, y, **hyper)),
  }
  key = jax.random.key(4)
  times = side_by_side.alternate({n: (lambda fn=fn: fn(key)) for n, fn in run.items()}, repeats=repeats)
  t_eot, t_one = times[f'eot{samples}']['median_s'], times['single']['median_s']
  emit(
    model=name,
    batch=batch,
    measure=f'pgd{steps}_eot{samples}_vs_{samples}_single',
    cpu=cpu_model(),
    eot_s=round(t_eot, 4),
    single_s=round(t_one, 4),
    **({'eot_microbatch': microbatch} if microbatch else {}),
    ratio=round(t_eot / (samples * t_one), 3),
    target=1.0,
  )


def chunks(name: str, sizes: list[int], batch: int, samples: int, steps: int, repeats: int, side: int = 28):
  """APGD with an S-draw EOT gradient (a rolled loop beyond 20 steps) over the whole batch
  (`microbatch=0`) against chunks of k examples (k · S draws per chunk, one `lax.map`)."""
  model = create_model(name, num_classes=10)
  x = jax.random.uniform(jax.random.key(0), (batch, side, side, 1))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  variables = model.init({'params': jax.random.key(2), STOCHASTIC: jax.random.key(3)}, x[:2])
  f = make_logits_fn(model, variables)
  run = lambda k: A.apgd(
    f, jax.random.key(4), x, y, epsilon=0.1, num_steps=steps, eot_samples=samples, microbatch=k
  )
  times = side_by_side.alternate({k: (lambda k=k: run(k)) for k in sizes}, repeats=repeats)
  emit(
    model=name,
    batch=batch,
    measure=f'apgd{steps}_eot{samples}_chunks',
    cpu=cpu_model(),
    **{f'chunk{k}_s' if k else 'whole_batch_s': round(v['median_s'], 3) for k, v in times.items()},
  )


FLAGS = flags.FlagValues()
flags.DEFINE_string(
  'models', 'small_cnn_lwta,small_cnn_pni', 'stochastic models, comma-separated', flag_values=FLAGS
)
flags.DEFINE_integer(
  'batch', None, 'images per batch (default 48 with --chunks, else 128)', lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_integer('samples', 20, 'EOT draws', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer(
  'steps', None, 'PGD steps (default 25 with --chunks, else 5)', lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_string(
  'chunks', '', 'draws per chunk, comma-separated: time these chunkings instead', flag_values=FLAGS
)
flags.DEFINE_integer(
  'microbatch', 0, 'draws per chunk of the plain run (0: all at once)', lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_integer('side', 28, 'image side', lower_bound=8, flag_values=FLAGS)
flags.DEFINE_integer(
  'repeats', None, 'timed calls per side (default 2 with --chunks, else 5)', lower_bound=1, flag_values=FLAGS
)


def main():
  F = parse_flags(FLAGS)
  models = F.models.split(',')
  if F.chunks:
    sizes = [int(k) for k in F.chunks.split(',')]
    for name in models:
      chunks(name, sizes, F.batch or 48, F.samples, F.steps or 25, F.repeats or 2, F.side)
    return
  for name in models:
    bench(name, F.batch or 128, F.samples, F.steps or 5, F.repeats or 5, F.side, F.microbatch)


if __name__ == '__main__':
  main()
