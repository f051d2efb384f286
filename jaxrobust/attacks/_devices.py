"""An attack over several devices: the batch split by `shard_map` over a 1-D data mesh."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


SHARD_AXIS = 'data'


@functools.lru_cache(maxsize=64)
def _sharded_program(attack, devices: tuple):
  from jax.sharding import Mesh, PartitionSpec as P

  mesh = Mesh(np.array(devices), (SHARD_AXIS,))
  d = P(SHARD_AXIS)
  mapped = jax.shard_map(
    lambda f, k, x, y: attack(f, k, x, y), mesh=mesh, in_specs=(P(), d, d, d), out_specs=d, check_vma=False
  )
  return jax.jit(mapped)


def attack_over_devices(attack, logits_fn, keys_, x, y, devices=None):
  """`attack(logits_fn, keys_, x, y)` with the batch split over `devices` (default: all), by
  `shard_map` over a 1-D 'data' mesh; the batch is padded to a multiple of the device count with
  copies of its last example, whose results are dropped.

  With one key per example (`keys_` of shape (B,)) and a deterministic model, every example's
  result is the one it gets on a single device: each example's start comes from its own key, and
  its computation does not depend on the other examples (the attacks' contract, tested). A
  randomised model draws its noise from each shard's first key, so shards draw differently.
  """
  devices = tuple(jax.devices() if devices is None else devices)
  if len(devices) == 1:
    return attack(logits_fn, keys_, x, y)
  n, k = x.shape[0], len(devices)
  pad = (-n) % k
  if pad:
    rep = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])  # noqa: E731
    keys_, x, y = rep(keys_), rep(x), rep(y)
  return _sharded_program(attack, devices)(logits_fn, keys_, x, y)[:n]


def keep_sharding(out, like):
  """`out` placed with `like`'s sharding when `like` is an array spread over several devices.

  Attacks that stage through the host (Square's per-stage bookkeeping, AutoAttack's per-attack
  subsets) would otherwise return arrays on one device: the caller gets back the layout it gave.
  A traced `like` (inside `jit`) and single-device arrays are left to JAX.
  """
  if not isinstance(like, jax.Array) or isinstance(like, jax.core.Tracer):
    return out
  sharding = like.sharding
  if len(sharding.device_set) <= 1 or getattr(out, 'sharding', None) == sharding:
    return out
  return jax.device_put(out, sharding)
