"""Shared benchmark helpers: JSON lines on stdout and the command line. Timing has one home,
`benchmarks/side_by_side.py` (alternating calls, medians)."""

import json
import os
import sys

import jax

from jaxrobust.provenance import environment


_ENVIRONMENT_SHOWN = []


def emit(**row):
  """Prints a row as a JSON line; the first row of a process is preceded by the environment
  (`jaxrobust.provenance.environment`: versions, XLA flags, machine, commit)."""
  if not _ENVIRONMENT_SHOWN:
    _ENVIRONMENT_SHOWN.append(True)
    print(json.dumps({'environment': environment()}), flush=True)
  row.setdefault('xla_flags', os.environ.get('XLA_FLAGS', ''))
  row.setdefault('backend', jax.default_backend())
  print(json.dumps(row), flush=True)


def arg(name, default):
  """--name=value from argv (benchmarks take few options), converted to the default's type.

  Raises:
    SystemExit: naming the option, when its value does not convert.
  """
  for a in sys.argv[1:]:
    if a.startswith(f'--{name}='):
      value = a.split('=', 1)[1]
      try:
        return type(default)(value)
      except ValueError:
        raise SystemExit(f'--{name}={value}: expected {type(default).__name__}') from None
  return default


def check_args(options) -> None:
  """Refuses any command-line word that is not `--name=value` for a name in `options`, so that a
  mistyped option (`--num_tests=100`) stops the run instead of being ignored for hours.

  Raises:
    SystemExit: naming the words that were not understood and the options the script takes.
  """
  bad = [
    a for a in sys.argv[1:] if not (a.startswith('--') and '=' in a and a[2:].split('=', 1)[0] in options)
  ]
  if bad:
    raise SystemExit(
      f'not understood: {" ".join(bad)}; options: {", ".join(f"--{o}=" for o in sorted(options))}'
    )
