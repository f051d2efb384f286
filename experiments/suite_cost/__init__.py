"""What the adaptive suite cost each evaluated row, from the pieces' own timings in its record.

  python -m experiments.suite_cost [--folder=results/converged/fashion_mnist/rows] [--out=FILE]

Each piece of the adaptive suite (one attack on one batch) records the seconds it took, so the sum
over a row's pieces is its suite's compute time, however many processes and sittings ran it. A
piece that was running while its process was paused counts the pause too: the sums are upper
bounds of the compute. Where the row's pieces are still stored (`pieces/<row>/adaptive` beside the
rows' folder) and add up to the record's total, the seconds of each batch are listed too: a batch
whose pieces ran without pauses shows the compute that a paused one hides. Writes cost.json beside
the rows' folder (or --out) and prints it.
"""

from __future__ import annotations

import json
import os
import re
import sys

from jaxrobust.evaluation.cache import stored_pieces
from jaxrobust.provenance import write_result_json

_BATCH = re.compile(r'batch(\d+)_')


def row_cost(record: dict) -> dict | None:
  """{'hours', 'minutes_per_attack' (largest first), 'share_of_largest', 'cpu', 'n'} of one row's
  suite, or None for a row without timed pieces."""
  seconds = record.get('result', {}).get('seconds')
  if not seconds:
    return None
  total = sum(seconds.values())
  ranked = sorted(seconds.items(), key=lambda kv: -kv[1])
  return {
    'hours': total / 3600,
    'minutes_per_attack': {k: v / 60 for k, v in ranked},
    'largest': ranked[0][0],
    'share_of_largest': ranked[0][1] / total,
    'cpu': record.get('cpu'),
    'n': record.get('n_eval'),
  }


def batch_seconds(pieces_dir: str, total: float) -> dict[str, float] | None:
  """{first image of the batch: seconds of its pieces}, or None when no pieces are stored there or
  they do not add up to `total` within a second (pieces of other weights, or some missing)."""
  if not os.path.isdir(pieces_dir):
    return None
  per: dict[str, float] = {}
  for name, value in stored_pieces(pieces_dir).items():
    m = _BATCH.match(name)
    if m and isinstance(value, dict) and 'seconds' in value:
      first = str(int(m.group(1)))
      per[first] = per.get(first, 0.0) + value['seconds']
  if not per or abs(sum(per.values()) - total) > 1.0:
    return None
  return dict(sorted(per.items(), key=lambda kv: int(kv[0])))


def main(
  folder: str = os.path.join('results', 'converged', 'fashion_mnist', 'rows'), out: str | None = None
) -> dict:
  if not os.path.isdir(folder):
    raise SystemExit(f'--folder={folder}: no such folder of row records')
  costs = {}
  for name in sorted(os.listdir(folder)):
    if name.endswith('.json'):
      with open(os.path.join(folder, name)) as f:
        cost = row_cost(json.load(f))
      if cost:
        row = name.removesuffix('.json')
        pieces = os.path.join(os.path.dirname(os.path.normpath(folder)), 'pieces', row, 'adaptive')
        per_batch = batch_seconds(pieces, cost['hours'] * 3600)
        if per_batch:
          cost['seconds_per_batch'] = per_batch
        costs[row] = cost
  out = out or os.path.join(os.path.dirname(os.path.normpath(folder)), 'cost.json')
  write_result_json(out, {'rows': costs})
  for row, c in costs.items():
    top = ', '.join(f'{k} {v:.0f} min' for k, v in list(c['minutes_per_attack'].items())[:4])
    print(f'{row}: {c["hours"]:.2f} h of one core on {c["cpu"]} ({c["n"]} images): {top}')
    if 'seconds_per_batch' in c:
      print(
        '  seconds per batch (first image: s): '
        + ', '.join(f'{b}: {s:.0f}' for b, s in c['seconds_per_batch'].items())
      )
  return costs


def command_line() -> None:
  """`python -m experiments.suite_cost`: the flags below, then the run (experiments/suite_cost/__main__.py)."""
  args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith(('--folder=', '--out=')))
  bad = [a for a in sys.argv[1:] if not a.startswith(('--folder=', '--out='))]
  if bad:
    sys.exit(f'not understood: {" ".join(bad)}; options: --folder=DIR --out=FILE')
  main(**args)
