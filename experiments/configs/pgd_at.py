"""Table 1 row: PGD-AT (Madry), reference.

  python -m experiments.train --config=experiments/configs/pgd_at.py:fashion_mnist,quick --workdir=runs/pgd_at
  python -m experiments.table1 --rows=pgd_at --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/pgd_at.json):
training took 167 s, alone on the cores; clean 78.9 % on the full test
set; on the first 500 test images, natural 81.4 %, PGD-L∞ 69.8 %, AutoAttack standard
67.4 %, worst case over the standard suite and AutoAttack 57.6 %.

Without ',quick' the Fashion-MNIST budget is 10 epochs, in runs/converged/fashion_mnist/pgd_at
(trained there by `experiments.fast_at --runs=runs/converged` in 1655 s; `python -m
experiments.converged --rows=pgd_at` trains or reuses it): clean 84.32 % on the full test set,
AutoAttack standard 75.5 % on the first 1000 test images (21 min of one core;
results/converged/fashion_mnist/rows/pgd_at.json).

':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('pgd_at', arg)
