"""Does the ELBO's KL term change stochastic LWTA? The study's loss against the authors' one.

  python -m experiments.lwta_kl --seeds=0,1,2 --epochs=1 --num_test=500

The study trains LWTA on PGD-AT + β·ΣKL/N with β = 1 (the ELBO); the authors' code computes the
ξ-KL but trains on cross-entropy alone (the config's ',authors' variant: kl_beta = 0, nothing
else changes on Fashion-MNIST). Each variant is trained with the same seeds and recipe (the LWTA
row of Table 1) and evaluated by the Table 1 suite (the standard attacks, EOT-PGD and EOT-APGD,
transfer from the argmax surrogate, the per-point worst case); the table gives mean ± sd over the
seeds of each variant and the paired difference. Writes <out>/fashion_mnist/{lwta_kl.json,
lwta_kl.md}; each (variant, seed) caches its record under <out>/<variant>/seed<k>/ and resumes.
"""

from __future__ import annotations

import json
import os

import numpy as np

from experiments.table1 import table1_row
from jaxrobust.files import write_atomic
from jaxrobust.provenance import write_result_json

OUT = os.path.join('results', 'lwta_kl')
VARIANTS = {'elbo': '', 'authors': 'authors'}  # name -> config variant
COLUMNS = ('clean', 'pgd_linf', 'eot_pgd', 'eot_apgd', 'transfer', 'worst_case')


def parse_seeds(spec: str) -> list[int]:
  """[0, 1, 2] from '0,1,2'.

  Raises:
    ValueError: naming `--seeds` for anything but distinct non-negative integers.
  """
  try:
    seeds = [int(s) for s in spec.split(',')]
  except ValueError as e:
    raise ValueError(f'--seeds: expected comma-separated integers, got {spec!r}') from e
  if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
    raise ValueError(f'--seeds: expected distinct non-negative integers, got {spec!r}')
  return seeds


def _last_kl(workdir: str) -> float | None:
  """The last logged training KL (ΣKL of a batch) of a run, if any."""
  kl = None
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      kl = json.loads(line).get('train_kl', kl)
  return kl


def _mean_sd(values) -> str:
  v = 100 * np.asarray(values, float)
  return f'{v.mean():.1f} ± {v.std(ddof=1):.1f}' if len(v) > 1 else f'{v.mean():.1f}'


def run(
  seeds,
  *,
  dataset: str = 'fashion_mnist',
  epochs: float = 1.0,
  num_test: int = 500,
  steps_scale: float = 0.5,
  out_dir: str = OUT,
  runs_dir: str = os.path.join('runs', 'lwta_kl'),
  progress: bool = True,
) -> tuple[dict, str]:
  """Trains and evaluates both variants for every seed; returns (summary, Markdown table)."""
  records = {v: [] for v in VARIANTS}
  for seed in seeds:
    for name, variant in VARIANTS.items():
      runs = os.path.join(runs_dir, name, f'seed{seed}')
      r = table1_row(
        'lwta',
        dataset,
        epochs=epochs,
        num_test=num_test,
        steps_scale=steps_scale,
        runs_dir=runs,
        out_dir=os.path.join(out_dir, name, f'seed{seed}'),
        seed=seed,
        variant=variant,
        progress=progress,
      )
      r['final_train_kl'] = _last_kl(os.path.join(runs, dataset, 'lwta'))
      records[name].append(r)
  acc = {v: {c: [r['result'][c] for r in rs] for c in COLUMNS} for v, rs in records.items()}
  head = '| variant | ' + ' | '.join(COLUMNS) + ' | final ΣKL per batch | train s |'
  lines = [head, '|---' * (len(COLUMNS) + 3) + '|']
  for v, rs in records.items():
    kls = [r['final_train_kl'] for r in rs if r['final_train_kl'] is not None]
    kl = f'{np.mean(kls):.3g}' if kls else '–'
    cells = [_mean_sd(acc[v][c]) for c in COLUMNS]
    train_s = np.mean([r['train_time_s'] for r in rs])
    lines.append(
      f'| {v} (kl_beta = {1 if v == "elbo" else 0}) | ' + ' | '.join(cells) + f' | {kl} | {train_s:.0f} |'
    )
  diff = {c: np.asarray(acc['elbo'][c]) - np.asarray(acc['authors'][c]) for c in COLUMNS}
  lines.append('| ELBO − authors, paired | ' + ' | '.join(_signed(d) for d in diff.values()) + ' | | |')
  table = '\n'.join(lines) + '\n'
  summary = {
    'seeds': list(seeds),
    'epochs': epochs,
    'n': records['elbo'][0]['n_eval'],
    'accuracy': acc,
    'paired_difference': {c: d.tolist() for c, d in diff.items()},
    'final_train_kl': {v: [r['final_train_kl'] for r in rs] for v, rs in records.items()},
  }
  write_result_json(os.path.join(out_dir, dataset, 'lwta_kl.json'), summary)
  write_atomic(os.path.join(out_dir, dataset, 'lwta_kl.md'), table)
  return summary, table


def _signed(d) -> str:
  d = 100 * np.asarray(d, float)
  return f'{d.mean():+.1f} ± {d.std(ddof=1):.1f}' if len(d) > 1 else f'{d.mean():+.1f}'


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  _, table = run(
    parse_seeds(F.seeds),
    epochs=F.epochs,
    num_test=F.num_test,
    steps_scale=F.steps_scale,
    out_dir=F.out,
    runs_dir=F.runs,
  )
  print(table)


def command_line() -> None:
  """`python -m experiments.lwta_kl`: the flags below, then the run (experiments/lwta_kl/__main__.py)."""
  from absl import app, flags

  flags.DEFINE_string('seeds', '0,1,2', 'comma-separated seeds, each variant trained with each')
  flags.DEFINE_float('epochs', 1.0, 'training epochs of every run')
  flags.DEFINE_integer('num_test', 500, 'test images of the evaluation', lower_bound=1)
  flags.DEFINE_float('steps_scale', 0.5, 'scale of the evaluation attacks (Table 1 used 0.5)')
  flags.DEFINE_string('out', OUT, 'results directory')
  flags.DEFINE_string('runs', os.path.join('runs', 'lwta_kl'), 'training work directories')
  app.run(main)
