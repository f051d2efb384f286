"""Composition: EOT around any gradient attack, one attack over an ε grid in one call, and the
robust accuracy of a model under a list of attacks with the per-example worst case.

References:
  Athalye et al. 2018, "Obfuscated Gradients Give a False Sense of Security", arXiv:1802.00420
  Croce & Hein 2020 (per-point worst case over an attack ensemble), arXiv:2003.01690
"""
from __future__ import annotations

import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxrobust.attacks import _core


def eot(attack: Callable, num_samples: int) -> Callable:
  """The same attack with its gradient averaged over `num_samples` keys (vmap over keys).

  Works for every attack that takes `eot_samples` (fgsm, fgm, pgd, apgd). On a deterministic
  `logits_fn` it equals the plain attack.
  """
  if num_samples < 1:
    raise ValueError(f'eot: num_samples must be >= 1, got {num_samples}')
  return functools.partial(attack, eot_samples=num_samples)


def over_epsilons(attack: Callable, logits_fn, key, x, y, epsilons, **hyper) -> jax.Array:
  """Runs `attack` for every ε of `epsilons` in one vmapped, compiled call.

  Returns:
    x_adv of shape (len(epsilons),) + x.shape; entry i equals `attack(..., epsilon=epsilons[i])`.
  """
  eps = jnp.asarray(epsilons, x.dtype)
  c = _core.concrete(eps)
  if eps.ndim != 1:
    raise ValueError(f'over_epsilons: epsilons must be 1-D, got shape {eps.shape}')
  if c is not None and (np.any(c < 0) or np.any(np.isnan(c))):
    raise ValueError(f'over_epsilons: every epsilon must be >= 0, got {c}')
  # Value checks on x and y run once, here, with concrete inputs (inside vmap ε is a tracer).
  _core.check_inputs(logits_fn, x, y, bounds=hyper.get('bounds', (0.0, 1.0)), name='over_epsilons')
  return jax.vmap(lambda e: attack(logits_fn, key, x, y, epsilon=e, **hyper))(eps)


@functools.partial(jax.jit, static_argnames=())
def _correct(logits_fn, x, y, key):
  return jnp.argmax(logits_fn(x, key), -1) == y


def robust_accuracy(logits_fn, images, labels, attacks: Mapping[str, Callable], *, key,
                    batch_size: int = 256, eval_draws: int = 1, progress: bool = False) -> dict:
  """Accuracy under each attack and the per-example worst case, batch by batch over a dataset.

  Args:
    logits_fn: `logits_fn(x, key) -> logits`.
    images: (N, ...) uint8 pixels (scaled to [0,1]) or floats in [0,1].
    labels: (N,) int labels.
    attacks: name -> `attack(logits_fn, key, x, y) -> x_adv` (e.g. a functools.partial of pgd).
    key: PRNG key; each batch and attack gets its own fold.
    batch_size: examples per batch.
    eval_draws: for stochastic models, an example counts as correct only if it is classified
      correctly in all of this many fresh forward passes (1 = a single draw, as usually
      published).
    progress: show a tqdm bar.

  Returns:
    {'clean': acc, <attack name>: acc, ..., 'worst_case': acc, 'n': N,
     'per_example': {name: bool array (N,)}}. Worst case: correct clean and under every attack.
  """
  logits_fn = _core.as_pytree_fn(logits_fn)
  n = len(images)
  names = ['clean'] + list(attacks)
  per = {k: [] for k in names}

  def correct(x, y, k):
    ok = jnp.ones(y.shape, bool)
    for d in range(eval_draws):
      ok = ok & _correct(logits_fn, x, y, jax.random.fold_in(k, d))
    return np.asarray(ok)

  for i in tqdm(range(0, n, batch_size), disable=not progress, desc='evaluate'):
    xb = images[i:i + batch_size]
    x = jnp.asarray(xb, jnp.float32) / 255.0 if np.asarray(xb).dtype == np.uint8 else jnp.asarray(xb)
    y = jnp.asarray(labels[i:i + batch_size])
    kb = jax.random.fold_in(key, i)
    per['clean'].append(correct(x, y, jax.random.fold_in(kb, 0)))
    for j, (name, attack) in enumerate(attacks.items(), start=1):
      x_adv = attack(logits_fn, jax.random.fold_in(kb, 2 * j), x, y)
      per[name].append(correct(x_adv, y, jax.random.fold_in(kb, 2 * j + 1)))
  per = {k: np.concatenate(v) if v else np.zeros(0, bool) for k, v in per.items()}
  worst = np.logical_and.reduce([per[k] for k in names]) if n else np.zeros(0, bool)
  out = {k: float(v.mean()) if n else float('nan') for k, v in per.items()}
  out['worst_case'] = float(worst.mean()) if n else float('nan')
  out['n'] = n
  out['per_example'] = dict(per, worst_case=worst)
  return out
