"""Table 1 row: free_at.

  python -m experiments.train --config=experiments/configs/free_at.py:fashion_mnist,quick --workdir=runs/free_at
  python -m experiments.table1 --rows=free_at --epochs=1 --num_test=500 --steps_scale=0.5

Measured: (filled in from results/fashion_mnist/rows/free_at.json).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('free_at', arg)
