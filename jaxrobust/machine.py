"""The machine a measurement was taken on, named in every timing the project writes."""

from __future__ import annotations

import os
import platform


def usable_cores() -> int:
  """The cores this process may run on (its affinity; a `taskset -c 0` job gets one): the thread
  count to give torch, whose default counts the machine's cores and oversubscribes a pinned job."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), with the cores this process may run on: a job pinned
  to one core (`taskset -c 0`) says '1 of 2 cores', so its times are never read as the machine's."""
  name = platform.processor() or 'unknown'
  try:
    with open('/proc/cpuinfo') as f:
      name = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  total = os.cpu_count()
  usable = usable_cores()
  return f'{name} ({total} cores)' if usable == total else f'{name} ({usable} of {total} cores)'
