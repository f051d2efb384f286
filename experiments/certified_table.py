"""The bracket tables: certified (lower) beside attacked (upper) accuracy for every certified run.

  python -m experiments.certified_table [--dir=results/certified/fashion_mnist]

Reads the records `experiments.certify` wrote in `dir` and writes `dir/certified.md`: one table
for interval bounds (verified L∞ accuracy, PGD-20 and AutoAttack at each ε) and one for randomized
smoothing (certified L2 accuracy at each radius with n and with n_large draws, and the same
smoothed classifier's accuracy under SmoothAdv).
"""

from __future__ import annotations

import glob
import json
import os

from jaxrobust.files import write_atomic

DIR = os.path.join('results', 'certified', 'fashion_mnist')


def _pct(v) -> str:
  return '–' if v is None else f'{100 * v:.1f}'


def intervals_table(records: list[dict]) -> str:
  if not records:
    return ''
  eps = records[0]['epsilons']
  head = '| model | ' + ' | '.join(f'ε = {e:g}' for e in eps) + ' | AutoAttack |'
  lines = [
    f'**Interval bounds** (L∞; verified / PGD-20 accuracy in %, first {records[0]["num_test"]} test images)',
    '',
    head,
    '|' + '---|' * (len(eps) + 2),
  ]
  for r in records:
    cells = [f'{_pct(v)} / {_pct(u)}' for v, u in zip(r['verified'], r['empirical']['accuracy'])]
    aa = r['autoattack']
    lines.append(
      f'| {r["row"]} | ' + ' | '.join(cells) + f' | {_pct(aa["accuracy"])} at ε = {aa["epsilon"]:g} |'
    )
  return '\n'.join(lines) + '\n'


def smoothing_table(records: list[dict]) -> str:
  if not records:
    return ''
  radii = records[0]['radii']
  lines = [
    '**Randomized smoothing** (L2; certified / SmoothAdv accuracy in %)',
    '',
    '| model | σ | images | draws | ' + ' | '.join(f'r = {r:g}' for r in radii) + ' | abstained |',
    '|' + '---|' * (len(radii) + 5),
  ]
  for r in records:
    e = r['empirical']
    cells = [f'{_pct(c)} / {_pct(a)}' for c, a in zip(e['certified_on_same_images'], e['accuracy'])]
    lines.append(
      f'| {r["row"]} | {r["sigma"]:g} | {e["num_test"]} | n = {r["n"]} | '
      + ' | '.join(cells)
      + f' | {_pct(r["abstain_rate"])} |'
    )
    big = r['large_n']
    lines.append(
      f'| {r["row"]}, more draws | {r["sigma"]:g} | {big["num_test"]} | n = {big["n"]} (n = {r["n"]}) | '
      + ' | '.join(f'{_pct(a)} ({_pct(b)})' for a, b in zip(big['certified'], big['certified_with_n']))
      + ' | |'
    )
  lines += [
    '',
    'Certified on all images with n draws: '
    + '; '.join(
      f'{r["row"]} (σ = {r["sigma"]:g}, {r["num_test"]} images): '
      + ', '.join(f'{_pct(c)} at r = {x:g}' for c, x in zip(r['certified'], radii))
      for r in records
    )
    + '.',
  ]
  return '\n'.join(lines) + '\n'


def write(directory: str = DIR) -> str:
  records = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(directory, '*.json')))]
  iv = [r for r in records if r.get('method') == 'intervals']
  sm = [r for r in records if r.get('method') == 'smoothing']
  body = '\n'.join(t for t in (intervals_table(iv), smoothing_table(sm)) if t)
  envs = sorted({f'{r["environment"]["cpu"]}, commit {r["environment"]["commit"][:10]}' for r in records})
  body += (
    '\nWritten by `python -m experiments.certified_table` from the records beside it; machines: '
    + '; '.join(envs)
    + '.\n'
  )
  return write_atomic(os.path.join(directory, 'certified.md'), body)


if __name__ == '__main__':
  import sys

  d = next((a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--dir=')), DIR)
  print(open(write(d)).read())
