"""Orbax checkpoints: restore-or-init, keep N, with the config and metrics saved alongside."""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """Wraps `ocp.CheckpointManager`; only process 0 writes when `enabled` is left at its default.

  Args:
    directory: where checkpoints go (created).
    max_to_keep: how many checkpoints to keep.
  """

  def __init__(self, directory: str, max_to_keep: int = 3, enabled: bool | None = None):
    self.directory = os.path.abspath(directory)
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._mngr = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def latest_step(self) -> int | None:
    return self._mngr.latest_step()

  def save(self, step: int, tree: Any, meta: dict) -> None:
    """Saves the array tree and a JSON dict (config, metrics) at `step`, and waits."""
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                   meta=ocp.args.JsonSave(meta)))
    self._mngr.wait_until_finished()

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restores the tree into the structure of `target` (never without one: optax states
    would come back as lists) and the JSON dict; latest step by default."""
    step = self._mngr.latest_step() if step is None else step
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    r = self._mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                          meta=ocp.args.JsonRestore()))
    return r['state'], dict(r['meta'])

  def close(self):
    self._mngr.close()
