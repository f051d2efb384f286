"""Results of a long evaluation kept piece by piece on disk, so that an interrupted run resumes.

An adaptive evaluation of a stochastic model runs for hours on a CPU. Each piece (one attack on
one batch, one point of a convergence curve) is written atomically as JSON when it is done and
read back instead of recomputed. A directory serves one set of settings: they are written to
`settings.json` first, and a run with other settings (another model, key, budget or test set)
is refused, naming the directory, rather than mixing results. Each piece is stored sealed with
the digest of the settings it was computed under and a checksum over both (`seal`), so a changed
byte, or a piece of another model left behind when `settings.json` was removed, is never read
as a result: such a piece is set aside (renamed, never deleted), with a warning naming it, and
computed again.

Several processes may share one directory (one per core; or per machine, on a shared file system
that honours `flock`, as NFSv4 does and some network file systems do not): a
piece is computed under an OS file lock (`flock` on `<piece>.lock`, released when its process
dies), so `get_all` lets each process take the pieces nobody else holds and then wait for the
rest, and no piece is computed twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import warnings
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jaxrobust import keys
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


def run_identity(variables, images, labels, key) -> dict[str, Any]:
  """The settings every cache of an attacked test set starts from: the model's variables, the
  images and labels, the root key and the key schedule that derives every other key from it."""
  return dict(
    model=digest(variables),
    data=digest(np.asarray(images), np.asarray(labels)),
    key=digest(key),
    key_schedule=keys.EVAL_SCHEDULE,
  )


FORMAT = 'jaxrobust-piece-1'


def _canonical(obj) -> bytes:
  return json.dumps(obj, sort_keys=True, separators=(',', ':')).encode()


def settings_digest(settings: dict) -> str:
  """SHA-256 of a settings dict in canonical JSON: the identity every piece is stamped with."""
  return hashlib.sha256(_canonical(settings)).hexdigest()


def seal(value: Any, settings_id: str) -> dict:
  """A piece as stored: its value, the digest of the settings it was computed under, and a
  checksum over both, so that a flipped bit or another model's piece is never read as a result."""
  return {
    'format': FORMAT,
    'settings': settings_id,
    'checksum': hashlib.sha256(_canonical([settings_id, value])).hexdigest(),
    'value': value,
  }


def unseal(stored: Any, settings_id: str) -> tuple[Any, str | None]:
  """(value, None) for an intact piece of these settings, else (None, why it is refused)."""
  if (
    not isinstance(stored, dict)
    or stored.get('format') != FORMAT
    or set(stored)
    != {
      'format',
      'settings',
      'checksum',
      'value',
    }
  ):
    return None, 'not a sealed piece (written before pieces carried checksums, or edited)'
  if stored['settings'] != settings_id:
    return None, 'computed under other settings (another model, key, budget or test set)'
  if stored['checksum'] != hashlib.sha256(_canonical([settings_id, stored['value']])).hexdigest():
    return None, 'its checksum does not match its contents (the file was changed)'
  return stored['value'], None


def _read(path: str) -> Any:
  """A JSON file, or a ValueError naming it (bad JSON, bad bytes)."""
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:  # written atomically: only an edit gets here
    raise ValueError(f'{path}: not valid JSON ({e})') from None


def stored_pieces(directory: str) -> dict[str, Any]:
  """{name: value} of every piece in `directory` that is intact and of the settings its
  settings.json records (read only: nothing is set aside or written).

  Raises:
    ValueError: naming the file, for a settings.json that is missing, unreadable or not sealed.
  """
  path = os.path.join(directory, SETTINGS)
  if not os.path.exists(path):
    raise ValueError(f'{path}: missing (not a folder of pieces)')
  settings, why = unseal(_read(path), 'settings')
  if why is not None:
    raise ValueError(f'{path}: {why}')
  settings_id = settings_digest(settings)
  pieces = {}
  for name in sorted(os.listdir(directory)):
    if name.endswith('.json') and name != SETTINGS:
      value, why = unseal(_read(os.path.join(directory, name)), settings_id)
      if why is None:
        pieces[name.removesuffix('.json')] = value
  return pieces


def _set_aside(path: str, why: str) -> None:
  """Moves a refused file to <path>.rejected-<n> (kept, never deleted) and says so."""
  n = 0
  while os.path.exists(f'{path}.rejected-{n}'):
    n += 1
  os.replace(path, f'{path}.rejected-{n}')
  warnings.warn(f'{path}: {why}; set aside as {path}.rejected-{n} and computed again', stacklevel=3)


class PieceCache:
  """`get(name, compute)`: compute() once per name, stored in `directory` (None: no storage).

  Raises:
    ValueError: when `directory` already holds results of different settings.
  """

  def __init__(self, directory: str | None, settings: dict[str, Any]):
    self.directory = directory
    settings = json.loads(json.dumps(settings))  # the form it takes on disk
    self.settings_id = settings_digest(settings)
    if directory is None:
      return
    path = os.path.join(directory, SETTINGS)
    stored = None
    if os.path.exists(path):
      try:
        stored, why = unseal(_read(path), 'settings')
      except ValueError as e:
        why = str(e)
      if why is not None:
        # Every piece carries the digest of its own settings, so a damaged settings.json loses
        # nothing: it is set aside, and each piece is still checked against this run's settings.
        _set_aside(path, why)
        stored = None
    if stored is not None and stored != settings:
      changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
      raise ValueError(
        f'cache directory {directory} holds results of other settings (differing: {changed}); '
        'give another directory or remove it'
      )
    if stored is None:
      write_json_atomic(path, seal(settings, 'settings'))

  def has(self, name: str) -> bool:
    """Whether an intact piece `name` of these settings is stored (never, without a directory)."""
    if self.directory is None:
      return False
    path = os.path.join(self.directory, f'{name}.json')
    return os.path.exists(path) and self._stored(path, set_aside=False) is not _MISSING

  def _stored(self, path: str, *, set_aside: bool = True) -> Any:
    """The value of an intact piece at `path`; _MISSING when there is none or it is refused (then
    set aside, with a warning naming it, so that it is computed again)."""
    if not os.path.exists(path):
      return _MISSING
    try:
      value, why = unseal(_read(path), self.settings_id)
    except ValueError as e:
      value, why = None, str(e)
    if why is None:
      return value
    if set_aside:
      _set_aside(path, why)
    return _MISSING

  def get(self, name: str, compute: Callable[[], Any]) -> Any:
    """The stored piece `name`, or compute() stored; waits while another process computes it."""
    return self._get(name, compute, wait=True)

  def get_all(
    self, computes: Mapping[str, Callable[[], Any]], while_waiting: Callable[[], Any] | None = None
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
    value = self._stored(path, set_aside=False)
    if value is not _MISSING:
      return value
    lock_path = os.path.join(self.directory, f'{name}.lock')
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
      except BlockingIOError:
        return _HELD
      # Checked again, and a refused piece set aside, under the lock: two processes never both
      # move it, and the holder we waited for may have finished it.
      value = self._stored(path)
      if value is _MISSING:
        value = json.loads(json.dumps(compute()))  # the same objects as a later read gives
        write_json_atomic(path, seal(value, self.settings_id))
      # Removed while held, and also when the piece was found stored: this process may have
      # created the file anew just after the holder removed its own. Once the piece is stored,
      # whoever holds any lock file of that name finds it and computes nothing.
      with contextlib.suppress(FileNotFoundError):
        os.remove(lock_path)
      return value
    finally:
      os.close(fd)  # releases the lock


_HELD = object()  # another live process holds the piece's lock
_MISSING = object()  # no intact piece stored
