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


class UnverifiedCheckpointError(ValueError):
  """A checkpoint without a checksum, refused because checksums were required. Not damage: the
  step is left where it is."""


class NoCheckpointError(FileNotFoundError):
  """No intact checkpoint exists in the directory."""


class CheckpointMismatchError(ValueError):
  """The checkpoint is intact but holds another model's parameters than the target's."""


def _param_shapes(tree) -> dict[str, tuple]:
  return {
    jax.tree_util.keystr(p): tuple(getattr(a, 'shape', ()))
    for p, a in jax.tree_util.tree_leaves_with_path(tree, is_leaf=lambda x: hasattr(x, 'shape'))
  }


def describe_mismatch(stored: dict[str, tuple], expected: dict[str, tuple], limit: int = 5) -> str:
  """The first missing, unexpected and wrongly shaped keys between two {path: shape} maps."""
  missing = sorted(set(expected) - set(stored))
  unexpected = sorted(set(stored) - set(expected))
  shapes = sorted(k for k in set(stored) & set(expected) if stored[k] != expected[k])
  parts = []
  if missing:
    parts.append(
      f'missing {missing[:limit]}' + (f' (+{len(missing) - limit})' if len(missing) > limit else '')
    )
  if unexpected:
    parts.append(
      f'unexpected {unexpected[:limit]}'
      + (f' (+{len(unexpected) - limit})' if len(unexpected) > limit else '')
    )
  if shapes:
    parts.append('wrong shapes ' + ', '.join(f'{k}: {stored[k]} vs {expected[k]}' for k in shapes[:limit]))
  return '; '.join(parts)


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
    require_checksums: refuse (`UnverifiedCheckpointError`) a checkpoint without a checksum
      instead of restoring it unverified.
  """

  def __init__(
    self,
    directory: str,
    max_to_keep: int = 3,
    enabled: bool | None = None,
    *,
    require_checksums: bool = False,
  ):
    if max_to_keep < 1:
      raise ValueError(
        f'max_to_keep (keep_checkpoints) must be >= 1, got {max_to_keep}: 0 would delete every checkpoint'
      )
    self.directory = os.path.abspath(directory)
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.require_checksums = require_checksums
    # Handlers named up front, so that a step's metadata can be read before anything is restored.
    self._mngr = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_handlers={'state': ocp.StandardCheckpointHandler(), 'meta': ocp.JsonCheckpointHandler()},
    )

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._mngr.all_steps())

  def save(self, step: int, tree: Any, meta: dict) -> None:
    """Saves the array tree and a JSON dict at `step` with the tree's checksum, and waits."""
    meta = dict(meta, checksum=tree_checksum(tree))
    self._mngr.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta))
    )
    self._mngr.wait_until_finished()

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores `step` (the latest by default) into the structure of `target` (never without one:
    optax states would come back as lists) and verifies its checksum.

    Raises:
      NoCheckpointError: when there is no checkpoint at all.
      CheckpointError: when the step's files cannot be read or its checksum does not match.
      UnverifiedCheckpointError: the step has no checksum and checksums are required.
    """
    step = self._mngr.latest_step() if step is None else step
    if step is None:
      raise NoCheckpointError(f'no checkpoint has been written in {self.directory} yet')
    self._check_parameters(step, target)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
      r = self._mngr.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
      )
    except Exception as e:  # noqa: BLE001 - orbax and tensorstore raise many kinds for bad files
      raise CheckpointError(
        f'checkpoint step {step} in {self.directory} cannot be read: {type(e).__name__}: {str(e)[:300]}'
      ) from e
    tree, meta = r['state'], dict(r['meta'] or {})
    stored = meta.get('checksum')
    if stored is None and self.require_checksums:
      raise UnverifiedCheckpointError(
        f'checkpoint step {step} in {self.directory} has no checksum (written by an older version), '
        'and checksums are required (require_checksums)'
      )
    if stored is None:
      # Unverified: the least it must be is finite (a NaN can hide in a forward pass under jit).
      bad = sum(
        int((~np.isfinite(np.asarray(v))).sum())
        for v in jax.tree.leaves(tree)
        if np.issubdtype(np.asarray(v).dtype, np.floating)
      )
      if bad:
        raise CheckpointError(
          f'checkpoint step {step} in {self.directory} has no checksum and {bad} non-finite values'
        )
      warnings.warn(
        f'checkpoint step {step} in {self.directory} has no checksum (written by an '
        f'older version); it is restored unverified (its values are finite)',
        stacklevel=2,
      )
    elif tree_checksum(tree) != stored:
      raise CheckpointError(
        f'checkpoint step {step} in {self.directory} fails its checksum: its bytes changed after it was saved'
      )
    return tree, meta

  def _check_parameters(self, step: int, target: Any) -> None:
    """Refuses, before reading any array, a checkpoint whose parameters are not the target's."""
    if not isinstance(target, dict) or 'params' not in target:
      return
    try:
      stored = self._mngr.item_metadata(step)['state'].tree['params']
    except Exception as e:  # noqa: BLE001 - unreadable metadata is damage, handled as such
      raise CheckpointError(
        f'checkpoint step {step} in {self.directory} has unreadable metadata: '
        f'{type(e).__name__}: {str(e)[:200]}'
      ) from e
    got, want = _param_shapes(stored), _param_shapes(target['params'])
    if got != want:
      raise CheckpointMismatchError(
        f'checkpoint step {step} in {self.directory} holds the parameters of another model: '
        f'{describe_mismatch(got, want)}'
      )

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
    raise NoCheckpointError(
      f'no intact checkpoint in {self.directory}: every step was damaged and '
      f'set aside in {self.directory}.corrupt'
    )

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
