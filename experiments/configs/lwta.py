"""Table 1 row: Stochastic LWTA (PGD-AT + ELBO).

Fashion-MNIST + small CNN by default (10 epochs; ',quick' = 1 epoch, about 6 minutes on 2 CPU
cores); ':cifar10' trains
WRN-34-1 on CIFAR-10 as the study (GPU: hours).

  python -m experiments.train --config=experiments/configs/lwta.py:fashion_mnist,quick --workdir=runs/lwta
"""
from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('lwta', arg)
