"""Multi-host start-up: `jax.distributed.initialize` from the config or the environment."""
from __future__ import annotations

import os

import jax

ENV_COORDINATOR = 'JAXROBUST_COORDINATOR'      # host:port of process 0
ENV_NUM_PROCESSES = 'JAXROBUST_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAXROBUST_PROCESS_ID'


def maybe_initialize(config=None) -> bool:
  """Calls `jax.distributed.initialize` when a coordinator is given, else does nothing.

  The coordinator, process count and id come from config.distributed.{coordinator,
  num_processes, process_id}, or from $JAXROBUST_COORDINATOR, $JAXROBUST_NUM_PROCESSES and
  $JAXROBUST_PROCESS_ID. On clusters JAX detects itself (SLURM, TPU pods), set
  config.distributed.auto=True to call `initialize()` without arguments.

  Returns:
    True when JAX was initialised for several processes.
  """
  d = dict(config.get('distributed', {})) if config is not None else {}
  if d.get('auto'):
    jax.distributed.initialize()
    return True
  coord = d.get('coordinator') or os.environ.get(ENV_COORDINATOR)
  if not coord:
    return False
  n = int(d.get('num_processes') or os.environ.get(ENV_NUM_PROCESSES, '1'))
  pid = int(d.get('process_id', -1) if d.get('process_id', -1) >= 0 else os.environ.get(ENV_PROCESS_ID, '0'))
  jax.distributed.initialize(coordinator_address=coord, num_processes=n, process_id=pid)
  return True
