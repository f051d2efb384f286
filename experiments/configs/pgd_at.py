"""Table 1 row: PGD-AT (Madry), reference.

  python -m experiments.train --config=experiments/configs/pgd_at.py:fashion_mnist,quick --workdir=runs/pgd_at
  python -m experiments.table1 --rows=pgd_at --epochs=1 --num_test=500 --steps_scale=0.5

Results: results/fashion_mnist/rows/pgd_at.json (docs/results.md).

Without ',quick' the Fashion-MNIST budget is 10 epochs (`python -m experiments.converged`); results: results/converged/fashion_mnist/rows/pgd_at.json (docs/results.md).

':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('pgd_at', arg)
