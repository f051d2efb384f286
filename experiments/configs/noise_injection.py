"""Table 1 row: Noise injection (PNI).

  python -m experiments.train --config=experiments/configs/noise_injection.py:fashion_mnist,quick --workdir=runs/noise_injection
  python -m experiments.table1 --rows=noise_injection --epochs=1 --num_test=500 --steps_scale=0.5

Results: results/fashion_mnist/rows/noise_injection.json (docs/results.md).

Without ',quick' the Fashion-MNIST budget is 10 epochs (`python -m experiments.converged`); results: results/converged/fashion_mnist/rows/noise_injection.json (docs/results.md).

The attack follows He et al.'s code (PGD-7 with α = 0.01 at ε = 0.031, scaled to ε, on the
predictions of a train-mode pass; 0.5 clean + 0.5 adversarial cross-entropy); the 10-epoch budget
trains its first 5 epochs clean, as the reference does.

':cifar10' trains WRN-34-1 on CIFAR-10 as the study does (a GPU job).
"""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('noise_injection', arg)
