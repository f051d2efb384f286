"""Accuracy over a dataset, batch by batch: clean, and under a list of attacks with the per-point
worst case. A point whose logits are not finite is never counted as correct.

References:
  Croce & Hein 2020 (per-point worst case over an attack ensemble), arXiv:2003.01690
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxrobust.attacks import as_pytree_fn
from jaxrobust.attacks._checks import logits_shape
from jaxrobust import keys
from jaxrobust.counts import is_count


class NonFiniteLogitsError(FloatingPointError):
  """The model's logits are NaN or infinite: no accuracy can be computed from them."""


def as_unit_float(images) -> jax.Array:
  """uint8 pixels scaled to [0,1], or floats in [0,1] taken as they are.

  Raises:
    ValueError: for any other dtype (int64 pixels in 0..255, bools), or floats outside [0,1]
      (pixels in 0..255, or normalised images): taken as they are they would be read as values
      far outside the input domain, so they are refused rather than guessed at.
  """
  if isinstance(images, jax.Array) and not isinstance(images, jax.core.Tracer):
    # A batch on its devices (perhaps sharded) stays there: the checks bring two numbers home.
    if images.dtype == jnp.uint8:
      return images.astype(jnp.float32) / 255.0
    if not jnp.issubdtype(images.dtype, jnp.floating):
      raise ValueError(
        f'images has dtype {images.dtype}: give uint8 pixels in 0..255 (scaled to [0,1]) or floats in [0,1]'
      )
    if images.size:
      lo, hi = float(jnp.nanmin(images)), float(jnp.nanmax(images))
      if lo < 0.0 or hi > 1.0:
        raise ValueError(
          f'images are floats in [{lo}, {hi}]: give floats in [0,1] or uint8 pixels in 0..255 '
          '(normalisation lives inside the model)'
        )
    return images
  a = np.asarray(images)
  if a.dtype == np.uint8:
    return jnp.asarray(a, jnp.float32) / 255.0
  if not jnp.issubdtype(a.dtype, jnp.floating):
    raise ValueError(
      f'images has dtype {a.dtype}: give uint8 pixels in 0..255 (scaled to [0,1]) or floats in [0,1]'
    )
  if a.size:
    lo, hi = np.nanmin(a), np.nanmax(a)
    if lo < 0.0 or hi > 1.0:
      raise ValueError(
        f'images are floats in [{lo}, {hi}]: give floats in [0,1] or uint8 pixels in 0..255 '
        '(normalisation lives inside the model)'
      )
  return jnp.asarray(a)


@jax.jit
def _correct_and_finite(logits_fn, x, y, key):
  logits = logits_fn(x, key)
  finite = jnp.all(jnp.isfinite(logits), axis=-1)
  return (jnp.argmax(logits, -1) == y) & finite, finite


def correct(logits_fn, x, y, key) -> tuple[np.ndarray, np.ndarray]:
  """(correct, finite) per example: correct needs finite logits and the right argmax.

  Raises:
    ValueError: labels that are not integers in [0, number of classes): a label no logit can
      match would count as an error of the model.
  """
  f = as_pytree_fn(logits_fn)
  labels = np.asarray(y)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integers, got dtype {labels.dtype}')
  classes = logits_shape(f, jnp.asarray(x))[-1]
  if labels.size and (labels.min() < 0 or labels.max() >= classes):
    raise ValueError(
      f'labels must lie in [0, {classes}) (the model has {classes} classes), got [{labels.min()}, {labels.max()}]'
    )
  ok, finite = _correct_and_finite(f, x, y, key)
  return np.asarray(ok), np.asarray(finite)


def check_dataset(images, labels, batch_size: int, name: str) -> None:
  """Refuses, naming `name`, a split of no images, a label count other than the image count or a
  batch_size below 1."""
  if not is_count(batch_size, 1):
    raise ValueError(f'{name}: batch_size must be >= 1, got {batch_size}')
  if len(images) != len(labels):
    raise ValueError(f'{name}: {len(images)} images but {len(labels)} labels')
  if len(images) == 0:  # an accuracy over no example is undefined, never 0 or NaN
    raise ValueError(f'{name}: images is empty')


def clean_accuracy(logits_fn, images, labels, *, key, batch_size: int = 500) -> float:
  """Clean accuracy over a split (one stochastic pass per batch, key folded with the offset).

  Raises:
    ValueError: for no images, labels whose count differs from the images', batch_size < 1.
    NonFiniteLogitsError: when any logit is NaN or infinite (the model is broken, not robust).
  """
  check_dataset(images, labels, batch_size, 'clean_accuracy')
  hits, bad = 0, 0
  for i in range(0, len(images), batch_size):
    ok, finite = correct(
      logits_fn,
      as_unit_float(images[i : i + batch_size]),
      jnp.asarray(labels[i : i + batch_size]),
      keys.batch_keys(key, i).clean,
    )
    hits += int(ok.sum())
    bad += int((~finite).sum())
  if bad:
    raise NonFiniteLogitsError(
      f'clean_accuracy: the model gives non-finite logits on {bad} of {len(images)} examples'
    )
  return hits / len(images)


