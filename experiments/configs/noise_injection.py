"""Table 1 row: Noise injection (PNI).

  python -m experiments.train --config=experiments/configs/noise_injection.py:fashion_mnist,quick --workdir=runs/noise_injection
  python -m experiments.table1 --rows=noise_injection --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/noise_injection.json):
training took 196 s, alone on the cores; clean 85.2 % on the full test
set; on the first 500 test images, natural 87.8 %, PGD-L∞ 62.6 %, AutoAttack rand (EOT-20)
60.0 %, worst case over the standard suite (with EOT and transfer) and AutoAttack 50.4 %.

The attack follows He et al.'s code (PGD-7 with α = 0.01 at ε = 0.031, scaled to ε, on the
predictions of a train-mode pass; 0.5 clean + 0.5 adversarial cross-entropy). Without ',quick' the
Fashion-MNIST budget is 10 epochs, the first 5 of them clean as in the reference (about six times
the time above): `python -m experiments.converged --rows=noise_injection` trained it in about 38
min of one core, in two sittings with the other core busy, to clean 87.65 % on the full test set.
Its adaptive suite on the first 1000 test images (ε = 0.1, EOT over 20 draws, majority of 10 draws
per adversarial point; results/converged/fashion_mnist/rows/noise_injection.json): clean 88.3 %,
PGD-20 on one draw 65.4 %, AA-rand 64.4 %, EOT-PGD 61.1 %, transfer from the noise-free network
63.7 %, per-point worst case 60.3 % [57.2, 63.3]; 5.81 h of one core of a 2-core Intel Xeon
(EOT-Square 58 % of it), plus 33 min for the convergence test.
':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('noise_injection', arg)
