"""Certified row: interval-bound training (Gowal et al.), the bracket's L∞ lower bound.

  python -m experiments.train --config=experiments/configs/interval.py:fashion_mnist --workdir=runs/certified/fashion_mnist/interval
  python -m experiments.certify --config=experiments/configs/interval.py:fashion_mnist --workdir=runs/certified/fashion_mnist/interval --method=intervals

Without ',quick' the Fashion-MNIST budget is 10 epochs; ':cifar10' trains WRN-34-1 on CIFAR-10.
"""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('interval', arg)
