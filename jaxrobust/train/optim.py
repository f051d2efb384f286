"""Optimisers (SGD with momentum, Adam) with coupled weight decay and LR schedules."""

from __future__ import annotations

from typing import Sequence

import jax
import optax


def make_schedule(
  name: str,
  base_lr: float,
  total_steps: int,
  steps_per_epoch: int,
  *,
  boundaries_epochs: Sequence[int] = (),
  factor: float = 0.1,
  halving_start_epoch: int = 75,
) -> optax.Schedule:
  """Learning-rate schedule as an optax schedule.

  Args:
    name: 'constant'; 'cosine' (to 0 over total_steps); 'step' (× factor at each epoch in
      boundaries_epochs); 'halving' (the LWTA study's 0.1·0.5^(epoch−74) from epoch 75).
  """
  if name == 'constant':
    return optax.constant_schedule(base_lr)
  if name == 'cosine':
    return optax.cosine_decay_schedule(base_lr, max(total_steps, 1))
  if name == 'step':
    return optax.piecewise_constant_schedule(
      base_lr, {int(e * steps_per_epoch): factor for e in boundaries_epochs}
    )
  if name == 'halving':
    start = halving_start_epoch - 1
    return lambda step: base_lr * 0.5 ** jax.numpy.maximum(step // steps_per_epoch - start + 1, 0)
  raise ValueError(f'unknown schedule {name!r}; use constant, cosine, step or halving')


def decay_mask(params, no_decay: Sequence[str] = ('noise_scale',)):
  """True for parameters that get weight decay: all but those whose path names a `no_decay` entry."""

  def keep(path, _):
    names = [str(getattr(k, 'key', k)) for k in path]
    return not any(nd in n for n in names for nd in no_decay)

  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(
  name: str,
  schedule: optax.Schedule,
  *,
  momentum: float = 0.9,
  weight_decay: float = 0.0,
  nesterov: bool = False,
  no_decay: Sequence[str] = ('noise_scale',),
) -> optax.GradientTransformation:
  """SGD(momentum) or Adam with coupled L2 weight decay (added to the gradient), as in PyTorch.

  Parameters whose path names an entry of `no_decay` (PNI's noise scale) are not decayed.
  """
  if name == 'sgd':
    opt = optax.sgd(schedule, momentum=momentum, nesterov=nesterov)
  elif name == 'adam':
    opt = optax.adam(schedule)
  else:
    raise ValueError(f'unknown optimizer {name!r}; use sgd or adam')
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay, lambda p: decay_mask(p, no_decay)), opt)
  return opt
