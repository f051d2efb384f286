"""Does a Table 1 row reproduce on this machine? Rerun it from its record and compare.

  python -m experiments.evaluate --check-reproduces=results/demo/fashion_mnist/rows/pgd_at.json

The row is trained and evaluated again, from the seed and settings its record stores
('invocation'), in a scratch directory (nothing of the recorded run is touched). The verdict:

- 'bit for bit': every number and every per-example outcome is the same (same program, same
  machine kind, same versions: docs/reproducibility.md);
- 'to a tolerance': no accuracy moved by more than `tolerance` (another CPU, another convolution
  path, another jaxlib: float reductions round differently and training drifts a little);
- 'not at all': some accuracy moved by more, or the two records do not hold the same numbers.

Beside the verdict stand the environment fields (versions, XLA flags, device, CPU) that differ
between the record and this process, so a reader can tell a machine from a bug.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import NamedTuple

from jaxrobust.files import write_json_atomic
from jaxrobust.provenance import compare_environments, environment

BIT_FOR_BIT, TO_A_TOLERANCE, NOT_AT_ALL = 'bit for bit', 'to a tolerance', 'not at all'
# Two accuracy points: about twice the spread that `make reproducibility` measures for the demo's
# rows across convolution paths and core counts (docs/reproducibility.md).
DEFAULT_TOLERANCE = 0.02
# Wall times and what only describes the record: never part of the comparison.
NOT_COMPARED = frozenset(
  {'ms_per_image', 'train_time_s', 'seconds', 'eval_s', 'environment', 'invocation', 'per_example'}
)
NOT_COMPARED_PREFIXES = ('ms_per_image', 'train_time', 'retime')


class Reproduction(NamedTuple):
  """The verdict, the largest change of any number, the numbers that changed
  ({name: (recorded, now)}), the per-example outcomes that changed, the environment fields that
  differ ('field: recorded → now'), and the numbers only one of the two records has (either
  way, a row that lacks a number, or holds a string or a boolean in its place, does not
  reproduce; `spread` compares the common ones only)."""

  verdict: str
  largest_difference: float
  changed: dict
  changed_outcomes: int
  environment: list
  unmatched: tuple = ()


def counts(record, prefix: str = '') -> set[str]:
  """The names (as `numbers` flattens them) of a record's integer values: counts of points
  (broken, n, non_finite), never accuracies."""
  out = set()
  items = record.items() if isinstance(record, dict) else enumerate(record)
  for k, v in items:
    name = f'{prefix}[{k}]' if isinstance(k, int) else (f'{prefix}.{k}' if prefix else k)
    if isinstance(v, int) and not isinstance(v, bool):
      out.add(name)
    elif isinstance(v, (dict, list)):
      out |= counts(v, name)
  return out


def numbers(record: dict, prefix: str = '') -> dict[str, float]:
  """Every number of a record, flattened to 'a.b[3]' names, timings and descriptions left out.

  Raises:
    ValueError: for a non-finite number (it is never compared as an accuracy).
  """
  out = {}
  items = record.items() if isinstance(record, dict) else enumerate(record)
  for k, v in items:
    name = f'{prefix}[{k}]' if isinstance(k, int) else (f'{prefix}.{k}' if prefix else k)
    if isinstance(k, str) and (k in NOT_COMPARED or k.startswith(NOT_COMPARED_PREFIXES)):
      continue
    if isinstance(v, bool) or v is None or isinstance(v, str):
      continue
    if isinstance(v, (int, float)):
      if not math.isfinite(v):
        raise ValueError(f'{name} is {v}: a non-finite number is not an accuracy')
      out[name] = float(v)
    elif isinstance(v, (dict, list)):
      out.update(numbers(v, name))
  return out


def compare(
  recorded: dict, rerun: dict, *, tolerance: float = DEFAULT_TOLERANCE, common_only: bool = False
) -> Reproduction:
  """Compares two records of one row (see the module docstring for the verdicts). A number that
  only one of them has (removed, turned into a string or a boolean, or a column that newer code
  adds: rerun the row to record it) is a failure to reproduce, listed as unmatched. With
  `common_only`, numbers that either side lacks are listed and not compared (records of two
  configurations, `spread`)."""
  a, b = numbers(recorded), numbers(rerun)
  env = compare_environments(recorded.get('environment'), rerun.get('environment') or environment())
  common = a.keys() & b.keys()
  unmatched = tuple(sorted(a.keys() ^ b.keys()))
  if not common or (unmatched and not common_only):
    return Reproduction(NOT_AT_ALL, math.inf, {k: (a.get(k), b.get(k)) for k in unmatched}, 0, env, unmatched)
  changed = {k: (a[k], b[k]) for k in sorted(common) if a[k] != b[k]}
  # The tolerance is in accuracy (a fraction of the images): a count that moved (AutoAttack's
  # `broken`) is a change, but not one measured in points.
  integral = counts(recorded)
  largest = max((abs(x - y) for k, (x, y) in changed.items() if k not in integral), default=0.0)
  pa = recorded.get('result', {}).get('per_example', {})
  pb = rerun.get('result', {}).get('per_example', {})
  outcomes = sum(
    sum(x != y for x, y in zip(pa[k], pb[k])) + abs(len(pa[k]) - len(pb[k])) for k in pa.keys() & pb.keys()
  )
  if not changed and not outcomes:
    verdict = BIT_FOR_BIT
  elif largest <= tolerance + 1e-9:  # accuracies are k/n: 0.764 - 0.744 is 0.020000000000000018
    verdict = TO_A_TOLERANCE
  else:
    verdict = NOT_AT_ALL
  return Reproduction(verdict, largest, changed, outcomes, env, unmatched)


def load_record(path: str) -> dict:
  """A Table 1 row record that names how it was made.

  Raises:
    ValueError: naming the file, when it is not JSON or not a row record with an invocation.
  """
  try:
    with open(path) as f:
      record = json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f'{path}: not a readable results file ({e})') from None
  if not isinstance(record, dict) or not {'row', 'dataset', 'result'} <= record.keys():
    raise ValueError(f'{path}: not a Table 1 row record (results/<dataset>/rows/<row>.json)')
  if not isinstance(record.get('invocation'), dict):
    raise ValueError(
      f'{path}: the record does not say how it was made (no "invocation"): it was written before '
      'rows recorded their settings; run the row again (experiments.table1 --force) to get one'
    )
  return record


def check_reproduces(
  path: str,
  *,
  tolerance: float = DEFAULT_TOLERANCE,
  scratch: str | None = None,
  progress: bool = True,
  rerun_out: str | None = None,
) -> Reproduction:
  """Reruns the row recorded in `path` here, in a scratch directory, and compares. With
  `rerun_out`, the rerun's own row record is also kept there, as `<row>.json`.

  Raises:
    ValueError: for a bad file (named) or a tolerance outside [0, 1].
    FileExistsError: `rerun_out` already holds the row's record (checked before the rerun).
  """
  if not 0 <= tolerance <= 1:
    raise ValueError(f'tolerance must be in [0, 1] (a fraction of the test images), got {tolerance}')
  record = load_record(path)
  kept = os.path.join(rerun_out, f"{record['row']}.json") if rerun_out else None
  if kept and os.path.exists(kept):
    raise FileExistsError(f'{kept} exists: rerun_out keeps a new record, it never replaces one')
  from experiments.table1 import run_row

  with tempfile.TemporaryDirectory(dir=scratch) as tmp:
    rerun = run_row(
      record['row'],
      record['dataset'],
      runs_dir=os.path.join(tmp, 'runs'),
      out_dir=os.path.join(tmp, 'results'),
      force=True,
      progress=progress,
      **record['invocation'],
    )
    if kept:
      write_json_atomic(kept, rerun, indent=1)
  return compare(record, rerun, tolerance=tolerance)


def verdict_record(path: str, r: Reproduction, tolerance: float) -> dict:
  """The verdict as a results record (the caller adds this process's environment)."""
  return {
    'record': path,
    'verdict': r.verdict,
    'tolerance': tolerance,
    'largest_difference': r.largest_difference if math.isfinite(r.largest_difference) else None,
    'changed': {k: list(v) for k, v in r.changed.items()},
    'changed_outcomes': r.changed_outcomes,
    'environment_differences': r.environment,
    'unmatched': list(r.unmatched),
  }


def report(path: str, r: Reproduction) -> str:
  """The verdict in words, for the command line."""
  lines = [f'{path}: reproduces {r.verdict}']
  if r.changed:
    lines.append(f'  largest change of an accuracy {100 * r.largest_difference:.2f} points; changed numbers:')
    lines += [f'    {k}: {x} → {y}' for k, (x, y) in sorted(r.changed.items())]
  if r.changed_outcomes:
    lines.append(f'  {r.changed_outcomes} per-example outcomes changed')
  if r.unmatched:
    lines.append(f'  numbers only one record has (missing, or not a number): {", ".join(r.unmatched)}')
  lines.append(
    '  environment differences: ' + ('; '.join(r.environment) if r.environment else 'none (same program)')
  )
  return '\n'.join(lines)
