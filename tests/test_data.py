import gzip
import os

import jax
import numpy as np
import pytest

from jaxrobust import data


def _write_pair(d, n=5, h=4, w=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
  y = rng.integers(0, 10, n, dtype=np.uint8)
  data.write_idx(os.path.join(d, 'img.gz'), x)
  data.write_idx(os.path.join(d, 'lab.gz'), y)
  return x, y


def test_idx_round_trip(tmp_path):
  x, y = _write_pair(tmp_path)
  xr, yr = data.read_image_label_pair(str(tmp_path / 'img.gz'), str(tmp_path / 'lab.gz'))
  np.testing.assert_array_equal(xr[..., 0], x)
  np.testing.assert_array_equal(yr, y)
  assert xr.shape == (5, 4, 3, 1) and yr.dtype == np.int32


def test_idx_rejects_truncated_file_and_names_it(tmp_path):
  _write_pair(tmp_path)
  raw = gzip.decompress((tmp_path / 'img.gz').read_bytes())
  (tmp_path / 'trunc.gz').write_bytes(gzip.compress(raw[:-7]))
  with pytest.raises(data.IdxError, match='trunc.gz.*truncated'):
    data.read_idx(str(tmp_path / 'trunc.gz'))


def test_idx_rejects_corrupt_gzip(tmp_path):
  _write_pair(tmp_path)
  blob = (tmp_path / 'img.gz').read_bytes()
  (tmp_path / 'bad.gz').write_bytes(blob[: len(blob) // 2])
  with pytest.raises(data.IdxError, match='bad.gz'):
    data.read_idx(str(tmp_path / 'bad.gz'))


def test_idx_rejects_wrong_magic(tmp_path):
  _write_pair(tmp_path)
  with pytest.raises(data.IdxError, match='lab.gz.*magic'):
    data.read_image_label_pair(str(tmp_path / 'lab.gz'), str(tmp_path / 'lab.gz'))


def test_idx_rejects_count_mismatch(tmp_path):
  _write_pair(tmp_path, n=5)
  data.write_idx(str(tmp_path / 'lab4.gz'), np.zeros(4, np.uint8))
  with pytest.raises(data.IdxError, match='img.gz.*5 images.*lab4.gz.*4 labels'):
    data.read_image_label_pair(str(tmp_path / 'img.gz'), str(tmp_path / 'lab4.gz'))


def test_fashion_mnist_from_directory_and_env(tmp_path, monkeypatch):
  for split, n in (('train', 6), ('t10k', 3)):
    data.write_idx(str(tmp_path / f'{split}-images-idx3-ubyte.gz'), np.full((n, 28, 28), 7, np.uint8))
    data.write_idx(str(tmp_path / f'{split}-labels-idx1-ubyte.gz'), np.arange(n, dtype=np.uint8))
  monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path))
  ds = data.load_dataset('fashion_mnist')
  assert ds.train_images.shape == (6, 28, 28, 1) and ds.test_images.shape == (3, 28, 28, 1)
  assert ds.num_classes == 10 and ds.image_shape == (28, 28, 1)
  monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path / 'nowhere'))
  with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'):
    data.load_dataset('fashion_mnist')


@pytest.mark.skipif(
  not os.path.exists(os.path.join(data.fashion_mnist_dir(), 't10k-labels-idx1-ubyte.gz')),
  reason='real Fashion-MNIST not installed',
)
def test_real_fashion_mnist():
  ds = data.load_dataset('fashion_mnist')
  assert ds.train_images.shape == (60000, 28, 28, 1) and ds.test_images.shape == (10000, 28, 28, 1)
  assert np.bincount(ds.test_labels).tolist() == [1000] * 10


