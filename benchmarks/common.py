"""Shared benchmark helpers: timing medians after compile, JSON lines on stdout."""

import json
import os
import statistics
import sys
import time

import jax


def timeit(fn, *args, repeats: int = 3):
  """(compile+first-run seconds, median steady seconds) of fn(*args), blocking on the result."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return first, statistics.median(ts)


def emit(**row):
  row.setdefault('xla_flags', os.environ.get('XLA_FLAGS', ''))
  row.setdefault('backend', jax.default_backend())
  print(json.dumps(row), flush=True)


def arg(name, default):
  """--name=value from argv (benchmarks take few options)."""
  for a in sys.argv[1:]:
    if a.startswith(f'--{name}='):
      return type(default)(a.split('=', 1)[1])
  return default
