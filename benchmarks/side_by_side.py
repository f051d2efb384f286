"""Timing two libraries in one run on one machine: alternating calls, medians, the CPU named.

Every speed-up the project prints comes from here: each contender is called once to compile and
warm up, then the contenders take turns (the starting one rotates), `repeats` times each, and the
median of each is kept. A ratio of figures measured at different times, or copied from another
machine, is never printed.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax


def torch_available() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


def _sync(result: Any) -> Any:
  """Waits for JAX's asynchronous dispatch; torch on the CPU has returned when the call returns."""
  return jax.block_until_ready(jax.tree.map(lambda a: a if isinstance(a, jax.Array) else None, result))


def alternate(contenders: dict[str, Callable[[], Any]], repeats: int = 3) -> dict[str, dict]:
  """{name: {'first_s', 'median_s', 'runs_s'}} of each zero-argument callable, timed in turns.

  Args:
    contenders: name -> callable; the first call of each (compilation, warm-up) is timed apart.
    repeats: timed calls per contender (at least 3 for a median worth the name).
  """
  out = {}
  for name, fn in contenders.items():
    t0 = time.perf_counter()
    _sync(fn())
    out[name] = {'first_s': time.perf_counter() - t0, 'runs_s': []}
  names = list(contenders)
  for r in range(repeats):
    for name in names[r % len(names) :] + names[: r % len(names)]:
      t0 = time.perf_counter()
      _sync(contenders[name]())
      out[name]['runs_s'].append(time.perf_counter() - t0)
  for v in out.values():
    v['median_s'] = statistics.median(v['runs_s'])
  return out
