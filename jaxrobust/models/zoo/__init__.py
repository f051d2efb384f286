"""Published robust models (RobustBench-style PyTorch files, DeepMind's JAX and PyTorch releases)
loaded into our Flax networks without torch and without running pickle code."""

import jax
import numpy as np

from jaxrobust.models.zoo.converters import (
  ARCHS,
  DEEPMIND_NORMALIZATION,
  ArchitectureMismatchError,
  zoo_network,
  convert,
  detect_family,
)
from jaxrobust.models.zoo.readers import (
  CheckpointFormatError,
  SafeUnpickler,
  UnsafeCheckpointError,
  read_checkpoint,
  read_haiku_npy,
  read_safetensors,
  read_torch,
)


def load_published(path: str, arch: str, dataset: str, **overrides):
  """(model, variables) of the published checkpoint at `path`, for `make_logits_fn`.

  Raises:
    FileNotFoundError, CheckpointFormatError, UnsafeCheckpointError: from the reader.
    ArchitectureMismatchError: the file does not hold `arch`'s parameters (first keys named).
    CheckpointFormatError: a parameter or statistic holds NaN or ±inf (named). The forward pass
      cannot be trusted to show it: under `jit`, a NaN can vanish through ReLU's and max-pool's
      `max`, and a broken model would then look merely inaccurate.
  """
  fmt, arrays = read_checkpoint(path)
  try:
    model, variables = convert(arch, fmt, arrays, dataset, **overrides)
  except ArchitectureMismatchError as e:
    raise ArchitectureMismatchError(f'{path}: {e}') from e
  bad = [
    (jax.tree_util.keystr(p), int((~np.isfinite(np.asarray(v))).sum()))
    for p, v in jax.tree_util.tree_leaves_with_path(variables)
    if np.issubdtype(np.asarray(v).dtype, np.floating) and not np.all(np.isfinite(np.asarray(v)))
  ]
  if bad:
    raise CheckpointFormatError(
      f'{path}: non-finite values in {len(bad)} arrays, e.g. '
      + ', '.join(f'{name} ({n} values)' for name, n in bad[:3])
    )
  return model, variables


__all__ = [
  'ARCHS',
  'ArchitectureMismatchError',
  'CheckpointFormatError',
  'DEEPMIND_NORMALIZATION',
  'SafeUnpickler',
  'UnsafeCheckpointError',
  'zoo_network',
  'convert',
  'detect_family',
  'load_published',
  'read_checkpoint',
  'read_haiku_npy',
  'read_safetensors',
  'read_torch',
]
