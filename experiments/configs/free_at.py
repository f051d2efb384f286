"""Table 1 row: free adversarial training (Shafahi et al. 2019), reference.

  python -m experiments.train --config=experiments/configs/free_at.py:fashion_mnist,quick --workdir=runs/free_at
  python -m experiments.table1 --rows=free_at --epochs=1 --num_test=500 --steps_scale=0.5

  python -m experiments.fast_at --epochs=1 --num_test=200     # beside PGD-AT, under AutoAttack

Results: results/fashion_mnist/rows/free_at.json (docs/results.md).

Results: results/fast_at/fashion_mnist/rows/free_at.json (docs/results.md)."""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('free_at', arg)
