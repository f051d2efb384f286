"""Table 1 row: Smoothing + PGD + FGSM + CW + noise injection.

  python -m experiments.train --config=experiments/configs/smoothing_pgd_fgsm_cw_pni.py:fashion_mnist,quick --workdir=runs/smoothing_pgd_fgsm_cw_pni
  python -m experiments.table1 --rows=smoothing_pgd_fgsm_cw_pni --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/smoothing_pgd_fgsm_cw_pni.json):
training took 119 s, alone on the cores; clean 84.9 % on the full test
set; on the first 500 test images, natural 86.2 %, PGD-L∞ 61.2 %, AutoAttack rand (EOT-20)
59.2 %, worst case over the standard suite (with EOT and transfer) and AutoAttack 51.8 %.

Without ',quick' the Fashion-MNIST budget is 10 epochs (about ten times the time above);
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing_pgd_fgsm_cw_pni', arg)
