"""Load a trained model back from its work directory (config.json + latest checkpoint)."""
from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np

from jaxrobust.train.checkpoint import Checkpointer
from jaxrobust.train.loop import build_model, build_optimizer, load_data, seeded_keys, steps_for
from jaxrobust.train.state import create_train_state


def load_trained(workdir: str, *, ds=None):
  """(config, model, variables, dataset) of the run in `workdir`.

  Raises:
    FileNotFoundError: if the directory has no config.json or no checkpoint.
  """
  cfg_path = os.path.join(workdir, 'config.json')
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f'no config.json in {workdir}: not a jaxrobust work directory')
  with open(cfg_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  ds = load_data(config) if ds is None else ds
  model = build_model(config, ds)
  spe, total = steps_for(config, ds)
  state = create_train_state(model, seeded_keys(config.seed)['init'],
                             np.zeros((1,) + ds.image_shape, np.float32), build_optimizer(config, spe, total))
  ck = Checkpointer(os.path.join(workdir, 'checkpoints'))
  if ck.latest_step() is None:
    raise FileNotFoundError(f'no checkpoint in {os.path.join(workdir, "checkpoints")}')
  tree, _ = ck.restore(state.to_checkpoint())
  ck.close()
  state = state.from_checkpoint(tree)
  return config, model, jax.tree.map(np.asarray, state.variables), ds
