"""Orbax checkpoints that prove their integrity: a checksum of every saved step, verified on
restore, and a fall-back to the newest intact step when the newest one is damaged.

A damaged step (a truncated or missing file, a checksum that does not match) is never deleted: it
is moved aside into `<directory>.corrupt/` for inspection, and a warning names it.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint step could not be restored intact (its checksum or its files are wrong)."""


class NoCheckpointError(FileNotFoundError):
  """No intact checkpoint exists in the directory."""


def tree_checksum(tree: Any) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes (host copies)."""
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    a = np.ascontiguousarray(np.asarray(leaf))
    h.update(f'{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}|'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


class Checkpointer:
  """Wraps `ocp.CheckpointManager`; only process 0 writes when `enabled` is left at its default.

  Args:
    directory: where checkpoints go (created).
    max_to_keep: how many checkpoints to keep (>= 1).
    enabled: whether this process writes.
  """

  def __init__(self, directory: str, max_to_keep: int = 3, enabled: bool | None = None):
    if max_to_keep < 1:
      raise ValueError(f'max_to_keep (keep_checkpoints) must be >= 1, got {max_to_keep}: 0 would delete every checkpoint')
    self.directory = os.path.abspath(directory)
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._mngr = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, step: int, tree: Any, meta: dict) -> None:
    """Saves the array tree and a JSON dict at `step` with the tree's checksum, and waits."""
    meta = dict(meta, checksum=tree_checksum(tree))
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                   meta=ocp.args.JsonSave(meta)))
    self._mngr.wait_until_finished()

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores `step` (the latest by default) into the structure of `target` (never without one:
    optax states would come back as lists) and verifies its checksum.

    Raises:
      NoCheckpointError: when there is no checkpoint at all.
      CheckpointError: when the step's files cannot be read or its checksum does not match.
    """
    step = self._mngr.latest_step() if step is None else step
    if step is None:
      raise NoCheckpointError(f'no checkpoint has been written in {self.directory} yet')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      r = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                            meta=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds for bad files
      raise CheckpointError(f'checkpoint step {step} in {self.directory} cannot be read: '
                            f'{type(e).__name__}: {str(e)[:300]}') from e
    tree, meta = r['state'], dict(r['meta'] or {})
    stored = meta.get('checksum')
    if stored is None:
      warnings.warn(f'checkpoint step {step} in {self.directory} has no checksum (written by an '
                    f'older version); it is restored unverified', stacklevel=2)
    elif tree_checksum(tree) != stored:
      raise CheckpointError(f'checkpoint step {step} in {self.directory} fails its checksum: '
                            f'its bytes changed after it was saved')
    return tree, meta

  def restore_latest_intact(self, target: Any) -> tuple[Any, dict, int]:
    """The newest step that restores intact: damaged newer steps are moved aside with a warning.

    Returns:
      (tree, meta, step).

    Raises:
      NoCheckpointError: when no step restores intact (the damaged ones are kept aside).
    """
    steps = self.all_steps()
    if not steps:
      raise NoCheckpointError(f'no checkpoint has been written in {self.directory} yet')
    for step in reversed(steps):
      try:
        tree, meta = self.restore(target, step)
        return tree, meta, step
      except CheckpointError as e:
        kept = self._set_aside(step)
        warnings.warn(f'skipping damaged checkpoint step {step} ({e}); kept aside in {kept}', stacklevel=2)
    raise NoCheckpointError(f'no intact checkpoint in {self.directory}: every step was damaged and '
                            f'set aside in {self.directory}.corrupt')

  def _set_aside(self, step: int) -> str:
    """Moves a damaged step out of the manager's directory, never deleting it."""
    src = os.path.join(self.directory, str(step))
    dst_dir = self.directory + '.corrupt'
    os.makedirs(dst_dir, exist_ok=True)
    dst, n = os.path.join(dst_dir, str(step)), 1
    while os.path.exists(dst):
      dst, n = os.path.join(dst_dir, f'{step}.{n}'), n + 1
    if os.path.exists(src):
      os.replace(src, dst)
    self._mngr.reload()
    return dst

  def close(self):
    self._mngr.close()
