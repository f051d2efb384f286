"""Table 1 row: TRADES, reference.

  python -m experiments.train --config=experiments/configs/trades.py:fashion_mnist,quick --workdir=runs/trades
  python -m experiments.table1 --rows=trades --epochs=1 --num_test=500 --steps_scale=0.5

Results: results/fashion_mnist/rows/trades.json (docs/results.md).

TRADES runs the clean and adversarial batches as two train-mode passes, as its reference does.

Without ',quick' the Fashion-MNIST budget is 10 epochs;
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('trades', arg)
