"""The seeded, checkpointed training loop. It takes a built `Experiment` (see `experiment.py`).

What it guarantees:
- one writer per work directory (a lock naming the holder);
- a resumed run continues bit-identically from the newest intact checkpoint, and a config that
  would train something else is refused before anything is touched;
- a checkpoint is written only once the loss computed from its parameters is known to be finite,
  so the checkpoint a `NonFiniteLossError` names loads and gives finite logits.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import jax
import numpy as np
from tqdm import tqdm

from jaxrobust import backend
from jaxrobust import keys
from jaxrobust.data import epoch_batches, prefetch
from jaxrobust.evaluation.accuracy import NonFiniteLogitsError, clean_accuracy
from jaxrobust.models import make_logits_fn
from jaxrobust.train.checkpoint import Checkpointer, NoCheckpointError
from jaxrobust.train.config import ConfigError
from jaxrobust.train.experiment import Experiment, build_experiment
from jaxrobust.train.guard import OverfitGuard
from jaxrobust.train.metrics import JsonlWriter
from jaxrobust.train.objectives import Objective
from jaxrobust.train.parallel import ParallelStep, make_parallel_step
from jaxrobust.train.step import make_train_step
from jaxrobust.train.workdir import (
  claim_workdir,
  has_final_row,
  last_logged_step,
  record_config,
  trim_metrics,
)


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; the last good checkpoint is left intact."""


StepRunner = Callable[[Any, Any, jax.Array, int], tuple[Any, dict]]


def make_step_runner(
  objective: Objective,
  mode: str,
  *,
  pad: int = 0,
  flip: bool = False,
  dispatch: str = 'auto',
  warmup: Objective | None = None,
  warmup_steps: int = 0,
) -> tuple[ParallelStep, StepRunner]:
  """(pstep, run): the parallel step and `run(placed, batch, key, step) -> (placed, metrics)`.

  For an objective with branches (the mixed one), dispatch 'switch' compiles one step that picks
  the branch by `lax.switch`; 'host' draws the branch on the host with the objective's own
  `choose_branch` from the same step key and runs a step compiled for that branch alone
  (compiled on first use); 'auto' = 'host' on the CPU, whose conditionals run convolution
  gradients slowly (docs/performance.md), else 'switch'. Steps below `warmup_steps` run the
  `warmup` objective's step instead (a program of its own, so the step number stays on the host).
  """
  build = lambda obj, branch: make_parallel_step(
    lambda ax: make_train_step(obj, axis_name=ax, pad=pad, flip=flip, branch=branch), mode
  )
  pstep = build(objective, None)
  if dispatch == 'auto':
    dispatch = 'host' if backend.cpu_paths() else 'switch'
  if objective.num_branches == 1 or dispatch == 'switch':
    run = lambda placed, batch, key, step: pstep.step(placed, batch, key)
  else:
    choose_branch = objective.choose_branch
    assert choose_branch is not None, 'an objective with branches chooses one'
    choose = jax.jit(lambda key, step: choose_branch(keys.step_keys(key, step).objective))
    per_branch = {}

    def run(placed, batch, key, step):
      b = int(choose(key, step))
      if b not in per_branch:
        per_branch[b] = build(objective, b)
      return per_branch[b].step(placed, batch, key)

  if warmup is None or not warmup_steps:
    return pstep, run
  warm = build(warmup, None)
  after = run
  run = lambda placed, batch, key, step: (
    warm.step(placed, batch, key) if step < warmup_steps else after(placed, batch, key, step)
  )
  return pstep, run


# Batches placed on the devices ahead of the step that uses them (`data.prefetch`): 2 keeps the
# next two in flight while a step runs. The batches and their order do not depend on it.
PREFETCH = 2


def _first(tree):
  """Metrics of device 0 (all devices agree after pmean)."""
  return jax.tree.map(lambda a: np.asarray(a).reshape(-1)[0].item(), tree)


def _host_tree(pstep: ParallelStep, placed) -> dict:
  return jax.tree.map(np.asarray, pstep.get_state(placed).to_checkpoint())


def _batches(exp: Experiment, start: int):
  """The local slices of the global batches from step `start` on (data order from the seed)."""
  lp, ds = exp.loop, exp.dataset
  lb = lp.batch_size // jax.process_count()
  pid = jax.process_index()
  step = start
  while True:
    epoch, b = divmod(step, lp.steps_per_epoch)
    for x, y in epoch_batches(
      exp.keys.data, epoch, ds.train_images, ds.train_labels, lp.batch_size, start_batch=b
    ):
      yield epoch, {'image': x[pid * lb : (pid + 1) * lb], 'label': y[pid * lb : (pid + 1) * lb]}
      step += 1


