"""Multi-host start-up: `jax.distributed.initialize` from the config or the environment."""

from __future__ import annotations

import os

import jax

ENV_COORDINATOR = 'JAXROBUST_COORDINATOR'  # host:port of process 0
ENV_NUM_PROCESSES = 'JAXROBUST_NUM_PROCESSES'
ENV_PROCESS_ID = 'JAXROBUST_PROCESS_ID'


def maybe_initialize(distributed=None) -> bool:
  """Calls `jax.distributed.initialize` when a coordinator is given, else does nothing.

  Args:
    distributed: `config.distributed` (coordinator, num_processes, process_id, auto), or None.
      Empty fields fall back to $JAXROBUST_COORDINATOR, $JAXROBUST_NUM_PROCESSES and
      $JAXROBUST_PROCESS_ID. On clusters JAX detects itself (SLURM, TPU pods), set auto=True to
      call `initialize()` without arguments.

  Returns:
    True when JAX was initialised for several processes.
  """
  coordinator, num_processes, process_id, auto = '', 0, -1, False
  if distributed is not None:
    coordinator, num_processes = distributed.coordinator, distributed.num_processes
    process_id, auto = distributed.process_id, distributed.auto
  if auto:
    jax.distributed.initialize()
    return True
  coordinator = coordinator or os.environ.get(ENV_COORDINATOR, '')
  if not coordinator:
    return False
  n = num_processes or int(os.environ.get(ENV_NUM_PROCESSES, '1'))
  pid = process_id if process_id >= 0 else int(os.environ.get(ENV_PROCESS_ID, '0'))
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=n, process_id=pid)
  return True
