"""Seeded batching and on-device augmentation (random crop with padding, horizontal flip)."""

from __future__ import annotations

import collections
from typing import Any, Callable, Iterable, Iterator, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.counts import is_count


def epoch_permutation(key: jax.Array, epoch: int, n: int) -> np.ndarray:
  """The example order of one epoch: a permutation drawn from fold_in(key, epoch)."""
  return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))


def epoch_batches(
  key: jax.Array, epoch: int, images: np.ndarray, labels: np.ndarray, batch_size: int, *, start_batch: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yields the full batches of one epoch in a seeded order (the remainder is dropped).

  Args:
    key: the data-order key; the same key and epoch give the same order.
    epoch: epoch index, folded into the key.
    images, labels: the split, uint8 images and int labels.
    batch_size: examples per batch.
    start_batch: skip this many batches (to resume mid-epoch).

  Raises:
    ValueError: for a batch_size that is not an integer >= 1.
  """
  if not is_count(batch_size, 1):
    raise ValueError(f'epoch_batches: batch_size must be an integer >= 1, got {batch_size!r}')
  perm = epoch_permutation(key, epoch, images.shape[0])
  for b in range(start_batch, images.shape[0] // batch_size):
    idx = perm[b * batch_size : (b + 1) * batch_size]
    yield images[idx], labels[idx]


T = TypeVar('T')
U = TypeVar('U')


def prefetch(items: Iterable[T], put: Callable[[T], U], size: int = 2) -> Iterator[U]:
  """`put(item)` for each item, in order, with `size` items put ahead of the one being used.

  `put` places a host batch on the devices (`jax.device_put` with the step's sharding), which
  JAX does asynchronously: with `size` ≥ 1 the next batches travel while the current step runs,
  so the host does not stall the step (double buffering for `size` = 1). The items and their
  order are those of `items` whatever `size`; 0 puts each item only when it is asked for.

  Raises:
    ValueError: for a size that is not an integer >= 0.
  """
  if not is_count(size, 0):
    raise ValueError(f'prefetch: size must be an integer >= 0, got {size!r}')
  source, ahead = iter(items), collections.deque[Any]()
  while True:
    while len(ahead) <= size:
      try:
        ahead.append(put(next(source)))
      except StopIteration:
        break
    if not ahead:
      return
    yield ahead.popleft()


def to_float(images: jax.Array) -> jax.Array:
  """uint8 pixels -> float32 in [0, 1]."""
  return jnp.asarray(images, jnp.float32) / 255.0


def index_keys(key: jax.Array, n: int, offset=0) -> jax.Array:
  """Keys for examples offset..offset+n-1: fold_in(key, global index).

  Why: a key per example makes random starts and augmentation independent of how a batch is
  split across devices or attacked alone versus inside a batch.
  """
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(offset + jnp.arange(n))


def augment(key: jax.Array, x: jax.Array, *, pad: int = 4, flip: bool = True) -> jax.Array:
  """Random crop after zero padding, and random horizontal flip, per example; jit-able.

  Args:
    key: one PRNG key, or a batch of per-example keys of leading size N.
    x: float images (N, H, W, C).
    pad: padding for the random crop (0 disables cropping).
    flip: whether to flip horizontally with probability 1/2.

  Returns:
    Augmented images, same shape as x.
  """
  n, h, w, c = x.shape
  keys = key if _is_key_batch(key) else jax.random.split(key, n)

  def one(k, img):
    k_crop, k_flip = jax.random.split(k)
    if pad > 0:
      padded = jnp.pad(img, ((pad, pad), (pad, pad), (0, 0)))
      o = jax.random.randint(k_crop, (2,), 0, 2 * pad + 1)
      img = jax.lax.dynamic_slice(padded, (o[0], o[1], 0), (h, w, c))
    if flip:
      img = jnp.where(jax.random.bernoulli(k_flip), img[:, ::-1, :], img)
    return img

  return jax.vmap(one)(keys, x)


def _is_key_batch(key) -> bool:
  """True for a batch of keys: typed keys of rank 1, or raw uint32 keys of shape (N, 2)."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.ndim == 1
  return key.ndim == 2
