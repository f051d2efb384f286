"""The study's defenses as training configs: library API, shipped inside the package.

  >>> from jaxrobust import configs
  >>> config = configs.get('pgd_at', 'cifar10')          # WRN-34-1, the study's PGD-AT recipe
  >>> config = configs.get('lwta', 'fashion_mnist', 'quick')  # one epoch, as `make demo`
  >>> configs.names()                                      # every Table 1 defense

Each is an `ml_collections.ConfigDict` that `jaxrobust.train.build_experiment` takes, strict about
unknown fields; change a field before building (`config.train.num_epochs = 5.0`). A config file
of your own still works by path with the training command (`--config=path/to/config.py`).
"""

from __future__ import annotations

import ml_collections

from jaxrobust.configs.defenses import DATASETS, DEFENSES, VARIANTS, defense_config

__all__ = ['DATASETS', 'VARIANTS', 'get', 'names']


def names() -> list[str]:
  """The defenses' names (Table 1's rows)."""
  return list(DEFENSES)


def get(name: str, dataset: str = 'fashion_mnist', *variants: str) -> ml_collections.ConfigDict:
  """The training config of defense `name` on `dataset` ('fashion_mnist', 'cifar10' or
  'synthetic'), with optional variants ('quick': a one-epoch budget; 'demo'; 'authors': the LWTA
  authors' recipe).

  Raises:
    ValueError: for an unknown defense, dataset or variant, naming the known ones.
  """
  if dataset not in DATASETS:
    raise ValueError(f'unknown dataset {dataset!r}; known: {", ".join(DATASETS)}')
  return defense_config(name, ','.join((dataset, *variants)))
