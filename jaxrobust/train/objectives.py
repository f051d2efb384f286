"""Training objectives: pure functions of (params, batch_stats, x, y, key).

Each factory returns `objective(params, batch_stats, x, y, key, *, example_keys, axis_name)
-> (loss, (new_batch_stats, metrics))`, where x is a float batch in [0,1] on one device,
`example_keys` holds one key per example (for sharding-invariant attack starts) and `key` drives
the model's stochastic layers.
"""
from __future__ import annotations

from jaxrobust.train.step import accuracy, cross_entropy, model_forward


def clean_objective(apply_fn, num_classes: int, *, label_smoothing: float = 0.0):
  """Cross-entropy on clean inputs, with optional label smoothing ỹ = (1−ε)·onehot + ε/K.

  References:
    Szegedy et al. 2016, "Rethinking the Inception Architecture" (label smoothing), arXiv:1512.00567
  """
  def objective(params, batch_stats, x, y, key, *, example_keys=None, axis_name=None):
    del example_keys, axis_name
    logits, bs = model_forward(apply_fn, params, batch_stats, x, key, train=True)
    loss = cross_entropy(logits, y, num_classes, label_smoothing)
    return loss, (bs, {'accuracy': accuracy(logits, y)})
  return objective


def build_objective(config, apply_fn, num_classes: int):
  """The objective named by config.train.objective, with its hyperparameters from the config.

  Raises:
    ValueError: for an unknown objective name, listing the known ones.
  """
  name = config.train.get('objective', 'clean')
  ls = config.train.get('label_smoothing', 0.0)
  if name == 'clean':
    return clean_objective(apply_fn, num_classes, label_smoothing=ls)
  raise ValueError(f'unknown training objective {name!r}; known: {", ".join(OBJECTIVES)}')


OBJECTIVES = ('clean',)
