"""Clean training of the small CNN on Fashion-MNIST (the default config).

  python -m experiments.train --config=experiments/configs/fashion_mnist_cnn.py --workdir=runs/cnn

Results: results/demo/ (docs/results.md)."""

from jaxrobust.train import default_config


def get_config(arg=None):
  if arg:
    raise ValueError(f'fashion_mnist_cnn.py takes no argument, got {arg!r}')
  c = default_config()
  c.train.checkpoint_every = 200
  return c
