"""`make demo`: the study in miniature on Fashion-MNIST.

Trains a baseline (regular training) and a robust model (PGD-5 adversarial training, ε=0.1, the
'demo' variant of the configs) for one epoch each with the small CNN, evaluates both on 500 test
images under the standard suite (FGSM, PGD-L∞, PGD-L2, APGD-CE, APGD-DLR, CW-L2 at ε=0.1 / 1.5,
iterations halved for time), prints Table 1 and writes it with the figures and the demo's wall
time (demo.json) to results/demo/fashion_mnist/. Rerunning reuses finished rows.

  python -m experiments.demo
  python -m experiments.demo --out=results/reproducibility/eigen --runs=runs/reproducibility/eigen
"""

import os
import time

from experiments.table1 import run_table
from jaxrobust.provenance import write_result_json

ROWS = ('regular', 'pgd_at')
SETTINGS = dict(epochs=1, num_test=500, steps_scale=0.5, variant='demo')


def main(out: str = 'results/demo', runs: str = 'runs/demo'):
  t0 = time.time()
  records, md = run_table(list(ROWS), 'fashion_mnist', out_dir=out, runs_dir=runs, **SETTINGS)
  seconds = time.time() - t0
  # The demo's own wall time (training and evaluation; not the set-up), beside its table.
  write_result_json(
    os.path.join(out, 'fashion_mnist', 'demo.json'),
    {
      'seconds': seconds,
      'rows': list(ROWS),
      'settings': SETTINGS,
      'rows_resumed': [r['row'] for r in records if r.get('resumed')],
    },
  )
  print('\n' + open(md).read())
  print(f'Table and figures in {os.path.join(out, "fashion_mnist")}/ ({seconds:.0f} s in all).')


def command_line() -> None:
  """`python -m experiments.demo`: the flags below, then the run (experiments/demo/__main__.py)."""
  import sys

  import absl.logging

  absl.logging.set_verbosity(absl.logging.WARNING)
  kw = dict(a[2:].split('=', 1) for a in sys.argv[1:] if a.startswith(('--out=', '--runs=')))
  unknown = [a for a in sys.argv[1:] if not a.startswith(('--out=', '--runs='))]
  if unknown:
    sys.exit(f'not understood: {" ".join(unknown)}; options: --out=DIR --runs=DIR')
  main(**kw)