def train(
  exp: Experiment,
  workdir: str,
  *,
  progress: bool = True,
  allow_config_change: bool = False,
  require_checksums: bool = False,
) -> dict[str, Any]:
  """Trains `exp`, checkpointing into `workdir`, then reports clean test accuracy.

  Resumes from the newest intact checkpoint in `workdir/checkpoints`, so a killed run continues
  bit-identically (data order and step keys are functions of seed and step).

  Args:
    exp: the built experiment.
    workdir: output directory: config.json, metrics.jsonl, checkpoints/.
    progress: show a tqdm bar.
    allow_config_change: resume even when the stored config trains something else.
    require_checksums: refuse to resume from a checkpoint without a checksum.

  Returns:
    dict with 'state' (TrainState), 'model', 'dataset', 'test_accuracy', 'steps', 'train_time_s'
    and 'trained_from_step' (the step this process resumed from: its train_time_s covers the
    steps after it, 0 for a whole run).

  Raises:
    WorkdirLockedError: another live run holds `workdir`.
    ConfigMismatchError: `workdir` holds a run of another config.
    NonFiniteLossError: when the loss or the final logits are NaN/inf; the checkpoint it names
      is the newest one, and it is good.
  """
  is_main = jax.process_index() == 0
  lock = claim_workdir(workdir, exp.config, allow_config_change=allow_config_change, writer=is_main)
  try:
    return _run(exp, workdir, progress=progress and is_main, require_checksums=require_checksums)
  finally:
    if lock is not None:
      lock.release()


