"""The per-device training step, generic in its objective, and clean evaluation.

A step is `train_step(state, batch, key) -> (state, metrics)`: pure, jit-able, and written for one
device with an optional `axis_name`, so the same function runs alone, under `jax.shard_map`, or
under `jax.pmap` (see `parallel.py`).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxrobust.data import augment as augment_lib
from jaxrobust.data import per_example_keys, to_float
from jaxrobust.models.common import STOCHASTIC

# objective(params, batch_stats, x, y, key, *, example_keys, axis_name) -> (loss, (batch_stats, metrics))
# `key` is the same on every device (policy draws such as the mixed-attack branch); stochastic
# layers take `device_key(key, axis_name)`, and attack starts take the per-example keys.
Objective = Callable[..., tuple[jax.Array, tuple[Any, dict]]]


def shard_offset(n_local: int, axis_name: str | None):
  """Global index of this device's first example (0 without a mapped axis)."""
  return 0 if axis_name is None else lax.axis_index(axis_name) * n_local


def device_key(key, axis_name: str | None):
  """A key of this device's own (model noise differs across shards), or `key` on one device."""
  return key if axis_name is None else jax.random.fold_in(key, lax.axis_index(axis_name))


def model_forward(apply_fn, params, batch_stats, x, key, *, train: bool):
  """Runs the model; in train mode returns the updated batch statistics too."""
  variables = {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}
  if train and batch_stats:
    logits, new = apply_fn(variables, x, train=True, rngs={STOCHASTIC: key}, mutable=['batch_stats'])
    return logits, new['batch_stats']
  return apply_fn(variables, x, train=train, rngs={STOCHASTIC: key}), batch_stats


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy against (optionally smoothed) one-hot labels."""
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def accuracy(logits, labels):
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def step_keys(key, step):
  """(k_aug, k_obj, k_ex): the keys a step draws from the run's key and its index, so that the host
  can recompute what a step will do (the mixed objective's branch) before running it."""
  k_aug, k_obj, k_ex = jax.random.split(jax.random.fold_in(key, step), 3)
  return k_aug, k_obj, k_ex


def make_train_step(objective: Objective, *, axis_name: str | None = None,
                    augment: dict | None = None, branch: int | None = None) -> Callable:
  """Builds the per-device step.

  Args:
    objective: the training objective (see `objectives.py`).
    axis_name: the mapped axis for data parallelism, or None on one device.
    augment: {'pad': int, 'flip': bool} for on-device augmentation, or None.
    branch: for objectives with branches (`objective.num_branches`), compile this branch only.

  Returns:
    `train_step(state, batch, key) -> (state, metrics)`: batch = {'image': uint8, 'label': int};
    the step's key is fold_in(key, state.step), so a resumed run draws the same numbers.
  """
  def train_step(state, batch, key):
    k_aug, k_obj, k_ex = step_keys(key, state.step)
    x = to_float(batch['image'])
    y = batch['label']
    n = x.shape[0]
    offset = shard_offset(n, axis_name)
    if augment and (augment.get('pad', 0) or augment.get('flip', False)):
      x = augment_lib(per_example_keys(k_aug, n, offset), x, pad=augment.get('pad', 0),
                      flip=augment.get('flip', False))
    example_keys = per_example_keys(k_ex, n, offset)

    fixed = {} if branch is None else {'branch': branch}

    def loss_fn(params):
      return objective(params, state.batch_stats, x, y, k_obj, example_keys=example_keys,
                       axis_name=axis_name, **fixed)

    (loss, (batch_stats, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    metrics = dict(metrics, loss=loss)
    if axis_name is not None:
      # Per-device gradients of the per-device mean loss; their mean is the global-batch gradient.
      grads, metrics, batch_stats = lax.pmean((grads, metrics, batch_stats), axis_name)
    metrics['grad_norm'] = optax.tree.norm(grads)
    state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
    return state, metrics

  return train_step


@functools.partial(jax.jit, static_argnames=('apply_fn',))
def _predict_batch(apply_fn, variables, images, key):
  return apply_fn(variables, to_float(images), train=False, rngs={STOCHASTIC: key})


def evaluate_clean(apply_fn, variables, images, labels, *, batch_size: int = 500,
                   key: jax.Array | None = None) -> float:
  """Clean accuracy over a split, batch by batch (one stochastic pass per batch)."""
  key = jax.random.key(0) if key is None else key
  correct = 0
  for i in range(0, len(images), batch_size):
    logits = _predict_batch(apply_fn, variables, images[i:i + batch_size], jax.random.fold_in(key, i))
    correct += int(jnp.sum(jnp.argmax(logits, -1) == labels[i:i + batch_size]))
  return correct / max(len(images), 1)
