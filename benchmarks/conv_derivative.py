"""PGD-10 in a rolled loop on the small CNN with three derivatives of its convolutions, side by
side (benchmarks/side_by_side.py): `models.Conv` as it is (a custom JVP whose tangent map is the
transpose of `input_gradient`, so forward mode works), a custom VJP (reverse mode
only), and flax's plain `nn.Conv` (JAX's own derivative, whose input gradient XLA's CPU backend
runs as a naive loop nest inside loops).

  python -m benchmarks.conv_derivative [--batch=128] [--repeats=7]
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from absl import flags

from benchmarks.common import emit, parse_flags
from benchmarks.side_by_side import alternate
from jaxrobust import attacks as A
from jaxrobust.machine import cpu_model
from jaxrobust.models import conv as C
from jaxrobust.models.small_cnn import SmallCNN


@functools.cache
def _custom_vjp_conv(strides, padding):
  @jax.custom_vjp
  def conv(x, w):
    return C.plain_conv(x, w, strides, padding)

  conv.defvjp(
    lambda x, w: (C.plain_conv(x, w, strides, padding), (x, w)),
    lambda res, g: C.conv_vjp(*res, g, strides, padding),
  )
  return conv


def _custom_vjp_general(lhs, rhs, window_strides, padding, **_):
  return _custom_vjp_conv(*C.normalize_geometry(window_strides, padding))(lhs, rhs)


VARIANTS = {
  'custom_jvp (models.Conv)': C.Conv,
  'custom_vjp (reverse mode only)': functools.partial(nn.Conv, conv_general_dilated=_custom_vjp_general),
  'plain nn.Conv': nn.Conv,
}


FLAGS = flags.FlagValues()
flags.DEFINE_integer('batch', 128, 'images per batch', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 7, 'timed calls per side', lower_bound=1, flag_values=FLAGS)


def main():
  F = parse_flags(FLAGS)
  b, repeats = F.batch, F.repeats
  x = jax.random.uniform(jax.random.key(0), (b, 28, 28, 1))
  y = jnp.zeros(b, jnp.int32)
  calls, outs = {}, {}
  for name, conv in VARIANTS.items():
    model = SmallCNN(conv=conv)
    f = jax.tree_util.Partial(lambda v, z, k, m=model: m.apply(v, z), model.init(jax.random.key(1), x))
    fn = jax.jit(lambda k, z, t, f=f: A.pgd(f, k, z, t, epsilon=0.1, num_steps=10, unroll=1))
    calls[name] = functools.partial(fn, jax.random.key(2), x, y)
    outs[name] = np.asarray(calls[name]())
  timed = alternate(calls, repeats=repeats)
  base = timed['plain nn.Conv']['median_s']
  for name in VARIANTS:
    emit(
      bench='conv_derivative_pgd10_rolled',
      variant=name,
      batch=b,
      cpu=cpu_model(),
      median_s=timed[name]['median_s'],
      speedup_over_plain=base / timed[name]['median_s'],
      same_result_share=float(np.mean(np.abs(outs[name] - outs['custom_jvp (models.Conv)']) < 1e-5)),
    )


if __name__ == '__main__':
  main()
