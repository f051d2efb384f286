"""Table 1 row: Smoothing + PGD.

  python -m experiments.train --config=experiments/configs/smoothing_pgd.py:fashion_mnist,quick --workdir=runs/smoothing_pgd
  python -m experiments.table1 --rows=smoothing_pgd --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/smoothing_pgd.json):
training took 121 s, alone on the cores; clean 82.5 % on the full test
set; on the first 500 test images, natural 84.4 %, PGD-L∞ 67.0 %, AutoAttack standard
63.6 %, worst case over the standard suite and AutoAttack 56.6 %.

Without ',quick' the Fashion-MNIST budget is 10 epochs (about ten times the time above);
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing_pgd', arg)
