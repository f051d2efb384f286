"""Load a trained model back from its work directory (config.json + newest intact checkpoint)."""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from jaxrobust.train.checkpoint import Checkpointer, NoCheckpointError
from jaxrobust.train.experiment import build_experiment


def load_trained(workdir: str, *, ds=None):
  """(config, model, variables, dataset) of the run in `workdir`.

  Raises:
    FileNotFoundError: if the directory has no config.json, or no intact checkpoint
      (`NoCheckpointError`).
    ValueError: if the checkpoint holds another model than config.json names (both are named).
  """
  cfg_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f'no config.json in {workdir}: not a jaxrobust work directory')
  with open(cfg_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  config.train.parallel = 'none'     # evaluation runs the model on one device, in eval mode
  exp = build_experiment(config, dataset=ds)
  state = exp.init_state()
  ck = Checkpointer(os.path.join(workdir, 'checkpoints'), config.train.keep_checkpoints)
  try:
    tree, meta, _ = ck.restore_latest_intact(state.to_checkpoint())
  except NoCheckpointError:
    raise
  except (ValueError, KeyError) as e:
    raise ValueError(f'the checkpoint in {workdir} does not fit the model {config.model.name!r} '
                     f'of its config.json: {e}') from e
  finally:
    ck.close()
  stored_model = meta.get('config', {}).get('model', {}).get('name')
  if stored_model is not None and stored_model != config.model.name:
    raise ValueError(f'{workdir}: the checkpoint holds model {stored_model!r}, but config.json names '
                     f'{config.model.name!r}')
  state = state.from_checkpoint(tree)
  return config, exp.model, jax.tree.map(np.asarray, state.variables), exp.dataset
