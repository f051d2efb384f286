"""One entry point for every dataset: Fashion-MNIST from IDX, any tfds image dataset, synthetic.

References:
  Xiao et al. 2017, "Fashion-MNIST", arXiv:1708.07747
  Krizhevsky 2009, "Learning Multiple Layers of Features from Tiny Images" (CIFAR-10)
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxrobust.counts import is_count
from jaxrobust.data import _idx

FASHION_MNIST_DIR_ENV = 'JAXROBUST_FASHION_MNIST_DIR'
DEFAULT_FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_CLASSES = (
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """Train and test splits as uint8 images (N, H, W, C) and int32 labels, plus metadata."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...] = ()

  @property
  def num_train(self) -> int:
    return int(self.train_images.shape[0])

  def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the training images in [0,1] pixel space."""
    x = self.train_images[:10000].astype(np.float64) / 255.0
    return x.mean(axis=(0, 1, 2)).astype(np.float32), x.std(axis=(0, 1, 2)).astype(np.float32)


def fashion_mnist_dir(data_dir: str | None = None) -> str:
  """The Fashion-MNIST directory: argument, else $JAXROBUST_FASHION_MNIST_DIR, else Debian's."""
  return data_dir or os.environ.get(FASHION_MNIST_DIR_ENV) or DEFAULT_FASHION_MNIST_DIR


def load_fashion_mnist(data_dir: str | None = None) -> Dataset:
  """Loads Fashion-MNIST from the four gzip IDX files in `data_dir`.

  Raises:
    FileNotFoundError: if the directory lacks the files, saying how to get them.
    IdxError: if a file is corrupt (naming it).
  """
  d = fashion_mnist_dir(data_dir)
  names = (
    'train-images-idx3-ubyte.gz',
    'train-labels-idx1-ubyte.gz',
    't10k-images-idx3-ubyte.gz',
    't10k-labels-idx1-ubyte.gz',
  )
  missing = [n for n in names if not os.path.exists(os.path.join(d, n))]
  if missing:
    raise FileNotFoundError(
      f'Fashion-MNIST IDX files {missing} not found in {d}. Install them with '
      f'`apt-get install dataset-fashion-mnist` (Debian), or set '
      f'${FASHION_MNIST_DIR_ENV} / config.data.data_dir to a directory holding them.'
    )
  p = [os.path.join(d, n) for n in names]
  xtr, ytr = _idx.read_image_label_pair(p[0], p[1], num_classes=len(FASHION_MNIST_CLASSES))
  xte, yte = _idx.read_image_label_pair(p[2], p[3], num_classes=len(FASHION_MNIST_CLASSES))
  return Dataset('fashion_mnist', 10, tuple(xtr.shape[1:]), xtr, ytr, xte, yte, FASHION_MNIST_CLASSES)


def load_synthetic(
  *, seed: int = 0, num_train: int = 512, num_test: int = 256, image_shape=(8, 8, 1), num_classes: int = 4
) -> Dataset:
  """A fast, seeded, learnable dataset: class templates plus pixel noise.

  Each class has a random template image; examples are the template plus noise,
  quantised to uint8, so a small model separates the classes within a few steps.

  Raises:
    ValueError: for fewer than 1 training or test example, fewer than 2 classes, or an image
      shape that is not three sizes >= 1 (height, width, channels).
  """
  for name, v, low in (
    ('num_train', num_train, 1),
    ('num_test', num_test, 1),
    ('num_classes', num_classes, 2),
  ):
    if not is_count(v, low):
      raise ValueError(f'load_synthetic: {name} must be an integer >= {low}, got {v!r}')
  shape = tuple(image_shape)
  if len(shape) != 3 or not all(is_count(d, 1) for d in shape):
    raise ValueError(
      f'load_synthetic: image_shape must be (height, width, channels), each >= 1, got {image_shape!r}'
    )
  rng = np.random.default_rng(seed)
  templates = rng.uniform(0.15, 0.85, size=(num_classes,) + tuple(image_shape))

  def make(n):
    y = rng.integers(0, num_classes, size=n).astype(np.int32)
    x = templates[y] + rng.normal(0, 0.08, size=(n,) + tuple(image_shape))
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8), y

  xtr, ytr = make(num_train)
  xte, yte = make(num_test)
  return Dataset(
    'synthetic',
    num_classes,
    tuple(image_shape),
    xtr,
    ytr,
    xte,
    yte,
    tuple(f'class{i}' for i in range(num_classes)),
  )


