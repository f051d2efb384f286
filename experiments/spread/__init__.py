"""How far one Table 1 moves between machines: the same rows, the same seed, other numeric paths.

  python -m experiments.spread results/reproducibility/default results/reproducibility/eigen \
      results/reproducibility/one_core

Each argument is a Table 1 output directory (<dir>/fashion_mnist/rows/<row>.json) of the same
rows and settings, produced under another convolution path, core count or CPU. Writes
results/reproducibility/spread.json and spread.md: per row and column, the value under each
configuration and the spread (largest minus smallest), and the largest spread of all, which is
what `experiments.reproduce` may call reproduced "to a tolerance".
"""

from __future__ import annotations

import glob
import json
import os
import sys

from experiments.reproduce import compare
from experiments.report import COLUMNS
from jaxrobust.files import write_atomic
from jaxrobust.provenance import write_result_json

OUT = os.path.join('results', 'reproducibility')


def configuration(record: dict) -> str:
  """A short name of the numeric path a record was computed on."""
  env = record.get('environment') or {}
  return f'{env.get("cpu", "?")}, XLA_FLAGS={env.get("xla_flags") or "(none)"}'


def load_rows(directory: str, dataset: str) -> dict[str, dict]:
  """{row: record} of a Table 1 output directory.

  Raises:
    ValueError: naming the directory, when it holds no rows.
  """
  paths = sorted(glob.glob(os.path.join(directory, dataset, 'rows', '*.json')))
  if not paths:
    raise ValueError(f'{directory}: no Table 1 rows in {os.path.join(directory, dataset, "rows")}')
  out = {}
  for p in paths:
    with open(p) as f:
      r = json.load(f)
    out[r['row']] = r
  return out


def spread(directories, dataset: str = 'fashion_mnist', out_dir: str = OUT) -> dict:
  """Compares the same rows across directories; writes spread.json and spread.md; returns the
  summary.

  Raises:
    ValueError: when the directories do not hold the same rows with the same invocation.
  """
  runs = [load_rows(d, dataset) for d in directories]
  rows = sorted(runs[0])
  for d, r in zip(directories, runs):
    if sorted(r) != rows:
      raise ValueError(f'{d}: rows {sorted(r)}, but {directories[0]} has {rows}')
    for name in rows:
      if r[name].get('invocation') != runs[0][name].get('invocation'):
        raise ValueError(f'{d}: row {name} was run with other settings than in {directories[0]}')
  configs = ['; '.join(sorted({configuration(rec) for rec in r.values()})) for r in runs]
  table, largest = {}, 0.0
  for name in rows:
    cols = {}
    for key in ['test_accuracy_full'] + [k for k, _ in COLUMNS]:
      values = [r[name]['result'].get(key) if key != 'test_accuracy_full' else r[name][key] for r in runs]
      if any(v is None for v in values):
        continue
      cols[key] = {'values': values, 'spread': max(values) - min(values)}
      largest = max(largest, cols[key]['spread'])
    verdicts = [compare(runs[0][name], r[name], common_only=True).verdict for r in runs[1:]]
    table[name] = {'columns': cols, 'against_first': verdicts}
  summary = {
    'directories': list(directories),
    'configurations': configs,
    'rows': table,
    'largest_spread': largest,
  }
  write_result_json(os.path.join(out_dir, 'spread.json'), summary, indent=1)
  write_atomic(os.path.join(out_dir, 'spread.md'), markdown(summary))
  return summary


def markdown(summary: dict) -> str:
  """The spread as a Markdown table: one line per row and column."""
  titles = dict(COLUMNS, test_accuracy_full='Natural, full test set')
  configs = summary['configurations']
  lines = [
    'Configurations: ' + '; '.join(f'({i + 1}) {c}' for i, c in enumerate(configs)),
    '',
    '| row | column | ' + ' | '.join(f'({i + 1})' for i in range(len(configs))) + ' | spread (points) |',
    '|---|---|' + '---|' * (len(configs) + 1),
  ]
  for row, t in summary['rows'].items():
    for key, c in t['columns'].items():
      vals = ' | '.join(f'{100 * v:.2f}' for v in c['values'])
      lines.append(f'| {row} | {titles.get(key, key)} | {vals} | {100 * c["spread"]:.2f} |')
  lines += ['', f'Largest spread: {100 * summary["largest_spread"]:.2f} points.']
  return '\n'.join(lines) + '\n'


def command_line() -> None:
  """`python -m experiments.spread`: the flags below, then the run (experiments/spread/__main__.py)."""
  if len(sys.argv) < 3:
    sys.exit('usage: python -m experiments.spread DIR DIR [DIR ...] (Table 1 output directories)')
  s = spread(sys.argv[1:])
  print(markdown(s))
