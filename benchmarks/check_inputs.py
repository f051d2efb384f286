"""What the input checks cost an attack call made outside `jit`: `check_inputs` alone against
PGD-10 on the small CNN (batch 128), timed side by side (benchmarks/side_by_side.py).

  python -m benchmarks.check_inputs [--batch=128] [--repeats=20]

The value checks reduce on the device and bring back eight numbers, so on an accelerator they
cost one small transfer, not a copy of the batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from absl import flags

from benchmarks.common import emit, parse_flags
from benchmarks.side_by_side import alternate
from jaxrobust import attacks as A
from jaxrobust.attacks._checks import check_inputs
from jaxrobust.machine import cpu_model
from jaxrobust.models import create_model, make_logits_fn


FLAGS = flags.FlagValues()
flags.DEFINE_integer('batch', 128, 'images per batch', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 20, 'timed calls per side', lower_bound=1, flag_values=FLAGS)


def main():
  F = parse_flags(FLAGS)
  b, repeats = F.batch, F.repeats
  model = create_model('small_cnn')
  x = jax.random.uniform(jax.random.key(0), (b, 28, 28, 1))
  y = jnp.zeros(b, jnp.int32)
  f = make_logits_fn(model, model.init(jax.random.key(1), x))
  attack = functools.partial(A.pgd, epsilon=0.1, num_steps=10)
  key = jax.random.key(2)
  timed = alternate(
    {
      'pgd10_call': lambda: attack(f, key, x, y),
      'check_inputs': lambda: check_inputs(f, x, y, name='pgd', key=key, values={'epsilon': 0.1}),
    },
    repeats=repeats,
  )
  pgd, chk = timed['pgd10_call']['median_s'], timed['check_inputs']['median_s']
  emit(
    bench='check_inputs_overhead',
    model='small_cnn',
    batch=b,
    cpu=cpu_model(),
    pgd10_s=pgd,
    check_s=chk,
    share_of_call=chk / pgd,
  )


if __name__ == '__main__':
  main()