def _run(exp: Experiment, workdir: str, *, progress: bool, require_checksums: bool) -> dict[str, Any]:
  lp = exp.loop
  state = exp.init_state()
  ckpt = Checkpointer(
    os.path.join(workdir, 'checkpoints'), lp.keep_checkpoints, require_checksums=require_checksums
  )
  writer = JsonlWriter(workdir)
  start = 0
  try:
    tree, _, start = ckpt.restore_latest_intact(state.to_checkpoint())
    state = state.from_checkpoint(tree)
    if progress:
      print(f'resumed from {ckpt.directory} at step {start}')
  except NoCheckpointError:
    done = last_logged_step(writer.path) if writer.enabled else 0
    if done > 0:
      # Retraining from step 0 would trim the metrics of the steps already done: refuse, naming
      # what is missing, before anything is written.
      raise NoCheckpointError(
        f'{ckpt.directory} holds no intact checkpoint, but {writer.path} records training up to '
        f'step {done:g}: refusing to start again from step 0 over that run. Restore the '
        'checkpoints, or use a new work directory to start over.'
      ) from None
  if start > lp.stop_at_step:
    # The config asks for fewer steps than the checkpoint holds: evaluating the longer-trained
    # state as this config's result would be silently wrong.
    raise ConfigError(
      f'config.train: this run stops at step {lp.stop_at_step}, but {ckpt.directory} holds a checkpoint '
      f'at step {start}; use the longer budget, or a new work directory'
    )
  if writer.enabled:
    # Every check of the work directory has passed: only now is anything written to it.
    record_config(workdir, exp.config.to_json_best_effort(indent=2))
    trim_metrics(writer.path, start)

  guard = OverfitGuard(exp, workdir, state.to_checkpoint()) if exp.guard is not None else None
  stop_at = lp.stop_at_step
  if guard is not None and guard.stopped_at is not None:
    stop_at = start  # the guard stopped this run after a collapse; its result is already saved
  pstep, run_step = make_step_runner(
    exp.objective,
    lp.parallel,
    pad=lp.pad,
    flip=lp.flip,
    dispatch=lp.branch_dispatch,
    warmup=exp.warmup,
    warmup_steps=lp.clean_steps,
  )
  placed = pstep.put_state(state)

  def last_good() -> str:
    s = ckpt.latest_step()
    return (
      f'The last good checkpoint (step {s}) in {ckpt.directory} is left intact.'
      if s is not None
      else f'No checkpoint was written in {ckpt.directory} yet.'
    )

  pending = None  # (step, host state): saved once the loss computed from it is known finite
  t0 = time.time()
  logged = []
  bar = tqdm(
    total=lp.stop_at_step,
    initial=start,
    disable=not progress,
    desc='train',
    mininterval=2.0,
    dynamic_ncols=True,
  )
  step = start
  # Batches are placed on the devices (sharded as the step takes them) PREFETCH steps ahead.
  batches = prefetch(_batches(exp, start), lambda eb: (eb[0], pstep.put_batch(eb[1])), PREFETCH)
  while step < stop_at:
    epoch, batch = next(batches)
    placed, m = run_step(placed, batch, exp.keys.train, step)
    m = _first(m)
    if not np.isfinite(m['loss']):
      raise NonFiniteLossError(
        f'training loss is {m["loss"]} at step {step} (epoch {epoch}); stopping. {last_good()}'
      )
    if pending is not None:
      ckpt.save(*pending, {'step': pending[0], 'config': exp.config.to_dict()})
      pending = None
    step += 1
    logged.append(m)
    bar.update(1)
    if step % lp.log_every == 0 or step == lp.total_steps:
      _log(writer, bar, logged, step, epoch, time.time() - t0)
      logged = []
    if step % lp.checkpoint_every == 0 or step == lp.stop_at_step:
      pending = (step, _host_tree(pstep, placed))
    if guard is not None and step % lp.steps_per_epoch == 0:
      tree = _host_tree(pstep, placed)
      acc, stop = guard.check(step // lp.steps_per_epoch, step, tree, state.from_checkpoint(tree).variables)
      writer.write(
        step,
        guard_robust_accuracy=acc,
        guard_best_accuracy=guard.best_accuracy,
        guard_best_epoch=guard.best_epoch,
      )
      if stop:
        bar.write(
          f'guard: robust accuracy {acc:.3f} fell more than {guard.drop} below the best '
          f'({guard.best_accuracy:.3f}, epoch {guard.best_epoch}); stopping at step {step}'
        )
        break
  bar.close()
  train_time = time.time() - t0
  final_tree = _host_tree(pstep, placed)
  if guard is not None and guard.best_tree is not None:
    # The run's result is the best epoch's state (Wong et al.'s early stopping).
    final_tree = guard.best_tree
    if start < step:
      pending = (step, final_tree)
    guard.close()
  state = state.from_checkpoint(final_tree)
  try:
    test_acc = clean_accuracy(
      make_logits_fn(exp.model, state.variables),
      exp.dataset.test_images,
      exp.dataset.test_labels,
      batch_size=lp.eval_batch_size,
      key=jax.random.fold_in(exp.keys.train, keys.TAG_FINAL_EVAL),
    )
  except NonFiniteLogitsError as e:
    raise NonFiniteLossError(
      f'the trained model gives non-finite logits at step {step}: {e}. {last_good()}'
    ) from e
  if pending is not None:
    ckpt.save(*pending, {'step': pending[0], 'config': exp.config.to_dict()})
  # The wall time covers this process's steps only: a resumed run says where it started, so its
  # time is never read as the whole run's.
  # A finished run resumed at its last step trains nothing: its final row is already there.
  if not (start == step and has_final_row(writer.path, step)):
    writer.write(step, test_accuracy=test_acc, train_time_s=train_time, trained_from_step=start)
  ckpt.close()
  return {
    'state': state,
    'model': exp.model,
    'dataset': exp.dataset,
    'test_accuracy': test_acc,
    'steps': step,
    'train_time_s': train_time,
    'trained_from_step': start,
  }


def _log(writer: JsonlWriter, bar, logged: list[dict], step: int, epoch: int, elapsed: float) -> None:
  # Means per metric over the steps that report it (a clean warm-up reports other metrics).
  names = dict.fromkeys(k for a in logged for k in a)
  mean = {k: float(np.mean([a[k] for a in logged if k in a])) for k in names}
  writer.write(step, epoch=epoch, elapsed_s=elapsed, **{f'train_{k}': v for k, v in mean.items()})
  acc_key = 'accuracy' if 'accuracy' in mean else 'adv_accuracy'
  bar.set_postfix(
    loss=f'{mean["loss"]:.3f}',
    **{acc_key.replace('accuracy', 'acc'): f'{mean.get(acc_key, float("nan")):.3f}'},
  )


def train_and_evaluate(
  config,
  workdir: str,
  *,
  ds=None,
  progress: bool = True,
  allow_config_change: bool = False,
  require_checksums: bool = False,
) -> dict[str, Any]:
  """`train(build_experiment(config, dataset=ds), workdir, ...)`: a run from its config."""
  experiment = build_experiment(config, dataset=ds)
  return train(
    experiment,
    workdir,
    progress=progress,
    allow_config_change=allow_config_change,
    require_checksums=require_checksums,
  )
