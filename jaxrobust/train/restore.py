"""Load a trained model back from its work directory (config.json + newest intact checkpoint)."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrobust.train.checkpoint import CheckpointMismatchError, Checkpointer
from jaxrobust.train.config import with_defaults
from jaxrobust.train.experiment import build_experiment


class RestoredRun(NamedTuple):
  """A trained run read back: its config, model, variables (host arrays) and dataset, and the
  checkpoint step they come from (older than the newest when newer steps were damaged)."""

  config: Any
  model: Any
  variables: Any
  dataset: Any
  step: int


def load_trained(workdir: str, *, ds=None, require_checksums: bool = False):
  """(config, model, variables, dataset) of the run in `workdir` (`restore_run` without the step)."""
  return tuple(restore_run(workdir, ds=ds, require_checksums=require_checksums)[:4])


def restore_run(workdir: str, *, ds=None, require_checksums: bool = False) -> RestoredRun:
  """The run in `workdir` from its newest intact checkpoint.

  With `require_checksums`, a checkpoint without a checksum is refused
  (`UnverifiedCheckpointError`) instead of restored unverified.

  Raises:
    FileNotFoundError: if the directory has no config.json, or no intact checkpoint
      (`NoCheckpointError`).
    CheckpointMismatchError: if the checkpoint holds another model's parameters than config.json
      names (the model and the first mismatched keys are named).
  """
  cfg_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f'no config.json in {workdir}: not a jaxrobust work directory')
  with open(cfg_path) as f:
    config = with_defaults(json.load(f))
  config.train.parallel = 'none'  # evaluation runs the model on one device, in eval mode
  exp = build_experiment(config, dataset=ds)
  state = exp.init_state()
  ck = Checkpointer(
    os.path.join(workdir, 'checkpoints'), config.train.keep_checkpoints, require_checksums=require_checksums
  )
  try:
    tree, meta, step = ck.restore_latest_intact(state.to_checkpoint())
  except CheckpointMismatchError as e:
    raise CheckpointMismatchError(
      f'{workdir}: config.json names model {config.model.name!r}, whose '
      f'parameters the checkpoint does not hold. {e}'
    ) from e
  finally:
    ck.close()
  stored = (meta.get('config') or {}).get('model', {}).get('name')
  if stored is not None and stored != config.model.name:  # same shapes, another network
    raise CheckpointMismatchError(
      f'{workdir}: config.json names model {config.model.name!r}, but the '
      f'checkpoint was trained as {stored!r}'
    )
  state = state.from_checkpoint(tree)
  return RestoredRun(config, exp.model, jax.tree.map(np.asarray, state.variables), exp.dataset, int(step))
