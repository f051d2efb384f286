"""Datasets (Fashion-MNIST IDX, tfds, synthetic), seeded batching and augmentation."""

from jaxrobust.data._datasets import (
  DEFAULT_FASHION_MNIST_DIR,
  FASHION_MNIST_DIR_ENV,
  Dataset,
  fashion_mnist_dir,
  first_examples,
  load_dataset,
  load_fashion_mnist,
  load_synthetic,
  load_tfds,
)
from jaxrobust.data._idx import IdxError, read_idx, read_image_label_pair, write_idx
from jaxrobust.data._pipeline import augment, epoch_batches, epoch_permutation, index_keys, prefetch, to_float

__all__ = [
  'DEFAULT_FASHION_MNIST_DIR',
  'Dataset',
  'FASHION_MNIST_DIR_ENV',
  'IdxError',
  'augment',
  'epoch_batches',
  'epoch_permutation',
  'fashion_mnist_dir',
  'first_examples',
  'load_dataset',
  'load_fashion_mnist',
  'load_synthetic',
  'prefetch',
  'load_tfds',
  'index_keys',
  'read_idx',
  'read_image_label_pair',
  'to_float',
  'write_idx',
]
