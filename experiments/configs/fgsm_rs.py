"""Table 1 row: fgsm_rs.

  python -m experiments.train --config=experiments/configs/fgsm_rs.py:fashion_mnist,quick --workdir=runs/fgsm_rs
  python -m experiments.table1 --rows=fgsm_rs --epochs=1 --num_test=500 --steps_scale=0.5

Measured: (filled in from results/fashion_mnist/rows/fgsm_rs.json).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('fgsm_rs', arg)
