"""What produced a result: package versions, XLA flags, the machine and the git commit.

Every results file the project writes carries `environment()` under the key 'environment', so a
reader who gets other numbers can tell a bug from another machine or another jaxlib
(docs/reproducibility.md says what reproduces where). `compare_environments` names the fields
in which two records differ.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess

from jaxrobust.machine import cpu_model

PACKAGES = ('jax', 'jaxlib', 'flax', 'optax', 'numpy')
# The fields that can change a result's bits (the rest describe the record itself).
NUMERIC_FIELDS = ('versions', 'xla_flags', 'backend', 'device_kind', 'device_count', 'cpu')


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


@functools.cache
def git_commit() -> dict:
  """{'commit': HEAD's hash or None outside a checkout, 'dirty': whether tracked files differ}."""
  here = os.path.dirname(os.path.abspath(__file__))

  def git(*args):
    return subprocess.run(
      ['git', '-C', here, *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()

  try:
    commit = git('rev-parse', 'HEAD')
    dirty = bool(git('status', '--porcelain', '--untracked-files=no'))
  except (OSError, subprocess.SubprocessError):
    return {'commit': None, 'dirty': None}
  return {'commit': commit, 'dirty': dirty}


def environment() -> dict:
  """The record of what is running now: versions, XLA flags, backend and device, CPU, commit.

  The commit is read once per process: a result names the code the process started with.
  """
  import jax

  device = jax.devices()[0]
  return {
    'versions': {p: _version(p) for p in PACKAGES},
    'python': platform.python_version(),
    'xla_flags': os.environ.get('XLA_FLAGS', ''),
    'backend': jax.default_backend(),
    'device_kind': device.device_kind,
    'device_count': jax.device_count(),
    'cpu': cpu_model(),
    **git_commit(),
  }


def with_environment(record: dict) -> dict:
  """`record` with 'environment' added (a new dict; the caller's is left as it is)."""
  return {**record, 'environment': environment()}


def compare_environments(recorded: dict | None, current: dict) -> list[str]:
  """The fields that can change a result's bits and differ between two records, as
  'field: recorded → current' lines (empty when the two would run the same program).

  A record without an environment differs in every field.
  """
  if not recorded:
    return ['environment: not recorded → ' + ', '.join(NUMERIC_FIELDS)]
  out = []
  for field in NUMERIC_FIELDS:
    a, b = recorded.get(field), current.get(field)
    if field == 'versions':
      out += [
        f'{p}: {(a or {}).get(p)} → {(b or {}).get(p)}'
        for p in PACKAGES
        if (a or {}).get(p) != (b or {}).get(p)
      ]
    elif a != b:
      out.append(f'{field}: {a!r} → {b!r}')
  return out


def write_result_json(path: str, record: dict, **dump_kwargs) -> str:
  """Writes a results record atomically, with the environment that produced it; returns path."""
  from jaxrobust.files import write_json_atomic

  return write_json_atomic(path, with_environment(record), **dump_kwargs)
