"""What the adaptive suite cost each evaluated row, from the pieces' own timings in its record.

  python -m experiments.suite_cost [--folder=results/converged/fashion_mnist/rows] [--out=FILE]

Each piece of the adaptive suite (one attack on one batch) records the seconds it took, so the sum
over a row's pieces is its suite's compute time, however many processes and sittings ran it. A
piece that was running while its process was paused counts the pause too: the sums are upper
bounds of the compute. Writes cost.json beside the rows' folder (or --out) and prints it.
"""

from __future__ import annotations

import json
import os
import sys

from jaxrobust.provenance import write_result_json


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
        costs[name.removesuffix('.json')] = cost
  out = out or os.path.join(os.path.dirname(os.path.normpath(folder)), 'cost.json')
  write_result_json(out, {'rows': costs})
  for row, c in costs.items():
    top = ', '.join(f'{k} {v:.0f} min' for k, v in list(c['minutes_per_attack'].items())[:4])
    print(f'{row}: {c["hours"]:.2f} h of one core on {c["cpu"]} ({c["n"]} images): {top}')
  return costs


if __name__ == '__main__':
  args = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith(('--folder=', '--out=')))
  bad = [a for a in sys.argv[1:] if not a.startswith(('--folder=', '--out='))]
  if bad:
    sys.exit(f'not understood: {" ".join(bad)}; options: --folder=DIR --out=FILE')
  main(**args)
