"""Random variates for per-unit stochastic layers: open-interval uniforms, Gumbel and logistic noise.

Stochastic LWTA draws fresh noise for every unit at every forward pass, so on a CPU the random
bits can cost more than the network. `jax.random.uniform` (threefry, partitionable mode) spends one
20-round Threefry-2x32 hash per 32-bit word and discards half of its 64 output bits. Here each hash
of a counter pair (index along the batch axis, index within the example) gives two words, both
used: half the hashing, the same hash and key schedule as `jax.random`, counters built from iotas
so that the draw shards over the batch axis like any elementwise op. Same key ⇒ same bits on every
backend.

References:
  Salmon et al. 2011, "Parallel Random Numbers: As Easy as 1, 2, 3" (Threefry), SC'11
  Gumbel 1954; Maddison et al. 2017, "The Concrete Distribution", arXiv:1611.00712
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.extend.random import threefry2x32_p

_MANTISSA_BITS = 23


def _counters(shape):
  """Two uint32 counter arrays of `shape`: the index on axis 0 and the linear index over the rest."""
  per_example = math.prod(shape[1:])
  if per_example >= 2**32 or shape[0] >= 2**32:
    raise ValueError(f'uniform_open: shape {shape} has too many elements per example for 32-bit counters')
  first = jax.lax.broadcasted_iota(jnp.uint32, shape, 0)
  rest = jax.lax.broadcasted_iota(jnp.uint32, (shape[0], per_example), 1).reshape(shape)
  return first, rest


def _to_open_unit(bits):
  """(m + ½)·2⁻²³ with m the top 23 bits: exact in float32, strictly inside (0, 1)."""
  return ((bits >> (32 - _MANTISSA_BITS)).astype(jnp.float32) + 0.5) * (2.0**-_MANTISSA_BITS)


def _draw(key, shape, transform) -> jax.Array:
  """transform(U) for open uniforms U of `shape`, two per hash. The transform is applied to each
  word before the halves are joined: the join then materialises the noise once, where a noise
  expression left to fuse into its consumers is recomputed (hash included) in each of them."""
  shape = tuple(shape)
  if not shape:
    return _draw(key, (1,), transform)[0]
  half = shape[:-1] + ((shape[-1] + 1) // 2,)
  k = jax.random.bits(key, (2,), jnp.uint32)
  y0, y1 = threefry2x32_p.bind(k[0], k[1], *_counters(half))
  both = jnp.concatenate([transform(_to_open_unit(y0)), transform(_to_open_unit(y1))], -1)
  return both[..., : shape[-1]] if both.shape[-1] != shape[-1] else both


def uniform_open(key, shape) -> jax.Array:
  """U(0, 1) in float32, never exactly 0 or 1 (so log u and log(1 − u) are finite).

  Args:
    key: a JAX PRNG key (any implementation; two words are drawn from it for the hash key).
    shape: output shape.
  Returns:
    float32 array of `shape`, values in [2⁻²⁴, 1 − 2⁻²⁴] on a grid of 2⁻²³.
  """
  return _draw(key, shape, lambda u: u)


def gumbel_noise(key, shape, dtype=jnp.float32) -> jax.Array:
  """Standard Gumbel variates G = −log(−log U); bounded (|G| < 17) because U is open.

  Args:
    key: PRNG key.  shape: output shape.  dtype: output dtype (computed in float32).
  Returns:
    array of `shape` and `dtype`.
  """
  return _draw(key, shape, lambda u: (-jnp.log(-jnp.log(u))).astype(dtype))


def logistic_noise(key, shape, dtype=jnp.float32) -> jax.Array:
  """Standard logistic variates L = log U − log(1 − U), |L| ≤ 16.7: the law of G₁ − G₂ for
  independent Gumbels, hence of a two-way Gumbel-softmax's logit difference.

  Args:
    key: PRNG key.  shape: output shape.  dtype: output dtype (computed in float32).
  Returns:
    array of `shape` and `dtype`.
  """
  return _draw(key, shape, lambda u: (jnp.log(u) - jnp.log(1.0 - u)).astype(dtype))
