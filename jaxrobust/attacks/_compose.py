"""Composition: EOT around any gradient attack, and one attack over an ε grid in one call.

References:
  Athalye et al. 2018, "Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.attacks import _checks


def eot(attack: Callable, eot_samples: int) -> Callable:
  """The same attack with its gradient averaged over `eot_samples` keys (vmap over keys).

  Works for every attack that takes `eot_samples` (fgsm, fgm, pgd, apgd). On a deterministic
  `logits_fn` it equals the plain attack.
  """
  _checks.check_count('eot', 'eot_samples', eot_samples)
  return functools.partial(attack, eot_samples=eot_samples)


def over_epsilons(attack: Callable, logits_fn, key, x, y, epsilons, **hyper) -> jax.Array:
  """Runs `attack` for every ε of `epsilons` in one vmapped, compiled call.

  Returns:
    x_adv of shape (len(epsilons),) + x.shape; entry i equals `attack(..., epsilon=epsilons[i])`.
  """
  if isinstance(epsilons, str):
    raise ValueError(f'over_epsilons: epsilons must be numbers, got {epsilons!r}')
  eps = jnp.asarray(epsilons, x.dtype)
  c = _checks.concrete(eps)
  if eps.ndim != 1:
    raise ValueError(f'over_epsilons: epsilons must be 1-D, got shape {eps.shape}')
  if eps.shape[0] == 0:
    # An empty grid would return an empty stack, whose accuracy is a mean over nothing (NaN).
    raise ValueError('over_epsilons: epsilons is empty; give at least one epsilon')
  if c is not None and (np.any(c < 0) or not np.all(np.isfinite(c))):
    raise ValueError(f'over_epsilons: every epsilon must be finite and >= 0, got {c}')
  # Value checks on x and y run once, here, with concrete inputs (inside vmap ε is a tracer).
  _checks.check_inputs(logits_fn, x, y, name='over_epsilons', key=key, bounds=hyper.get('bounds', (0.0, 1.0)))
  return jax.vmap(lambda e: attack(logits_fn, key, x, y, epsilon=e, **hyper))(eps)
