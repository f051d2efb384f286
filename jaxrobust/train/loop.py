"""train_and_evaluate: the seeded, checkpointed training loop that every experiment runs."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from jaxrobust.data import Dataset, epoch_batches, load_dataset
from jaxrobust.models import create_model
from jaxrobust.train import optim
from jaxrobust.train.checkpoint import Checkpointer
from jaxrobust.train.metrics import JsonlWriter
from jaxrobust.train.parallel import make_parallel_step
from jaxrobust.train.state import TrainState, create_train_state
from jaxrobust.train.step import evaluate_clean, make_train_step, step_keys


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; the last good checkpoint is left intact."""


def load_data(config) -> Dataset:
  d = config.data
  return load_dataset(d.name, d.get('data_dir') or None, seed=config.seed,
                      num_train=d.get('num_train') or None, num_test=d.get('num_test') or None,
                      synthetic=dict(d.get('synthetic', {})))


def build_model(config, ds: Dataset, *, bn_axis_name: str | None = None):
  """The model named in config.model, with the dataset's classes and normalisation."""
  kwargs = dict(config.model.get('kwargs', {}))
  if config.model.get('normalize', 'dataset') == 'dataset':
    mean, std = ds.channel_stats()
    kwargs.update(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
  model = create_model(config.model.name, num_classes=ds.num_classes, **kwargs)
  if bn_axis_name is not None and hasattr(model, 'bn_axis_name'):
    model = model.clone(bn_axis_name=bn_axis_name)
  return model


def steps_for(config, ds: Dataset) -> tuple[int, int]:
  """(steps per epoch, total steps) for the global batch size."""
  spe = ds.num_train // config.train.batch_size
  if spe < 1:
    raise ValueError(f'batch_size {config.train.batch_size} exceeds the {ds.num_train} training examples')
  total = config.train.get('num_steps', 0) or int(math.ceil(config.train.num_epochs * spe))
  return spe, total


def build_optimizer(config, spe: int, total: int):
  t = config.train
  sched = optim.make_schedule(t.schedule, t.learning_rate, total, spe,
                              boundaries_epochs=tuple(t.get('boundaries_epochs', ())),
                              factor=t.get('schedule_factor', 0.1))
  return optim.make_optimizer(t.optimizer, sched, momentum=t.get('momentum', 0.9),
                              weight_decay=t.get('weight_decay', 0.0),
                              no_decay=tuple(t.get('no_decay', ('noise_scale',))))


def seeded_keys(seed: int) -> dict[str, jax.Array]:
  """One seed -> the init, data-order and training keys (the training key is folded per step)."""
  k_init, k_data, k_train = jax.random.split(jax.random.key(seed), 3)
  return {'init': k_init, 'data': k_data, 'train': k_train}


BRANCH_DISPATCH = ('auto', 'host', 'switch')


def make_step_runner(objective, mode: str, augment: dict, dispatch: str = 'auto'):
  """(pstep, run): the parallel step and `run(placed, batch, key, step) -> (placed, metrics)`.

  For an objective with branches (the mixed one), dispatch 'switch' compiles one step that picks
  the branch by `lax.switch`; 'host' draws the branch on the host from the step's key (the same
  draw) and runs a step compiled for that branch alone, compiling each branch on first use;
  'auto' = 'host' on the CPU, whose conditionals run convolution gradients 2× slower, else 'switch'.

  Raises:
    ValueError: for an unknown dispatch.
  """
  if dispatch not in BRANCH_DISPATCH:
    raise ValueError(f'unknown branch dispatch {dispatch!r}; use one of {BRANCH_DISPATCH}')
  build = lambda branch: make_parallel_step(
      lambda ax: make_train_step(objective, axis_name=ax, augment=augment, branch=branch), mode)
  pstep = build(None)
  if dispatch == 'auto':
    dispatch = 'host' if jax.default_backend() == 'cpu' else 'switch'
  if not hasattr(objective, 'choose_branch') or dispatch == 'switch':
    return pstep, lambda placed, batch, key, step: pstep.step(placed, batch, key)
  choose = jax.jit(lambda key, step: objective.choose_branch(step_keys(key, step)[1]))
  per_branch = {}

  def run(placed, batch, key, step):
    b = int(choose(key, step))
    if b not in per_branch:
      per_branch[b] = build(b)
    return per_branch[b].step(placed, batch, key)
  return pstep, run


def _first(tree):
  """Metrics of device 0 (all devices agree after pmean)."""
  return jax.tree.map(lambda a: np.asarray(a).reshape(-1)[0].item(), tree)


def train_and_evaluate(config, workdir: str, *, ds: Dataset | None = None,
                       progress: bool = True) -> dict[str, Any]:
  """Trains per `config`, checkpointing into `workdir`, then reports clean test accuracy.

  Resumes from the latest checkpoint in `workdir/checkpoints` if there is one, so a killed run
  continues bit-identically (data order and step keys are functions of seed and step).

  Args:
    config: an ml_collections ConfigDict (see experiments/configs/).
    workdir: output directory: config.json, metrics.jsonl, checkpoints/.
    ds: an already loaded dataset (else loaded from config.data).
    progress: show a tqdm bar.

  Returns:
    dict with 'state' (TrainState), 'model', 'dataset', 'test_accuracy', 'steps', 'train_time_s'.

  Raises:
    NonFiniteLossError: when the loss is NaN/inf; no checkpoint is written past the last good one.
  """
  from jaxrobust.train.objectives import build_objective  # objectives import attacks
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  if is_main:
    _write_config(workdir, config.to_json_best_effort(indent=2))
  ds = load_data(config) if ds is None else ds
  mode = config.train.get('parallel', 'none')
  model = build_model(config, ds, bn_axis_name=None if mode == 'none' else 'data')
  spe, total = steps_for(config, ds)
  tx = build_optimizer(config, spe, total)
  keys = seeded_keys(config.seed)
  sample = np.zeros((1,) + ds.image_shape, np.float32)
  state = create_train_state(model, keys['init'], sample, tx)

  ckpt = Checkpointer(os.path.join(workdir, 'checkpoints'), config.train.get('keep_checkpoints', 3))
  start = 0
  if ckpt.latest_step() is not None:
    restored, meta = ckpt.restore(state.to_checkpoint())
    state = state.from_checkpoint(restored)
    start = int(state.step)
    if progress and is_main:
      print(f'resumed from {ckpt.directory} at step {start}')

  objective = build_objective(config, model.apply, ds.num_classes, ds.num_train)
  aug = dict(config.data.get('augment', {}))
  pstep, run_step = make_step_runner(objective, mode, aug, config.train.get('branch_dispatch', 'auto'))
  placed = pstep.put_state(state)
  writer = JsonlWriter(workdir)
  gb = config.train.batch_size
  n_proc, pid = jax.process_count(), jax.process_index()
  if gb % (pstep.num_devices) != 0:
    raise ValueError(f'batch_size {gb} is not divisible by the {pstep.num_devices} devices')
  lb = gb // n_proc
  log_every = config.train.get('log_every', 50)
  ckpt_every = config.train.get('checkpoint_every', 0) or spe
  stop_at = config.train.get('stop_at_step', 0) or total

  def save(step_state, step):
    ckpt.save(step, _state_tree(pstep, step_state), {'step': step, 'config': config.to_dict()})

  t0 = time.time()
  acc = []
  bar = tqdm(total=min(total, stop_at), initial=start, disable=not (progress and is_main),
             desc='train', mininterval=2.0, dynamic_ncols=True)
  step = start
  batches = None
  while step < min(total, stop_at):
    epoch, b = divmod(step, spe)
    if batches is None or b == 0:
      batches = epoch_batches(keys['data'], epoch, ds.train_images, ds.train_labels, gb, start_batch=b)
    x, y = next(batches)
    local = {'image': x[pid * lb:(pid + 1) * lb], 'label': y[pid * lb:(pid + 1) * lb]}
    placed, m = run_step(placed, pstep.put_batch(local), keys['train'], step)
    m = _first(m)
    if not np.isfinite(m['loss']):
      raise NonFiniteLossError(
          f'training loss is {m["loss"]} at step {step} (epoch {epoch}); stopping. The last good '
          f'checkpoint (step {ckpt.latest_step()}) in {ckpt.directory} is left intact.')
    step += 1
    acc.append(m)
    bar.update(1)
    if step % log_every == 0 or step == total:
      mean = {k: float(np.mean([a[k] for a in acc])) for k in acc[0]}
      writer.write(step, epoch=epoch, elapsed_s=time.time() - t0,
                   **{f'train_{k}': v for k, v in mean.items()})
      acc_key = 'accuracy' if 'accuracy' in mean else 'adv_accuracy'
      bar.set_postfix(loss=f'{mean["loss"]:.3f}',
                      **{acc_key.replace('accuracy', 'acc'): f'{mean.get(acc_key, float("nan")):.3f}'})
      acc = []
    if step % ckpt_every == 0 or step == total:
      save(placed, step)
  bar.close()
  train_time = time.time() - t0
  if ckpt.latest_step() != step and step > 0:
    save(placed, step)
  state = state.from_checkpoint(_state_tree(pstep, placed))
  test_acc = evaluate_clean(model.apply, state.variables, ds.test_images, ds.test_labels,
                            batch_size=config.eval.get('batch_size', 500),
                            key=jax.random.fold_in(keys['train'], 10**9))
  writer.write(step, test_accuracy=test_acc, train_time_s=train_time)
  ckpt.close()
  return {'state': state, 'model': model, 'dataset': ds, 'test_accuracy': test_acc,
          'steps': step, 'train_time_s': train_time}


def _write_config(workdir: str, text: str) -> None:
  """Writes config.json; a different config already there is kept as config.json.<n>, so that a
  resumed run with changed settings never erases the record of the earlier ones."""
  path = os.path.join(workdir, 'config.json')
  if os.path.exists(path):
    with open(path) as f:
      if f.read() == text:
        return
    n = 1
    while os.path.exists(f'{path}.{n}'):
      n += 1
    os.replace(path, f'{path}.{n}')
  with open(path, 'w') as f:
    f.write(text)


def _state_tree(pstep, placed: TrainState) -> dict:
  return jax.tree.map(np.asarray, pstep.get_state(placed).to_checkpoint())
