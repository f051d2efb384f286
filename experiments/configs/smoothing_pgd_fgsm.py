"""Table 1 row: Smoothing + PGD + FGSM.

  python -m experiments.train --config=experiments/configs/smoothing_pgd_fgsm.py:fashion_mnist,quick --workdir=runs/smoothing_pgd_fgsm
  python -m experiments.table1 --rows=smoothing_pgd_fgsm --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/smoothing_pgd_fgsm.json):
training took 77 s, alone on the cores; clean 83.0 % on the full test
set; on the first 500 test images, natural 85.0 %, PGD-L∞ 66.4 %, AutoAttack standard
63.2 %, worst case over the standard suite and AutoAttack 56.4 %.

Without ',quick' the Fashion-MNIST budget is 10 epochs (about ten times the time above);
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing_pgd_fgsm', arg)
