"""Keys of an attack call: one key for the batch or one per example, split into the attack's
streams with the tags of `jaxrobust/keys.py`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrobust import keys


def is_key_batch(key, batch: int) -> bool:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.ndim == 1 and key.shape[0] == batch
  return key.ndim == 2


def as_typed(key):
  return key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)


def split_attack_key(key, batch: int):
  """(noise keys, model key) from a single key or from per-example keys.

  With per-example keys (shape (B,)), each example's random start depends on its key only, so an
  example attacked alone equals the same example attacked inside a batch. The model key (for
  stochastic `logits_fn`) then comes from the first example's key.
  """
  key = as_typed(key)
  if is_key_batch(key, batch):
    noise = jax.vmap(lambda k: jax.random.fold_in(k, keys.TAG_EXAMPLE_NOISE))(key)
    return noise, jax.random.fold_in(key[0], keys.TAG_EXAMPLE_MODEL)
  k_noise, k_model = jax.random.split(key)
  return k_noise, k_model


def per_example_keys(key, batch: int):
  """One key per example: the given per-example keys, or fold_in(key, i) for example i."""
  key = as_typed(key)
  if is_key_batch(key, batch):
    return key
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch))


def fold_keys(key, data):
  """fold_in for one key or, element-wise, for a batch of keys."""
  if key.ndim == 0:
    return jax.random.fold_in(key, data)
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)


def sample_like(key, x, sampler):
  """Draws `sampler(key, shape)` for the batch: from one key, or per example from a key batch."""
  if key.ndim == 1:
    return jax.vmap(lambda k: sampler(k, x.shape[1:]))(key).astype(x.dtype)
  return sampler(key, x.shape).astype(x.dtype)
