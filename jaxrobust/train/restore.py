"""Load a trained model back from its work directory (config.json + newest intact checkpoint)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from jaxrobust.train.checkpoint import CheckpointMismatchError, Checkpointer
from jaxrobust.train.config import with_defaults
from jaxrobust.train.experiment import build_experiment


def load_trained(workdir: str, *, ds=None, require_checksums: bool = False):
  """(config, model, variables, dataset) of the run in `workdir`.

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
    tree, meta, _ = ck.restore_latest_intact(state.to_checkpoint())
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
  return config, exp.model, jax.tree.map(np.asarray, state.variables), exp.dataset
