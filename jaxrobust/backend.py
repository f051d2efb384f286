"""Which code path a backend takes: the one place that asks JAX what it runs on.

Some choices depend on the backend, not on the values: on XLA's CPU backend the library's
convolutions materialise their transposed kernel (`models/conv.py`), per-lane kernels become
im2col products (`models/lane_conv.py`), short attack loops are emitted straight-line and rolled
ones chunk their gradients (`attacks/_loop.py`), and mixed training draws its branch on the host
(`train/loop.py`); on GPU and TPU each takes the plain path. Every such decision asks
`cpu_paths()`, so a test can run the accelerator paths on the CPU with `paths_of('gpu')` and
compare them with the CPU paths (same values within a tolerance, same keys, same shapes).

This module imports nothing of the library, so the attack library can use it and stay a leaf.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax

_FORCED: list[str | None] = [None]
KINDS = ('cpu', 'gpu', 'tpu')


def kind() -> str:
  """The backend whose code paths run: `jax.default_backend()`, unless `paths_of` says otherwise."""
  return _FORCED[0] or jax.default_backend()


def cpu_paths() -> bool:
  """True when the CPU's code paths run."""
  return kind() == 'cpu'


@contextlib.contextmanager
def paths_of(backend: str) -> Iterator[None]:
  """Runs the code paths of `backend` ('cpu', 'gpu' or 'tpu') on whatever device JAX has.

  The choice is made while tracing, so JAX's in-memory caches of traced and compiled functions
  are cleared on entry and on exit: a function compiled under one path is not reused under the
  other. For tests; the values of the paths agree to rounding.

  Raises:
    ValueError: for another backend name.
  """
  if backend not in KINDS:
    raise ValueError(f'paths_of: backend must be one of {KINDS}, got {backend!r}')
  previous = _FORCED[0]
  _FORCED[0] = backend
  jax.clear_caches()
  try:
    yield
  finally:
    _FORCED[0] = previous
    jax.clear_caches()
