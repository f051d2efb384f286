"""Random-noise baselines: uniform in the ε-ball, and Gaussian.

A model that resists these but not gradient attacks is not robust; one that falls to noise has
no margin at all. Both are baselines for the study's "noise" rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrobust.attacks import _attack_keys
from jaxrobust.attacks import _checks
from jaxrobust.attacks import _geometry


def uniform_noise(logits_fn, key, x, y, *, epsilon, norm: str = 'linf', bounds=(0.0, 1.0)) -> jax.Array:
  """x + δ with δ uniform in the ε-ball of `norm` (L∞ cube or L2 ball), clipped to bounds.

  `logits_fn` and `y` are only checked, never queried: the attack is blind.
  """
  _checks.check_norm('uniform_noise', norm)
  _checks.check_inputs(
    logits_fn, x, y, name='uniform_noise', key=key, bounds=bounds, values={'epsilon': epsilon}
  )
  noise_key, _ = _attack_keys.split_attack_key(key, x.shape[0])
  eps = _geometry.bcast(epsilon, x)
  delta = _geometry.random_start(noise_key, x, eps, norm, 'uniform')
  return jax.lax.stop_gradient(
    jnp.clip(x + delta, _geometry.bcast(bounds[0], x), _geometry.bcast(bounds[1], x))
  )


def gaussian_noise(
  logits_fn, key, x, y, *, sigma, epsilon=None, norm: str = 'l2', bounds=(0.0, 1.0)
) -> jax.Array:
  """x + N(0, σ²I), projected onto the ε-ball of `norm` when `epsilon` is given, then clipped."""
  _checks.check_norm('gaussian_noise', norm)
  _checks.check_inputs(
    logits_fn,
    x,
    y,
    name='gaussian_noise',
    key=key,
    bounds=bounds,
    values={'sigma': sigma, 'epsilon': epsilon},
  )
  noise_key, _ = _attack_keys.split_attack_key(key, x.shape[0])
  delta = _geometry.bcast(sigma, x) * _attack_keys.sample_like(noise_key, x, jax.random.normal)
  if epsilon is not None:
    delta = _geometry.project(delta, _geometry.bcast(epsilon, x), norm)
  return jax.lax.stop_gradient(
    jnp.clip(x + delta, _geometry.bcast(bounds[0], x), _geometry.bcast(bounds[1], x))
  )
