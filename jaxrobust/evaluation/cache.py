"""Results of a long evaluation kept piece by piece on disk, so that an interrupted run resumes.

An adaptive evaluation of a stochastic model runs for hours on a CPU. Each piece (one attack on
one batch, one point of a convergence curve) is written atomically as JSON when it is done and
read back instead of recomputed. A directory serves one set of settings: they are written to
`settings.json` first, and a run with other settings (another model, key, budget or test set)
is refused, naming the directory, rather than mixing results.

Several processes may share one directory (one per core; or per machine, on a shared file system
that honours `flock`, as NFSv4 does and some network file systems do not): a
piece is computed under an OS file lock (`flock` on `<piece>.lock`, released when its process
dies), so `get_all` lets each process take the pieces nobody else holds and then wait for the
rest, and no piece is computed twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from typing import Any, Callable

import jax
import numpy as np

from jaxrobust.files import write_json_atomic

SETTINGS = 'settings.json'


def digest(*trees) -> str:
  """SHA-256 of the arrays of pytrees (values, shapes and dtypes): the identity of a model's
  variables or of a test set."""
  h = hashlib.sha256()
  for tree in trees:
    for leaf in jax.tree_util.tree_leaves(tree):
      if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
      a = np.asarray(leaf)
      h.update(f'{a.dtype}{a.shape}'.encode())
      h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def _read(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:  # written atomically, so only a hand edit gets here
    raise ValueError(f'{path}: not valid JSON ({e}); remove the file to recompute it') from e


class PieceCache:
  """`get(name, compute)`: compute() once per name, stored in `directory` (None: no storage).

  Raises:
    ValueError: when `directory` already holds results of different settings.
  """

  def __init__(self, directory: str | None, settings: dict[str, Any]):
    self.directory = directory
    if directory is None:
      return
    settings = json.loads(json.dumps(settings))  # the form it takes on disk
    path = os.path.join(directory, SETTINGS)
    if os.path.exists(path):
      stored = _read(path)
      if stored != settings:
        changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
        raise ValueError(
          f'cache directory {directory} holds results of other settings (differing: {changed}); '
          'give another directory or remove it'
        )
    else:
      write_json_atomic(path, settings)

  def has(self, name: str) -> bool:
    """Whether the piece `name` is stored (never, without a directory)."""
    return self.directory is not None and os.path.exists(os.path.join(self.directory, f'{name}.json'))

  def get(self, name: str, compute: Callable[[], Any]) -> Any:
    """The stored piece `name`, or compute() stored; waits while another process computes it."""
    return self._get(name, compute, wait=True)

  def get_all(
    self, computes: dict[str, Callable[[], Any]], while_waiting: Callable[[], Any] | None = None
  ) -> dict[str, Any]:
    """{name: piece} for every name of `computes`: first the pieces that are stored or that no
    other process is computing, then, waiting for it, each piece another process held.

    Args:
      computes: {name: compute()}.
      while_waiting: called once, before waiting, when another process holds some piece: other
        work for this process (a second process would otherwise sit idle for as long as the
        other's last piece takes, an hour for one EOT-Square batch on a CPU).
    """
    out = {name: self._get(name, compute, wait=False) for name, compute in computes.items()}
    held = [n for n, v in out.items() if v is _HELD]
    if held and while_waiting is not None:
      while_waiting()
    for name in held:
      out[name] = self._get(name, computes[name], wait=True)
    return out

  def _get(self, name: str, compute: Callable[[], Any], *, wait: bool) -> Any:
    if self.directory is None:
      return json.loads(json.dumps(compute()))
    path = os.path.join(self.directory, f'{name}.json')
    if os.path.exists(path):
      return _read(path)
    lock_path = os.path.join(self.directory, f'{name}.lock')
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
      except BlockingIOError:
        return _HELD
      if os.path.exists(path):  # the holder we waited for finished it
        return _read(path)
      value = json.loads(json.dumps(compute()))  # the same objects as a later read gives
      write_json_atomic(path, value)
      # Removed while held: a process waiting on this file finds the piece stored when it wakes.
      os.remove(lock_path)
      return value
    finally:
      os.close(fd)  # releases the lock


_HELD = object()  # another live process holds the piece's lock
