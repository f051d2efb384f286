"""Atomic writes: the one way the library writes a file that someone may read.

A file is written to a unique temporary name in its directory, flushed to disk, then renamed over
the target, so a reader sees the old file or the new one, never half of one, and two writers
never share a temporary file.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Callable, IO


def _process_umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


# A temporary file is created readable by its owner only; the renamed file gets the permissions
# that `open` would have given it (read once at import: setting the umask is process-wide).
_FILE_MODE = 0o666 & ~_process_umask()


def write_atomic(path: str, content: str | bytes | Callable[[IO[bytes]], Any]) -> str:
  """Writes `content` (text, bytes, or a function that writes to a binary file) to `path`.

  Returns:
    the path.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=directory)
  try:
    with os.fdopen(fd, 'wb') as f:
      if callable(content):
        content(f)
      else:
        f.write(content.encode() if isinstance(content, str) else content)
      f.flush()
      os.fchmod(f.fileno(), _FILE_MODE)
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def write_json_atomic(path: str, obj: Any, **dump_kwargs) -> str:
  """`write_atomic` of `json.dumps(obj)`."""
  return write_atomic(path, json.dumps(obj, **dump_kwargs))
