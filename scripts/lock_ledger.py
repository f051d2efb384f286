"""Writes results/LOCK_LEDGER.md: which committed results were made under the locked jaxlib, which
under an older one, and which of the older ones were checked by a rerun under the lock.

A results file names its jaxlib in its `environment` record (`jaxrobust.provenance`); a verdict of
`jaxrobust reproduce` or `--check-reproduces` (a JSON object with `record` and `verdict`) names the
record it judged and carries the environment of the rerun. The ledger counts, per results folder,
the files under the lock's jaxlib, under another, and with none recorded, and lists each verdict
made under the lock with its largest change. It says only what those files say: a table regenerated
elsewhere without a verdict (docs/reproducibility.md names them) counts under the lock where its
new file is. Run from the repository root:

  python scripts/lock_ledger.py
"""

from __future__ import annotations

import collections
import os
import re
import sys
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.getcwd())
import legacy_environments  # noqa: E402
from jaxrobust.files import write_atomic  # noqa: E402

OUT = os.path.join('results', 'LOCK_LEDGER.md')
LOCK = 'requirements.lock'


class Verdict(NamedTuple):
  path: str
  record: str
  verdict: str
  largest_difference: float | None
  largest_common_difference: float | None
  jaxlib: str | None


def locked_jaxlib(lock_path: str = LOCK) -> str:
  """The jaxlib the lock pins for the Python the project's tools run (the first pin in the lock)."""
  with open(lock_path) as f:
    match = re.search(r'^jaxlib==([^\s;]+)', f.read(), flags=re.MULTILINE)
  if not match:
    raise ValueError(f'{lock_path}: no jaxlib pin')
  return match.group(1)


def _jaxlib(record) -> str | None:
  env = record.get('environment') if isinstance(record, dict) else None
  versions = env.get('versions') if isinstance(env, dict) else None
  return versions.get('jaxlib') if isinstance(versions, dict) else None


def file_jaxlib(path: str) -> str | None:
  """The jaxlib a results file names: that of its first record that names one."""
  names = [_jaxlib(r) for r in legacy_environments.records(path)]
  return next((n for n in names if n), None)


def verdict_of(path: str) -> Verdict | None:
  """The verdict a file holds, or None when it is not one."""
  records = legacy_environments.records(path)
  d = records[0] if len(records) == 1 else None
  if not (isinstance(d, dict) and 'record' in d and 'verdict' in d):
    return None
  largest, common = d.get('largest_difference'), d.get('largest_common_difference', None)
  return Verdict(path, d['record'], d['verdict'], largest, common, _jaxlib(d))


def folder_of(path: str) -> str:
  """The results folder a file is counted under: results/<study>/<first level below it>."""
  parts = path.split('/')
  return '/'.join(parts[:3]) if len(parts) > 3 else '/'.join(parts[:2])


def ledger(paths: list[str], current: str) -> str:
  """The ledger's markdown for these results files under the lock's jaxlib `current`."""
  verdicts = [v for v in map(verdict_of, paths) if v]
  judged = {v.path for v in verdicts}
  checked = {v.record for v in verdicts if v.jaxlib == current}
  counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for path in paths:
    if path in judged:
      continue
    jaxlib = file_jaxlib(path)
    row = counts[folder_of(path)]
    row['files'] += 1
    row['current' if jaxlib == current else 'older' if jaxlib else 'unrecorded'] += 1
    row['checked'] += jaxlib != current and path in checked
  lines = [
    f'# Results against the lock (jaxlib {current})',
    '',
    'Written by `python scripts/lock_ledger.py` from the committed results files: per folder, the',
    f'files made under jaxlib {current}, under an older jaxlib, and with none recorded (written before',
    'results recorded their environment; `results/LEGACY_ENVIRONMENTS.json`); "checked" counts the',
    f'older files judged by a rerun under jaxlib {current} (listed below). docs/reproducibility.md says',
    'which tables were regenerated rather than checked.',
    '',
    f'| folder | files | jaxlib {current} | older jaxlib | not recorded | older, checked |',
    '|---|---:|---:|---:|---:|---:|',
  ]
  total: collections.Counter = collections.Counter()
  for folder in sorted(counts):
    c = counts[folder]
    total.update(c)
    lines.append(
      f'| `{folder}` | {c["files"]} | {c["current"]} | {c["older"]} | {c["unrecorded"]} | {c["checked"]} |'
    )
  lines.append(
    f'| all | {total["files"]} | {total["current"]} | {total["older"]} | {total["unrecorded"]} '
    f'| {total["checked"]} |'
  )
  lines += ['', f'## Verdicts under jaxlib {current}', '']
  lines += [
    'A verdict "not at all" with no largest change fails on numbers only one record holds (a rerun',
    'with a larger suite); the last column is then the largest change among those both hold.',
    '',
    '| record | verdict | largest change (points) | on the common numbers | verdict file |',
    '|---|---|---:|---:|---|',
  ]
  for v in sorted(verdicts, key=lambda v: (v.record, v.path)):
    if v.jaxlib != current:
      continue
    # The common numbers' change is the verdict's own unless numbers went unmatched.
    common_only = v.largest_common_difference if v.largest_difference is None else None
    largest, common = ('' if x is None else f'{100 * x:.1f}' for x in (v.largest_difference, common_only))
    lines.append(f'| `{v.record}` | {v.verdict} | {largest} | {common} | `{v.path}` |')
  return '\n'.join(lines) + '\n'


def main():
  text = ledger(legacy_environments.result_files(), locked_jaxlib())
  write_atomic(OUT, text)
  print(f'wrote {OUT}')


if __name__ == '__main__':
  main()
