"""Shared benchmark helpers: JSON lines on stdout and the command line (absl flags). Timing has one home,
`benchmarks/side_by_side.py` (alternating calls, medians)."""

import json
import os
import sys
from collections.abc import Sequence

import jax
from absl import flags

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


def parse_flags(flag_values: flags.FlagValues, argv: Sequence[str] | None = None) -> flags.FlagValues:
  """Parses a benchmark's absl flags from `argv` (default `sys.argv`), from their defaults each
  time. Each benchmark keeps its flags on a `FlagValues` of its own, so that several benchmarks
  share one process (the tests) without their names colliding; `--help` lists them.

  Raises:
    SystemExit: naming a mistyped flag (`--num_tests=100`), a value of the wrong type or a stray
      word, so that the run stops at once instead of ignoring it for hours.
  """
  argv = list(sys.argv if argv is None else argv)
  if any(a in ('-h', '--help', '--helpshort', '--helpfull') for a in argv[1:]):
    print(flag_values.main_module_help() or flag_values.get_help())
    raise SystemExit(0)
  flag_values.unparse_flags()
  options = ', '.join(f'--{name}=' for name in sorted(flag_values))
  try:
    rest = flag_values(argv)
  except flags.Error as e:
    raise SystemExit(f'{e}; options: {options}') from None
  if len(rest) > 1:
    raise SystemExit(f'not understood: {" ".join(rest[1:])}; options: {options}')
  return flag_values
