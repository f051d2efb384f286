"""A run's work directory: one writer at a time (a lock), the config it was trained with, and
metrics that never repeat a step after a resume.

Layout: `config.json` (the run's config; an earlier different one is kept as `config.json.<n>`),
`metrics.jsonl`, `checkpoints/`, and `.lock` while a run holds it.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import warnings

from jaxrobust.files import write_atomic
from jaxrobust.train.config import training_differences


class WorkdirLockedError(RuntimeError):
  """Another live process holds the work directory."""


class ConfigMismatchError(ValueError):
  """Resuming with a config that trains something else than the stored one."""


class WorkdirLock:
  """An exclusive lock on a work directory, held for the life of a run.

  The lock is an OS file lock (`flock`) on `<workdir>/.lock`, so it is released when its process
  dies, even by kill -9; the file records the holder's pid and host. A second run is refused with
  an error naming them. A lock file left by a dead process is taken over with a warning.
  """

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, '.lock')
    self._fd: int | None = None

  def acquire(self) -> 'WorkdirLock':
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      holder = _read_holder(fd)
      os.close(fd)
      raise WorkdirLockedError(
        f'work directory {os.path.dirname(self.path)} is in use by pid {holder.get("pid", "?")} on '
        f'host {holder.get("host", "?")}; wait for that run to end or use another workdir'
      ) from None
    previous = _read_holder(fd)
    if previous:
      warnings.warn(
        f'taking over the stale lock of {os.path.dirname(self.path)} left by pid '
        f'{previous.get("pid")} on host {previous.get("host")}, which no longer runs',
        stacklevel=2,
      )
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname()}).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # a clean release leaves no holder to report as stale
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def _read_holder(fd) -> dict:
  try:
    text = os.pread(fd, 4096, 0).decode()
    return json.loads(text) if text.strip() else {}
  except (OSError, ValueError):
    return {}


def claim_workdir(
  workdir: str, config, *, allow_config_change: bool = False, writer: bool = True
) -> WorkdirLock | None:
  """Takes the work directory for a run of `config`: the lock, then the stored-config check;
  nothing is written when the lock or the check refuses. The run records its config
  (`record_config`) once its own checks passed too, so a refused resume leaves config.json as it was.

  Args:
    workdir: the run's directory (created).
    config: the run's config.
    allow_config_change: resume even when the stored config trains something else.
    writer: this process writes (process 0 of a multi-host run); others only check.

  Returns:
    the held lock (release it when the run ends), or None for a non-writer.
  """
  lock = WorkdirLock(workdir).acquire() if writer else None
  try:
    check_resume_config(workdir, config, allow_config_change=allow_config_change)
  except BaseException:
    if lock is not None:
      lock.release()
    raise
  return lock


def check_resume_config(workdir: str, config, *, allow_config_change: bool = False) -> None:
  """Before anything is touched: refuses a config that trains something else than the stored one.

  Raises:
    ConfigMismatchError: listing the differing fields, unless `allow_config_change`.
  """
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    return
  with open(path) as f:
    stored = json.load(f)
  diffs = training_differences(stored, config)
  if diffs and not allow_config_change:
    raise ConfigMismatchError(
      f'{path} was trained with another config; resuming would mix two runs. Differences:\n  '
      + '\n  '.join(diffs)
      + '\nUse a new workdir, or pass allow_config_change=True '
      '(--allow_config_change) to continue anyway.'
    )


def record_config(workdir: str, text: str) -> None:
  """Writes config.json; a different config already there is kept as config.json.<n>, so that a
  resumed run with changed settings never erases the record of the earlier ones."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return
    n = 1
    while os.path.exists(f'{path}.{n}'):
      n += 1
    os.replace(path, f'{path}.{n}')
  write_atomic(path, text)


def trim_metrics(path: str, last_step: int) -> None:
  """Drops the rows logged after `last_step` (the resumed step): a resumed run logs them again."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  keep = [line for line in lines if _logged_step(line) <= last_step]
  if len(keep) != len(lines):
    write_atomic(path, ''.join(keep))


def _logged_step(line: str) -> float:
  """A row's step; a torn row (the process died while writing it) counts as after every step."""
  try:
    return json.loads(line).get('step', 0)
  except ValueError:
    return float('inf')


def has_final_row(path: str, step: int) -> bool:
  """Whether metrics.jsonl at `path` already holds the final test row of `step`."""
  if not os.path.exists(path):
    return False
  with open(path) as f:
    rows = [_parsed(line) for line in f if line.strip()]
  return any(r.get('step') == step and 'test_accuracy' in r for r in rows)


def _parsed(line: str) -> dict:
  """A metrics row, or {} for a line that a crash left half written."""
  try:
    return json.loads(line)
  except ValueError:
    return {}


def last_logged_step(path: str) -> float:
  """The largest step that metrics.jsonl at `path` records (0 when there is none)."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    steps = [_logged_step(line) for line in f if line.strip()]
  return max([s for s in steps if s != float('inf')], default=0)
