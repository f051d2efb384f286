"""Certified row: Gaussian augmentation at σ = 0.25, the base classifier of a smoothed one.

  python -m experiments.train --config=experiments/configs/gaussian_025.py:fashion_mnist --workdir=runs/certified/fashion_mnist/gaussian_025
  python -m experiments.certify --config=experiments/configs/gaussian_025.py:fashion_mnist --workdir=runs/certified/fashion_mnist/gaussian_025 --method=smoothing

Without ',quick' the Fashion-MNIST budget is 10 epochs; ':cifar10' trains WRN-34-1 on CIFAR-10.
"""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('gaussian_025', arg)
