"""Fast adversarial training against PGD-AT: robust accuracy (AutoAttack) against training time.

  python -m experiments.fast_at [--rows=pgd_at,fgsm_rs,free_at] [--epochs=1] [--num_test=500]

Trains each row with its Table 1 config (Fashion-MNIST, small CNN, same seed and epochs), one
after the other on this machine, evaluates each with AutoAttack's standard version on the first
`num_test` test images, and writes results/fast_at/fashion_mnist/{rows/<row>.json, fast_at.json,
fast_at.md} and figures/accuracy_vs_training_time.png. Rows already done are reused (--force
redoes them).
"""

from __future__ import annotations

import os

from experiments.table1 import run_row
from jaxrobust.evaluation import figures
from jaxrobust.files import write_atomic, write_json_atomic

OUT = os.path.join('results', 'fast_at')


def run(
  rows,
  *,
  dataset='fashion_mnist',
  epochs=1.0,
  num_test=500,
  force=False,
  out_dir=OUT,
  runs_dir='runs/fast_at',
  progress=True,
):
  records = [
    run_row(
      r,
      dataset,
      epochs=epochs,
      num_test=num_test,
      suite='autoattack',
      out_dir=out_dir,
      runs_dir=runs_dir,
      force=force,
      progress=progress,
    )
    for r in rows
  ]
  lines = ['| defense | clean | AutoAttack | train s | time / PGD-AT |', '|---|---|---|---|---|']
  base = next((r['train_time_s'] for r in records if r['row'] == 'pgd_at'), None)
  summary = []
  for r in records:
    res = r['result']
    ratio = f'{r["train_time_s"] / base:.2f}' if base else '—'
    lines.append(
      f'| {r["title"]} | {100 * res["clean"]:.1f} | {100 * res["autoattack"]:.1f} | {r["train_time_s"]:.0f} | {ratio} |'
    )
    summary.append(
      dict(
        row=r['row'],
        clean=res['clean'],
        autoattack=res['autoattack'],
        train_time_s=r['train_time_s'],
        n=r['n_eval'],
      )
    )
  table = '\n'.join(lines) + '\n'
  base_dir = os.path.join(out_dir, dataset)
  write_json_atomic(os.path.join(base_dir, 'fast_at.json'), {'epochs': epochs, 'rows': summary})
  write_atomic(os.path.join(base_dir, 'fast_at.md'), table)
  figures.plot_accuracy_vs_cost(
    os.path.join(base_dir, 'figures', 'accuracy_vs_training_time.png'),
    {r['title']: (r['train_time_s'], r['result']['autoattack']) for r in records},
    title=f'{dataset}, {epochs:g} epoch(s): AutoAttack accuracy on {records[0]["n_eval"]} test images',
  )
  return records, table


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  _, table = run(F.rows.split(','), epochs=F.epochs, num_test=F.num_test, force=F.force)
  print(table)


if __name__ == '__main__':
  from absl import app, flags

  flags.DEFINE_string('rows', 'pgd_at,fgsm_rs,free_at', 'rows to train and compare')
  flags.DEFINE_float('epochs', 1.0, 'epochs per row')
  flags.DEFINE_integer('num_test', 500, 'test images for AutoAttack')
  flags.DEFINE_bool('force', False, 'redo rows whose results exist')
  app.run(main)