def _tfds_split(builder, split: str):
  src = builder.as_data_source(split=split)
  n = len(src)
  # __getitems__ fails under tfds.testing.mock_data (docs/design.md, data), so read item by item.
  items = [src[i] for i in range(n)]
  images = np.stack([np.asarray(e['image'], np.uint8) for e in items])
  labels = np.asarray([int(e['label']) for e in items], np.int32)
  if images.ndim == 3:
    images = images[..., None]
  return images, labels


def load_tfds(name: str, data_dir: str | None = None) -> Dataset:
  """Loads a tfds image-classification dataset through `tfds.data_source`.

  When the dataset is not prepared in `data_dir`, it is prepared in array_record
  format, which needs TensorFlow (the `tf` extra).

  Raises:
    RuntimeError: if the dataset is unprepared and TensorFlow is not importable.
  """
  import tensorflow_datasets as tfds  # deferred: a slow import that only this path needs

  builder = tfds.builder(name, data_dir=data_dir, file_format='array_record')
  try:
    train = _tfds_split(builder, 'train')
  except KeyError:  # "splits is empty": not generated yet
    try:
      import tensorflow  # noqa: F401
    except ImportError as e:
      raise RuntimeError(
        f'tfds dataset {name!r} is not prepared in data_dir={builder.data_dir!r}, and '
        f'preparing it needs TensorFlow: pip install "jaxrobust[tf]" (the `tf` extra), '
        f'or point data_dir at a prepared copy.'
      ) from e
    builder.download_and_prepare(file_format='array_record')
    train = _tfds_split(builder, 'train')
  test = _tfds_split(builder, 'test')
  feats = builder.info.features
  num_classes = int(feats['label'].num_classes)
  names = tuple(feats['label'].names) if hasattr(feats['label'], 'names') else ()
  return Dataset(name, num_classes, tuple(train[0].shape[1:]), train[0], train[1], test[0], test[1], names)


def first_examples(ds: Dataset, num_train: int | None, num_test: int | None) -> Dataset:
  """The first num_train training and num_test test examples (None: all of a split).

  Raises:
    ValueError: for a count that is not an integer >= 0 (a negative one would slice from the end)
      or more examples than a split has (clipping would silently use fewer).
  """
  for arg, v, have in (
    ('num_train', num_train, len(ds.train_labels)),
    ('num_test', num_test, len(ds.test_labels)),
  ):
    if v is not None and not is_count(v, 0):
      raise ValueError(f'{arg} must be an integer >= 0 or None, got {v!r}')
    if v is not None and v > have:
      raise ValueError(f'{arg}: {v}, but {ds.name!r} has {have} examples in that split')
  if num_train is None and num_test is None:
    return ds
  return dataclasses.replace(
    ds,
    train_images=ds.train_images[:num_train],
    train_labels=ds.train_labels[:num_train],
    test_images=ds.test_images[:num_test],
    test_labels=ds.test_labels[:num_test],
  )


def load_dataset(
  name: str,
  data_dir: str | None = None,
  *,
  seed: int = 0,
  num_train: int | None = None,
  num_test: int | None = None,
  source: str = 'auto',
  synthetic: dict | None = None,
) -> Dataset:
  """Returns train and test splits as uint8 arrays with labels and metadata.

  Args:
    name: 'fashion_mnist' (IDX files), 'synthetic', or any tfds image dataset
      name ('cifar10', 'mnist', 'svhn_cropped', ...).
    data_dir: directory of the IDX files or the tfds data_dir.
    seed: seed of the synthetic dataset.
    num_train, num_test: keep only the first examples of each split (at most the split's size).
    source: 'auto' (IDX for fashion_mnist, else tfds), 'idx' or 'tfds'.
    synthetic: keyword arguments of `load_synthetic` (sizes, image shape, classes).

  Returns:
    A `Dataset`.
  """
  if name == 'synthetic':
    ds = load_synthetic(seed=seed, **(synthetic or {}))
  elif name == 'fashion_mnist' and source in ('auto', 'idx'):
    ds = load_fashion_mnist(data_dir)
  elif source in ('auto', 'tfds'):
    ds = load_tfds(name, data_dir)
  else:
    raise ValueError(f'unknown data source {source!r} (use auto, idx or tfds)')
  ds = first_examples(ds, num_train, num_test)
  for split, y in (('train', ds.train_labels), ('test', ds.test_labels)):
    if y.size and (y.min() < 0 or y.max() >= ds.num_classes):
      raise ValueError(
        f'dataset {name!r}: {split} labels span [{y.min()}, {y.max()}], outside the {ds.num_classes} classes'
      )
  return ds
