"""Published robust models (RobustBench-style PyTorch files, DeepMind's JAX and PyTorch releases)
loaded into our Flax networks without torch and without running pickle code."""

from jaxrobust.models.zoo.converters import (
  ARCHS,
  DEEPMIND_NORMALIZATION,
  ArchitectureMismatchError,
  build_model,
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
  """
  fmt, arrays = read_checkpoint(path)
  try:
    return convert(arch, fmt, arrays, dataset, **overrides)
  except ArchitectureMismatchError as e:
    raise ArchitectureMismatchError(f'{path}: {e}') from e


__all__ = [
  'ARCHS',
  'ArchitectureMismatchError',
  'CheckpointFormatError',
  'DEEPMIND_NORMALIZATION',
  'SafeUnpickler',
  'UnsafeCheckpointError',
  'build_model',
  'convert',
  'detect_family',
  'load_published',
  'read_checkpoint',
  'read_haiku_npy',
  'read_safetensors',
  'read_torch',
]
