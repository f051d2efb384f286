"""The per-device training step, generic in its objective.

A step is `train_step(state, batch, key) -> (state, metrics)`: pure, jit-able, and written for one
device with an optional `axis_name`, so the same function runs alone, under `jax.shard_map`, or
under `jax.pmap` (see `parallel.py`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxrobust import keys
from jaxrobust.data import augment as augment_images
from jaxrobust.data import index_keys, to_float
from jaxrobust.train.objectives import Objective


def shard_offset(n_local: int, axis_name: str | None):
  """Global index of this device's first example (0 without a mapped axis)."""
  return 0 if axis_name is None else lax.axis_index(axis_name) * n_local


def make_train_step(
  objective: Objective,
  *,
  axis_name: str | None = None,
  pad: int = 0,
  flip: bool = False,
  branch: int | None = None,
) -> Callable:
  """Builds the per-device step.

  Args:
    objective: the training objective (see `objectives.py`).
    axis_name: the mapped axis for data parallelism, or None on one device.
    pad, flip: on-device augmentation (random crop after `pad` pixels of padding; horizontal flip).
    branch: for objectives with branches, compile this branch only (the host chose it with
      `objective.choose_branch` from the same key).

  Returns:
    `train_step(state, batch, key) -> (state, metrics)`: batch = {'image': uint8, 'label': int};
    the step's keys are `keys.step_keys(key, state.step)`, so a resumed run draws the same numbers.
  """
  fixed = {} if branch is None else {'branch': branch}

  def train_step(state, batch, key):
    k = keys.step_keys(key, state.step)
    x = to_float(batch['image'])
    y = batch['label']
    n = x.shape[0]
    offset = shard_offset(n, axis_name)
    if pad or flip:
      x = augment_images(index_keys(k.augment, n, offset), x, pad=pad, flip=flip)
    example_keys = index_keys(k.examples, n, offset)

    if objective.update_delta is not None:
      return _replay_step(objective, state, x, y, k.objective, example_keys, axis_name)

    step = {'step': state.step} if objective.takes_step else {}

    def loss_fn(params):
      return objective.loss_fn(
        params,
        state.batch_stats,
        x,
        y,
        k.objective,
        example_keys=example_keys,
        axis_name=axis_name,
        **fixed,
        **step,
      )

    (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return _apply(state, grads, batch_stats, dict(metrics, loss=loss), axis_name)

  return train_step


def _apply(state, grads, batch_stats, metrics, axis_name):
  """One optimizer update from this device's gradients (averaged over devices first)."""
  if axis_name is not None:
    # Per-device gradients of the per-device mean loss; their mean is the global-batch gradient.
    grads, metrics, batch_stats = lax.pmean((grads, metrics, batch_stats), axis_name)
  metrics['grad_norm'] = optax.tree.norm(grads)
  return state.apply_gradients(grads=grads, batch_stats=batch_stats), metrics


def _replay_step(objective: Objective, state, x, y, key, example_keys, axis_name):
  """Free adversarial training's m replays of one batch: each replay differentiates the loss in
  the parameters and in the carried perturbation δ at once, updates the parameters, and moves δ.
  The replays are unrolled (a few of them; inside a rolled loop the CPU backend runs the input
  gradients of a plain `nn.Conv` slowly, docs/performance.md item 1). Metrics are those of the
  last replay."""
  update_delta = objective.update_delta
  assert update_delta is not None, 'free adversarial training needs an objective that moves delta'
  delta = jnp.zeros_like(x)
  for r in range(objective.replays):
    k = jax.random.fold_in(jax.random.fold_in(key, keys.TAG_FREE_REPLAY), r)

    def loss_fn(params, delta):
      return objective.loss_fn(
        params, state.batch_stats, x, y, k, example_keys=example_keys, axis_name=axis_name, delta=delta
      )

    (loss, (batch_stats, metrics)), (grads, g_delta) = jax.value_and_grad(
      loss_fn, argnums=(0, 1), has_aux=True
    )(state.params, delta)
    state, metrics = _apply(state, grads, batch_stats, dict(metrics, loss=loss), axis_name)
    delta = update_delta(delta, g_delta)  # per example: this device's shard only
  return state, metrics
