"""Reader and writer for the (gzipped) IDX format of MNIST and Fashion-MNIST.

References:
  LeCun et al., "The MNIST database" (IDX format), http://yann.lecun.com/exdb/mnist/
  Xiao et al. 2017, "Fashion-MNIST", arXiv:1708.07747
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

IMAGES_MAGIC = 2051  # 0x00000803: uint8, 3 dimensions
LABELS_MAGIC = 2049  # 0x00000801: uint8, 1 dimension


class IdxError(ValueError):
  """An IDX file is missing, corrupt or inconsistent; the message names it."""


def _open(path: str):
  return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def read_idx(path: str, expected_magic: int | None = None) -> np.ndarray:
  """Reads one IDX file (optionally gzipped) into a uint8 array.

  Args:
    path: file path; a `.gz` suffix means gzip.
    expected_magic: 2051 for images, 2049 for labels, or None to accept both.

  Returns:
    uint8 array of shape (N, rows, cols) for images or (N,) for labels.

  Raises:
    IdxError: naming the file, if it is missing, truncated, corrupt or has the
      wrong magic number.
  """
  if not os.path.exists(path):
    raise IdxError(f'IDX file not found: {path}')
  try:
    with _open(path) as f:
      raw = f.read()
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise IdxError(f'cannot read IDX file {path}: corrupt or truncated ({e})') from e
  if len(raw) < 8:
    raise IdxError(f'IDX file {path} is truncated: {len(raw)} bytes, no header')
  magic = struct.unpack('>I', raw[:4])[0]
  if magic not in (IMAGES_MAGIC, LABELS_MAGIC) or (expected_magic is not None and magic != expected_magic):
    want = expected_magic if expected_magic is not None else '2049 or 2051'
    raise IdxError(f'IDX file {path} has wrong magic number {magic} (expected {want})')
  ndim = magic & 0xFF
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise IdxError(f'IDX file {path} is truncated inside its header')
  dims = struct.unpack(f'>{ndim}I', raw[4:header])
  size = int(np.prod(dims))
  if len(raw) - header != size:
    raise IdxError(
      f'IDX file {path} is truncated or corrupt: header says {dims} '
      f'({size} bytes of data), file holds {len(raw) - header}'
    )
  return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array of rank 1 (labels) or 3 (images) as IDX, gzip if `.gz`."""
  array = np.asarray(array)
  if array.dtype != np.uint8 or array.ndim not in (1, 3):
    raise ValueError(f'write_idx needs uint8 of rank 1 or 3, got {array.dtype} rank {array.ndim}')
  magic = LABELS_MAGIC if array.ndim == 1 else IMAGES_MAGIC
  data = struct.pack('>I', magic) + struct.pack(f'>{array.ndim}I', *array.shape) + array.tobytes()
  with gzip.open(path, 'wb') if path.endswith('.gz') else open(path, 'wb') as f:
    f.write(data)


def read_image_label_pair(
  images_path: str, labels_path: str, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
  """Reads matching image and label IDX files; images come back as (N, H, W, 1).

  Raises:
    IdxError: if either file is bad, their counts differ (both files named), or a label is
      outside [0, num_classes) (the labels file named).
  """
  images = read_idx(images_path, IMAGES_MAGIC)
  labels = read_idx(labels_path, LABELS_MAGIC)
  if images.shape[0] != labels.shape[0]:
    raise IdxError(
      f'image and label counts differ: {images_path} holds {images.shape[0]} '
      f'images, {labels_path} holds {labels.shape[0]} labels'
    )
  if num_classes is not None and labels.size and labels.max() >= num_classes:
    bad = int(np.sum(labels >= num_classes))
    raise IdxError(
      f'IDX file {labels_path} holds {bad} labels outside [0, {num_classes}) (largest {int(labels.max())})'
    )
  return images[..., None], labels.astype(np.int32)
