"""Composition: EOT around any gradient attack, the expected-probability model of a stochastic
one, and one attack over an ε grid in one call.

References:
  Athalye et al. 2018, "Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420
  Tramèr, Carlini, Brendel & Madry 2020, "On Adaptive Attacks to Adversarial Example Defenses",
  NeurIPS (attack the expected prediction, not the average of per-draw losses)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.attacks import _checks
from jaxrobust.attacks._loop import as_pytree_fn


def eot(attack: Callable, eot_samples: int) -> Callable:
  """The same attack with its gradient averaged over `eot_samples` keys (vmap over keys).

  Works for every attack that takes `eot_samples` (fgsm, fgm, pgd, apgd). On a deterministic
  `logits_fn` it equals the plain attack.
  """
  _checks.check_count('eot', 'eot_samples', eot_samples)
  return functools.partial(attack, eot_samples=eot_samples)


@dataclasses.dataclass(frozen=True)
class _MeanProbability:
  """log E_k[softmax f(x, k)] over `samples` keys split from the call's key (hashable by value,
  so that two wrappers of the same size share one compiled attack)."""

  samples: int

  def __call__(self, logits_fn, x, key):
    logp = jax.vmap(lambda k: jax.nn.log_softmax(logits_fn(x, k), -1))(jax.random.split(key, self.samples))
    return jax.nn.logsumexp(logp, 0) - jnp.log(self.samples)


def mean_probability(logits_fn, samples: int) -> jax.tree_util.Partial:
  """A `logits_fn` whose logits are log E_k[softmax f(x, k)], the log of the class probabilities
  averaged over `samples` draws of a stochastic model (each call splits its key into the draws).

  Any attack run on it attacks the model's expected prediction: cross-entropy on these logits is
  −log E_k[p_y(x, k)], the expected-probability loss, with gradient −E_k[∇p_y] / E_k[p_y]. EOT
  (`eot_samples`) averages the per-draw losses instead, with gradient −E_k[∇p_y / p_y], in which
  the draws that already miss y (small p_y) dominate; a majority vote is decided by the draws that
  still hit it. The logits are log-probabilities (they sum to 1 after exp).

  Raises:
    ValueError: for samples not an integer >= 1.
  """
  _checks.check_count('mean_probability', 'samples', samples)
  return jax.tree_util.Partial(_MeanProbability(int(samples)), as_pytree_fn(logits_fn))


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
