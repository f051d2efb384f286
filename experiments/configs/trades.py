"""Table 1 row: TRADES, reference.

  python -m experiments.train --config=experiments/configs/trades.py:fashion_mnist,quick --workdir=runs/trades
  python -m experiments.table1 --rows=trades --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/trades.json):
training took 223 s, alone on the cores; clean 81.0 % on the full test
set; on the first 500 test images, natural 82.8 %, PGD-L∞ 68.8 %, AutoAttack standard
65.8 %, worst case over the standard suite and AutoAttack 54.0 %.

TRADES now runs the clean and adversarial batches as two train-mode passes (as its
reference does); the small CNN has no BatchNorm, so this row is unaffected in principle.

Without ',quick' the Fashion-MNIST budget is 10 epochs (about ten times the time above);
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('trades', arg)
