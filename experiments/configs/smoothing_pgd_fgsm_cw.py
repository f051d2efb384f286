"""Table 1 row: Smoothing + PGD + FGSM + CW.

  python -m experiments.train --config=experiments/configs/smoothing_pgd_fgsm_cw.py:fashion_mnist,quick --workdir=runs/smoothing_pgd_fgsm_cw
  python -m experiments.table1 --rows=smoothing_pgd_fgsm_cw --epochs=1 --num_test=500 --steps_scale=0.5

Results: results/fashion_mnist/rows/smoothing_pgd_fgsm_cw.json (docs/results.md).

Without ',quick' the Fashion-MNIST budget is 10 epochs;
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing_pgd_fgsm_cw', arg)
