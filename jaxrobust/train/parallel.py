"""Run a per-device step on one device, under `jax.shard_map` (default) or under `jax.pmap`.

Multi-host: every process calls the same code; `jax.distributed.initialize` (see `distributed.py`)
must have run first. Each process feeds its own slice of the global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = 'data'
PARALLEL_MODES = ('none', 'shard_map', 'pmap')


def data_mesh() -> Mesh:
  """A 1-D mesh named 'data' over all devices (of all processes). Auto axis types, so
  unsharded inputs are accepted (docs/design.md, data parallelism)."""
  return Mesh(np.array(jax.devices()), (AXIS,))


@dataclasses.dataclass
class ParallelStep:
  """A compiled step with the data movement its mode needs.

  Attributes:
    mode: 'none', 'shard_map' or 'pmap'.
    step: (placed_state, placed_batch, key) -> (placed_state, metrics).
    put_state / put_batch: host -> device layout of the mode.
    get_state: device layout -> a plain single-copy state (for checkpoints and evaluation).
  """

  mode: str
  step: Callable
  put_state: Callable
  put_batch: Callable
  get_state: Callable
  num_devices: int


def make_parallel_step(
  build_step: Callable[[str | None], Callable], mode: str = 'shard_map', *, donate: bool = True
) -> ParallelStep:
  """Wraps `build_step(axis_name)` for the chosen mode.

  Args:
    build_step: returns the per-device `train_step(state, batch, key)` for an axis name.
    mode: 'none' (plain jit, one device), 'shard_map' (1-D 'data' mesh) or 'pmap'.
    donate: donate the input state's buffers to the output.

  Raises:
    ValueError: for an unknown mode.
  """
  if mode not in PARALLEL_MODES:
    raise ValueError(f'unknown parallel mode {mode!r}; use one of {PARALLEL_MODES}')
  donate_argnums = (0,) if donate else ()
  if mode == 'none':
    step = jax.jit(build_step(None), donate_argnums=donate_argnums)
    ident = lambda t: t
    return ParallelStep(mode, step, ident, ident, ident, 1)

  if mode == 'shard_map':
    mesh = data_mesh()
    replicated = NamedSharding(mesh, P())
    sharded = NamedSharding(mesh, P(AXIS))
    # check_vma=False: gradients of replicated inputs are then per-device (not psum'd), so the
    # step's explicit pmean is right (docs/design.md, data parallelism).
    mapped = jax.shard_map(
      build_step(AXIS), mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()), check_vma=False
    )
    step = jax.jit(mapped, donate_argnums=donate_argnums)

    def put_batch(batch):
      if jax.process_count() == 1:
        return jax.device_put(batch, sharded)
      return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharded, a), batch)

    def put_state(state):
      return jax.device_put(state, replicated)

    def get_state(state):
      return jax.tree.map(
        lambda a: np.asarray(a.addressable_data(0)) if isinstance(a, jax.Array) else a, state
      )

    return ParallelStep(mode, step, put_state, put_batch, get_state, mesh.size)

  # pmap: leading axis = local devices; state replicated per device.
  n_local = jax.local_device_count()
  step = jax.pmap(build_step(AXIS), axis_name=AXIS, in_axes=(0, 0, None), donate_argnums=donate_argnums)

  def put_local_batch(batch):
    return jax.tree.map(lambda a: a.reshape((n_local, a.shape[0] // n_local) + a.shape[1:]), batch)

  def put_replicas(state):
    return jax.tree.map(lambda a: jax.numpy.broadcast_to(a, (n_local,) + jax.numpy.shape(a)), state)

  def first_replica(state):
    return jax.tree.map(lambda a: np.asarray(a[0]) if isinstance(a, jax.Array) else a, state)

  return ParallelStep(mode, step, put_replicas, put_local_batch, first_replica, jax.device_count())
