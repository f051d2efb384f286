"""Table 1 row: Smoothing + PGD + FGSM + CW + noise injection.

  python -m experiments.train --config=experiments/configs/smoothing_pgd_fgsm_cw_pni.py:fashion_mnist,quick --workdir=runs/smoothing_pgd_fgsm_cw_pni
  python -m experiments.table1 --rows=smoothing_pgd_fgsm_cw_pni --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/smoothing_pgd_fgsm_cw_pni.json):
training took 119 s, alone on the cores; clean 84.9 % on the full test
set; on the first 500 test images, natural 86.2 %, PGD-L∞ 61.2 %, AutoAttack rand (EOT-20)
59.2 %, worst case over the standard suite (with EOT and transfer) and AutoAttack 51.8 %.

Without ',quick' the Fashion-MNIST budget is 10 epochs (about ten times the time above):
`python -m experiments.converged --rows=smoothing_pgd_fgsm_cw_pni` trained it in 23 min on the two
cores of a 2-core Intel Xeon, in two sittings, to clean 88.77 % on the full test set. Its adaptive
suite on the first 1000 test images (ε = 0.1, EOT over 20 draws, majority of 10 draws per
adversarial point; results/converged/fashion_mnist/rows/smoothing_pgd_fgsm_cw_pni.json): clean
89.2 %, PGD-20 on one draw 69.1 %, AutoAttack standard on one draw 70.4 %, AA-rand 68.7 %, EOT-PGD
67.2 %, EOT-Square 77.0 %, transfer from the noise-free network 68.5 %, per-point worst case
66.2 % [63.2, 69.1]; 5.63 h of one core of that Intel Xeon (EOT-Square 57 % of it), plus 31 min
for the convergence test (not converged: doubling draws and steps broke one more of 100 images).
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('smoothing_pgd_fgsm_cw_pni', arg)
