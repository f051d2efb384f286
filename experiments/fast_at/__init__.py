"""Fast adversarial training against PGD-AT: robust accuracy (AutoAttack) against training time.

  python -m experiments.fast_at [--rows=pgd_at,fgsm_rs,free_at] [--epochs=1] [--num_test=500]
  python -m experiments.fast_at --epochs=pgd_at:10,fgsm_rs:7,free_at:4 --out=results/fast_at_10 --runs=runs/converged

Trains each row with its Table 1 config (Fashion-MNIST, small CNN, same seed), one after the
other on this machine, evaluates each with AutoAttack's standard version on the first `num_test`
test images, and writes <out>/fashion_mnist/{rows/<row>.json, fast_at.json, fast_at.md} and
figures/accuracy_vs_training_time.png. `--epochs` is one number for every row or `row:epochs`
pairs (the cheap recipes may train more epochs within a share of PGD-AT's time). Rows already done
are reused (--force redoes them). Times are wall times of one uninterrupted run each (compilation
and the guard's checks included); a row whose run was resumed has no whole time and is refused.
"""

from __future__ import annotations

import os

from experiments.table1 import table1_row
from experiments import figures
from jaxrobust.files import write_atomic
from jaxrobust.provenance import write_result_json

OUT = os.path.join('results', 'fast_at')


def parse_epochs(spec: str, rows) -> dict[str, float]:
  """{row: epochs} from '2' (every row) or 'pgd_at:10,fgsm_rs:7' (every row named once).

  Raises:
    ValueError: naming `--epochs` for a malformed value, an unknown row or a missing one.
  """
  try:
    if ':' not in spec:
      return {r: float(spec) for r in rows}
    pairs = dict((k, float(v)) for k, v in (p.split(':') for p in spec.split(',')))
  except ValueError as e:
    raise ValueError(f"--epochs: expected a number or 'row:epochs,...', got {spec!r}") from e
  if set(pairs) != set(rows):
    raise ValueError(f'--epochs names rows {sorted(pairs)}; the rows are {sorted(rows)}')
  return pairs


def run(
  rows,
  *,
  dataset='fashion_mnist',
  epochs='1',
  num_test=500,
  force=False,
  out_dir=OUT,
  runs_dir='runs/fast_at',
  progress=True,
):
  per_row = parse_epochs(str(epochs), rows)
  records = [
    table1_row(
      r,
      dataset,
      epochs=per_row[r],
      num_test=num_test,
      suite='autoattack',
      out_dir=out_dir,
      runs_dir=runs_dir,
      force=force,
      progress=progress,
    )
    for r in rows
  ]
  resumed = [r['row'] for r in records if r.get('resumed')]
  if resumed:
    raise RuntimeError(
      f'rows {resumed} resumed an earlier run, so their training time is not whole; '
      f'rerun them with --force in a fresh --runs directory'
    )
  lines = ['| defense | epochs | clean | AutoAttack | train s | time / PGD-AT |', '|---|---|---|---|---|---|']
  base = next((r['train_time_s'] for r in records if r['row'] == 'pgd_at'), None)
  summary = []
  for r in records:
    res = r['result']
    ratio = f'{r["train_time_s"] / base:.2f}' if base else '—'
    lines.append(
      f'| {r["title"]} | {r["epochs"]:g} | {100 * res["clean"]:.1f} | {100 * res["autoattack"]:.1f} '
      f'| {r["train_time_s"]:.0f} | {ratio} |'
    )
    summary.append(
      dict(
        row=r['row'],
        epochs=r['epochs'],
        clean=res['clean'],
        autoattack=res['autoattack'],
        train_time_s=r['train_time_s'],
        n=r['n_eval'],
      )
    )
  table = '\n'.join(lines) + '\n'
  base_dir = os.path.join(out_dir, dataset)
  write_result_json(os.path.join(base_dir, 'fast_at.json'), {'epochs': per_row, 'rows': summary})
  write_atomic(os.path.join(base_dir, 'fast_at.md'), table)
  figures.plot_accuracy_vs_cost(
    os.path.join(base_dir, 'figures', 'accuracy_vs_training_time.png'),
    {f'{r["title"]}, {r["epochs"]:g} ep.': (r['train_time_s'], r['result']['autoattack']) for r in records},
    title=f'{dataset}: AutoAttack accuracy on {records[0]["n_eval"]} test images',
  )
  return records, table


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  _, table = run(
    F.rows.split(','), epochs=F.epochs, num_test=F.num_test, force=F.force, out_dir=F.out, runs_dir=F.runs
  )
  print(table)


def command_line() -> None:
  """`python -m experiments.fast_at`: the flags below, then the run (experiments/fast_at/__main__.py)."""
  from absl import app, flags

  flags.DEFINE_string('rows', 'pgd_at,fgsm_rs,free_at', 'rows to train and compare')
  flags.DEFINE_string('epochs', '1', "epochs: one number for every row, or 'row:epochs,...'")
  flags.DEFINE_integer('num_test', 500, 'test images for AutoAttack', lower_bound=1)
  flags.DEFINE_bool('force', False, 'redo rows whose results exist')
  flags.DEFINE_string('out', OUT, 'results directory')
  flags.DEFINE_string('runs', 'runs/fast_at', 'training work directories')
  app.run(main)
