"""Table 1 row: Smoothing + PGD + FGSM + CW + noise injection.

Fashion-MNIST + small CNN by default (10 epochs; ',quick' = 1 epoch, a few minutes on 2 CPU
cores for clean rows, about 4 minutes per epoch for adversarially trained rows); ':cifar10' trains
WRN-34-1 on CIFAR-10 as the study (GPU: hours).

  python -m experiments.train --config=experiments/configs/smoothing_pgd_fgsm_cw_pni.py:fashion_mnist,quick --workdir=runs/smoothing_pgd_fgsm_cw_pni
"""
from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing_pgd_fgsm_cw_pni', arg)
