"""Table 1 row: Smoothing + PGD + FGSM + CW.

  python -m experiments.train --config=experiments/configs/smoothing_pgd_fgsm_cw.py:fashion_mnist,quick --workdir=runs/smoothing_pgd_fgsm_cw
  python -m experiments.table1 --rows=smoothing_pgd_fgsm_cw --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/smoothing_pgd_fgsm_cw.json):
training took 93 s, alone on the cores; clean 84.6 % on the full test
set; on the first 500 test images, natural 86.6 %, PGD-L∞ 64.2 %, AutoAttack standard
59.2 %, worst case over the standard suite and AutoAttack 53.2 %.

Without ',quick' the Fashion-MNIST budget is 10 epochs (about ten times the time above);
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing_pgd_fgsm_cw', arg)
