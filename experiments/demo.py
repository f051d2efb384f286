"""`make demo`: the study in miniature on Fashion-MNIST.

Trains a baseline (regular training) and a robust model (PGD-10 adversarial training, ε=0.1) for
one epoch each with the small CNN, evaluates both on 1000 test images under the standard suite
(FGSM, PGD-L∞, PGD-L2, APGD-CE, APGD-DLR, CW-L2 at ε=0.1 / 1.5, iterations halved for time), prints
Table 1 and writes it with the figures to results/demo/fashion_mnist/. Rerunning reuses finished rows.
"""

import time

from experiments.table1 import run_table


def main():
  t0 = time.time()
  _, md = run_table(
    ['regular', 'pgd_at'],
    'fashion_mnist',
    out_dir='results/demo',
    runs_dir='runs/demo',
    epochs=1,
    num_test=1000,
    steps_scale=0.5,
  )
  print('\n' + open(md).read())
  print(f'Table and figures in results/demo/fashion_mnist/ ({time.time() - t0:.0f} s in all).')


if __name__ == '__main__':
  import absl.logging

  absl.logging.set_verbosity(absl.logging.WARNING)
  main()