class RobustAccuracy(NamedTuple):
  """What `robust_accuracy` measured.

  Attributes:
    accuracy: {'clean': acc, <attack name>: acc, ..., 'worst_case': acc}; worst case = correct
      clean and under every attack, per point.
    per_example: the same names -> bool array (N,), True where the point is classified right.
    n: the number of points.
    non_finite: the points with non-finite logits anywhere (never counted as correct).
    scores: with `score_candidate`, {'clean' and each attack: its per-point scores over all the
      points (e.g. `estimator.candidate_scores`, for `estimator.worst_case`)}; None otherwise.
  """

  accuracy: dict[str, float]
  per_example: dict[str, np.ndarray]
  n: int
  non_finite: int
  scores: dict[str, dict[str, np.ndarray]] | None = None


def robust_accuracy(
  logits_fn,
  images,
  labels,
  attacks: Mapping[str, Callable],
  *,
  key,
  batch_size: int = 256,
  eval_draws: int = 1,
  score_candidate: Callable | None = None,
  progress: bool = False,
) -> RobustAccuracy:
  """Accuracy under each attack and the per-example worst case, batch by batch over a dataset.

  Args:
    logits_fn: `logits_fn(x, key) -> logits`.
    images: (N, ...) uint8 pixels (scaled to [0,1]) or floats in [0,1].
    labels: (N,) int labels.
    attacks: name -> `attack(logits_fn, key, x, y) -> x_adv` (e.g. a functools.partial of pgd).
    key: PRNG key; each batch and attack gets its own fold.
    batch_size: examples per batch (>= 1).
    eval_draws: for stochastic models, an example counts as correct only if it is classified
      correctly in all of this many fresh forward passes (1 = a single draw, as usually published).
    score_candidate: `score_candidate(x, y, start) -> {field: per-point array}`, called on every
      candidate of every batch (the clean points and each attack's), `start` the batch's first
      point; e.g. `estimator.scorer`, so that a stochastic model's worst case can be selected
      over the candidates and measured on fresh draws.
    progress: show a tqdm bar.

  Returns:
    a `RobustAccuracy`: accuracy and per-point outcome under every attack and in the worst case,
    and the count of points with non-finite logits (which never count as correct).

  Raises:
    ValueError: for no images, labels whose count differs from the images', batch_size < 1,
      eval_draws < 1.
  """
  check_dataset(images, labels, batch_size, 'robust_accuracy')
  if not is_count(eval_draws, 1):
    raise ValueError(f'robust_accuracy: eval_draws must be an integer >= 1, got {eval_draws!r}')
  logits_fn = as_pytree_fn(logits_fn)
  n = len(images)
  names = ['clean'] + list(attacks)
  parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
  non_finite = []

  def correct_all_draws(x, y, k):
    ok, fin = np.ones(y.shape, bool), np.ones(y.shape, bool)
    for d in range(eval_draws):
      o, f = correct(logits_fn, x, y, keys.draw_key(k, d))
      ok, fin = ok & o, fin & f
    return ok, fin

  scored: dict[str, list[dict[str, np.ndarray]]] = {k: [] for k in names}
  for i in tqdm(range(0, n, batch_size), disable=not progress, desc='evaluate'):
    x = as_unit_float(images[i : i + batch_size])
    y = jnp.asarray(labels[i : i + batch_size])
    kb = keys.batch_keys(key, i)
    ok, fin = correct_all_draws(x, y, kb.clean)
    parts['clean'].append(ok)
    bad = ~fin
    if score_candidate is not None:
      scored['clean'].append(score_candidate(x, y, i))
    for j, (name, attack) in enumerate(attacks.items(), start=1):
      k_attack, k_predict = keys.attack_keys(kb, j)
      x_adv = attack(logits_fn, k_attack, x, y)
      ok, fin = correct_all_draws(x_adv, y, k_predict)
      parts[name].append(ok)
      bad = bad | ~fin
      if score_candidate is not None:
        scored[name].append(score_candidate(x_adv, y, i))
    non_finite.append(bad)
  per = {k: np.concatenate(v) for k, v in parts.items()}
  per['worst_case'] = np.logical_and.reduce([per[k] for k in names])
  return RobustAccuracy(
    accuracy={k: float(v.mean()) for k, v in per.items()},
    per_example=per,
    n=n,
    non_finite=int(np.concatenate(non_finite).sum()),
    scores=None if score_candidate is None else {k: join_batches(v) for k, v in scored.items()},
  )


def join_batches(parts) -> dict[str, np.ndarray]:
  """Per-point fields of consecutive batches ({field: array} each) as one {field: array}."""
  return {f: np.concatenate([np.asarray(p[f]) for p in parts]) for f in parts[0]}
