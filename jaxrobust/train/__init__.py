"""Training: the config schema, the builder, objectives, the per-device step, parallel wrappers,
checkpoints and the loop."""

from jaxrobust.train.checkpoint import (
  CheckpointError,
  CheckpointMismatchError,
  Checkpointer,
  NoCheckpointError,
)
from jaxrobust.train.config import ConfigError, default_config
from jaxrobust.train.experiment import Experiment, build_experiment
from jaxrobust.train.loop import NonFiniteLossError, train, train_and_evaluate
from jaxrobust.train.objectives import Objective
from jaxrobust.train.restore import load_trained
from jaxrobust.train.workdir import ConfigMismatchError, WorkdirLockedError

__all__ = [
  'CheckpointError',
  'CheckpointMismatchError',
  'Checkpointer',
  'ConfigError',
  'ConfigMismatchError',
  'Experiment',
  'NoCheckpointError',
  'NonFiniteLossError',
  'Objective',
  'WorkdirLockedError',
  'build_experiment',
  'default_config',
  'load_trained',
  'train',
  'train_and_evaluate',
]
