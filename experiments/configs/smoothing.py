"""Table 1 row: Smoothing.

  python -m experiments.train --config=experiments/configs/smoothing.py:fashion_mnist,quick --workdir=runs/smoothing
  python -m experiments.table1 --rows=smoothing --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/smoothing.json):
training took 38 s, alone on the cores; clean 88.1 % on the full test
set; on the first 500 test images, natural 90.4 %, PGD-L∞ 14.8 %, AutoAttack standard
6.0 %, worst case over the standard suite and AutoAttack 5.8 %.

Without ',quick' the Fashion-MNIST budget is 10 epochs (about ten times the time above);
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing', arg)