def test_tfds_mock_path():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=12):
    ds = data.load_dataset('cifar10', source='tfds')
  assert ds.train_images.shape == (12, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (12, 32, 32, 3)
  assert ds.num_classes == 10 and ds.image_shape == (32, 32, 3)
  assert ds.train_labels.min() >= 0 and ds.train_labels.max() < 10


def test_tfds_unprepared_without_tensorflow_names_the_extra(tmp_path):
  try:
    import tensorflow  # noqa: F401

    pytest.skip('TensorFlow is installed')
  except ImportError:
    pass
  with pytest.raises(RuntimeError, match=r'jaxrobust\[tf\]'):
    data.load_dataset('mnist', data_dir=str(tmp_path), source='tfds')


def test_synthetic_is_seeded_and_learnable_shape():
  a = data.load_synthetic(seed=3)
  b = data.load_synthetic(seed=3)
  c = data.load_synthetic(seed=4)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert not np.array_equal(a.train_images, c.train_images)
  # Nearest-template classification must be nearly perfect: the data are learnable.
  means = np.stack([a.train_images[a.train_labels == k].mean(0) for k in range(4)]).reshape(4, -1)
  d = ((a.test_images.reshape(len(a.test_images), 1, -1) - means[None]) ** 2).sum(-1)
  assert (d.argmin(1) == a.test_labels).mean() > 0.95


def test_epoch_batches_are_seeded_permutations():
  x = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
  y = np.arange(20)
  key = jax.random.key(0)
  e0 = [b[1] for b in data.epoch_batches(key, 0, x, y, 6)]
  assert len(e0) == 3 and len(set(np.concatenate(e0))) == 18  # drop remainder, no repeats
  assert all(np.array_equal(p, q) for p, q in zip(e0, [b[1] for b in data.epoch_batches(key, 0, x, y, 6)]))
  e1 = [b[1] for b in data.epoch_batches(key, 1, x, y, 6)]
  assert not np.array_equal(np.concatenate(e0), np.concatenate(e1))
  resumed = [b[1] for b in data.epoch_batches(key, 0, x, y, 6, start_batch=2)]
  np.testing.assert_array_equal(resumed[0], e0[2])


def test_augment_crops_and_flips_per_example():
  x = jax.random.uniform(jax.random.key(1), (64, 8, 8, 1))
  out = jax.jit(lambda k, x: data.augment(k, x, pad=0, flip=True))(jax.random.key(2), x)
  flipped = np.all(np.asarray(out) == np.asarray(x[:, :, ::-1]), axis=(1, 2, 3))
  same = np.all(np.asarray(out) == np.asarray(x), axis=(1, 2, 3))
  assert np.all(flipped | same) and 16 < flipped.sum() < 48  # each example flipped or not, ~half
  crop = data.augment(jax.random.key(3), x, pad=2, flip=False)
  assert crop.shape == x.shape
  # A crop is a translated window of the zero-padded image: every value comes from x or the padding.
  vals = set(np.round(np.asarray(x).ravel(), 6)) | {0.0}
  assert set(np.round(np.asarray(crop).ravel(), 6)) <= vals
  keys = data.index_keys(jax.random.key(4), 64)
  np.testing.assert_array_equal(data.augment(keys, x)[5:6], data.augment(keys[5:6], x[5:6]))


def test_tfds_unprepared_with_tensorflow_prepares_array_record(tmp_path, monkeypatch):
  """With TensorFlow importable, an unprepared dataset is prepared in array_record format."""
  import sys
  import types

  tfds = pytest.importorskip('tensorflow_datasets')
  calls = []
  monkeypatch.setitem(sys.modules, 'tensorflow', types.ModuleType('tensorflow'))  # "importable"

  def fake_prepare(self, **kwargs):
    calls.append(kwargs)
    raise RuntimeError('stop after the call')  # no network here; only the call is checked

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', fake_prepare)
  with pytest.raises(RuntimeError, match='stop after the call'):
    data.load_dataset('mnist', data_dir=str(tmp_path), source='tfds')
  assert calls == [{'file_format': 'array_record'}]


@pytest.mark.parametrize(
  'kwargs,field',
  [
    (dict(num_train=0), 'num_train'),
    (dict(num_test=-3), 'num_test'),
    (dict(num_classes=1), 'num_classes'),
    (dict(num_classes=4.0), 'num_classes'),
    (dict(image_shape=(0, 8, 1)), 'image_shape'),
    (dict(image_shape=(8, 8)), 'image_shape'),
  ],
)
def test_synthetic_data_refuses_empty_or_degenerate_settings(kwargs, field):
  """An empty split, a single class or an image with no pixels was built without a word."""
  from jaxrobust.data import load_synthetic

  with pytest.raises(ValueError, match=f'load_synthetic: {field} must be'):
    load_synthetic(**kwargs)


def test_prefetch_puts_ahead_and_keeps_the_items_and_their_order():
  from jaxrobust.data import prefetch

  for size in (0, 1, 2, 5):
    put_calls = []

    def put(i):
      put_calls.append(i)
      return i * 10

    out = []
    for v in prefetch(range(7), put, size):
      out.append(v)
      # when item k is used, items up to k + size have been put (fewer at the end)
      assert len(put_calls) == min(7, len(out) + size), (size, out, put_calls)
    assert out == [10 * i for i in range(7)] and put_calls == list(range(7))
  assert list(prefetch([], lambda i: i, 2)) == []
  for bad in (-1, 1.5, True):
    with pytest.raises(ValueError, match='prefetch: size must be an integer >= 0'):
      next(prefetch(range(3), lambda i: i, bad))


def test_training_with_and_without_prefetch_gives_the_same_bits(synthetic_config, tmp_path, monkeypatch):
  """Batches placed on the 4 devices two steps ahead: the same batches in the same order."""
  from jaxrobust import train
  from jaxrobust.train import loop
  from tests.conftest import trees_equal

  runs = {}
  for prefetch in (0, 2):
    monkeypatch.setattr(loop, 'PREFETCH', prefetch)
    runs[prefetch] = train.train_and_evaluate(synthetic_config, str(tmp_path / str(prefetch)), progress=False)
  assert trees_equal(runs[0]['state'].params, runs[2]['state'].params)
  assert runs[0]['test_accuracy'] == runs[2]['test_accuracy']
