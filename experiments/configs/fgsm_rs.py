"""Table 1 row: FGSM with a random start (Wong, Rice & Kolter 2020), reference.

  python -m experiments.train --config=experiments/configs/fgsm_rs.py:fashion_mnist,quick --workdir=runs/fgsm_rs
  python -m experiments.table1 --rows=fgsm_rs --epochs=1 --num_test=500 --steps_scale=0.5

  python -m experiments.fast_at --epochs=1 --num_test=200     # beside PGD-AT, under AutoAttack

Results: results/fashion_mnist/rows/fgsm_rs.json (docs/results.md).

Results: results/fast_at/fashion_mnist/rows/fgsm_rs.json (docs/results.md)."""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('fgsm_rs', arg)
