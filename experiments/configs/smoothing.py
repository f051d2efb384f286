"""Table 1 row: Smoothing.

  python -m experiments.train --config=experiments/configs/smoothing.py:fashion_mnist,quick --workdir=runs/smoothing
  python -m experiments.table1 --rows=smoothing --epochs=1 --num_test=500 --steps_scale=0.5

Results: results/fashion_mnist/rows/smoothing.json (docs/results.md).

Without ',quick' the Fashion-MNIST budget is 10 epochs;
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing', arg)
