"""The per-point worst case of a stochastic model, estimated by selecting, then measuring.

Each point has candidates: itself and every attack's adversarial example. On *selection* draws
of the model, the candidate the model handles worst is chosen (lowest accuracy over the draws,
ties broken by the lowest mean margin of the true class). The chosen candidate is then
classified on *fresh measurement* draws, whose keys were never used to select. The estimate is
the accuracy over the measurement draws: as expected accuracy (mean over draws and points) and
as majority vote over the draws, each with a 95 % interval.

Why not the AND over attacks of each attack's own majority vote: with independent draws per
attack, a point right with probability 0.7 per draw wins one majority vote with probability
≈ 0.85 and ten independent ones with ≈ 0.2, even when no attack moved it, so that statistic
counts prediction noise as attack success and falls with every attack added. Selecting on some
draws and measuring on others removes that bias (the choice cannot see the measurement's noise),
and on a deterministic model selection and measurement coincide.

What it estimates: the accuracy of the candidates chosen on the selection draws, without bias.
That is not the per-point minimum over candidates: where S selection draws cannot tell two close
candidates apart, the chosen one may be the better, and the estimate errs in the defense's favour
by that much (measurable by measuring every candidate on the measurement draws).

References:
  Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security", ICML
  Tramèr, Carlini, Brendel & Madry 2020, "On Adaptive Attacks to Adversarial Example Defenses",
  NeurIPS
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import attacks as A
from jaxrobust import keys
from jaxrobust.counts import is_count
from jaxrobust.evaluation.accuracy import NonFiniteLogitsError, as_unit_float


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
  """The Wilson score interval of a binomial proportion k/n (95 % for z = 1.96); NaNs for n = 0.

  Raises:
    ValueError: unless k and n are integer counts with 0 ≤ k ≤ n (a share such as 0.5 is not a
      count: its interval would be that of half a trial).
  """
  for name, v in (('k', k), ('n', n)):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
      raise ValueError(f'wilson_interval: {name} must be an integer count, got {v!r}')
  if not 0 <= k <= n:
    raise ValueError(f'wilson_interval: needs 0 <= k <= n, got k={k}, n={n}')
  if n == 0:
    return (float('nan'), float('nan'))
  p = k / n
  centre = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return (max(0.0, centre - half), min(1.0, centre + half))


def mean_interval(values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
  """A normal-approximation interval of the mean of per-point values in [0, 1] (points as the
  sampled unit, so it covers both the test-set sample and the draws' noise); NaNs below 2 values.

  Raises:
    ValueError: for values that are not finite or lie outside [0, 1].
  """
  values = np.asarray(values, float)
  if not (np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()):
    raise ValueError('mean_interval: values must be finite and in [0, 1]')
  n = len(values)
  if n < 2:
    return (float('nan'), float('nan'))
  m, half = float(values.mean()), z * float(values.std(ddof=1)) / math.sqrt(n)
  return (max(0.0, m - half), min(1.0, m + half))


class Draws(NamedTuple):
  """The keys of the two phases: one key per selection draw and per measurement draw."""

  selection: jax.Array
  measurement: jax.Array


def draw_keys(key, selection_draws: int, measurement_draws: int) -> Draws:
  """Selection and measurement keys from one key (split in two: disjoint by construction)."""
  if selection_draws < 1 or measurement_draws < 1:
    raise ValueError(
      f'selection_draws and measurement_draws must be >= 1, got {selection_draws}, {measurement_draws}'
    )
  k_select, k_measure = jax.random.split(key)
  return Draws(jax.random.split(k_select, selection_draws), jax.random.split(k_measure, measurement_draws))


@jax.jit
def _predictions_and_margin(logits_fn, x, y, draw_keys):
  """(draws, batch) predicted class (-1 for non-finite logits) and true-class margin (-inf)."""

  def one(k):
    logits = logits_fn(x, k)
    finite = jnp.all(jnp.isfinite(logits), -1)
    true = jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
    other = jnp.max(jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits), -1)
    return jnp.where(finite, jnp.argmax(logits, -1), -1), jnp.where(finite, true - other, -jnp.inf)

  return jax.lax.map(one, draw_keys)


def refuse_non_finite(pred: np.ndarray, who: str) -> None:
  """Raises NonFiniteLogitsError when any draw's predictions hold the non-finite marker (-1):
  a broken model's draws are not counted as attack success.

  Args:
    pred: (draws, points) predicted classes, -1 where the logits were not finite.
    who: the caller's name, for the message.
  """
  bad = np.asarray(pred) < 0
  if bad.any():
    raise NonFiniteLogitsError(
      f'{who}: the model gives non-finite logits on {int(bad.any(0).sum())} of {bad.shape[1]} points '
      f'({int(bad.sum())} of {bad.size} draws × points); no accuracy can be computed from them'
    )


def plurality(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Per point, whether the true class gets strictly more of the draws' votes than any other.

  Args:
    pred: (draws, B) predicted classes; −1 marks a draw with non-finite logits (a vote for no class).
    y: (B,) labels, each ≥ 0.

  Raises:
    ValueError: for no draws, shapes that do not match, or a negative label (−1 would count the
      non-finite draws as right).
  """
  pred, y = np.asarray(pred), np.asarray(y)
  if pred.ndim != 2 or pred.shape[0] < 1 or y.shape != pred.shape[1:]:
    raise ValueError(f'plurality: needs pred (draws >= 1, B) and y (B,), got {pred.shape} and {y.shape}')
  if y.size and y.min() < 0:
    raise ValueError(f'plurality: labels must be >= 0, got {y.min()}')
  own = (pred == y[None]).sum(0)
  others = np.zeros_like(own)
  for c in np.unique(pred):
    if c >= 0:
      others = np.maximum(others, np.where(y == c, 0, (pred == c).sum(0)))
  return own > others


class WorstCase(NamedTuple):
  """The estimate over the points.

  expected: accuracy over measurement draws and points (the expected accuracy), with
    `expected_interval`;
  majority: the share of points whose chosen candidate wins the vote of the measurement draws
    (the true class gets strictly more votes than any other), with `majority_interval`;
  chosen: per point, the index (in `names`) of the candidate that was measured;
  per_point: per point, the fraction of measurement draws that were right;
  won: per point, whether the chosen candidate won the measurement draws' vote.
  """

  expected: float
  expected_interval: tuple[float, float]
  majority: float
  majority_interval: tuple[float, float]
  names: tuple[str, ...]
  chosen: np.ndarray
  per_point: np.ndarray
  won: np.ndarray


SCORE_FIELDS = ('select_accuracy', 'select_margin', 'measure_mean', 'measure_majority')
"""The per-point fields of `candidate_scores`, in the order it returns them."""


def scores_as_lists(scores: Mapping[str, np.ndarray]) -> dict[str, list]:
  """`candidate_scores` as JSON-ready lists (the form the piece caches store)."""
  return {k: np.asarray(v).tolist() for k, v in scores.items()}


def candidate_scores(logits_fn, x, y, draws: Draws) -> dict[str, np.ndarray]:
  """What the estimator keeps of one batch of candidates (small, so it can be cached as JSON):
  per point, the accuracy and mean true-class margin over the selection draws, and the fraction of
  right measurement draws and whether the true class wins their vote.

  Raises:
    ValueError: when y does not hold one label per point of x.
    NonFiniteLogitsError: when any draw's logits are NaN or infinite.
  """
  if np.shape(y) != np.shape(x)[:1]:
    raise ValueError(
      f'candidate_scores: y has shape {np.shape(y)}; it needs one label per point of x, {np.shape(x)[:1]}'
    )
  f = A.as_pytree_fn(logits_fn)
  y = jnp.asarray(y)
  pred, margin = _predictions_and_margin(f, jnp.asarray(x), y, draws.selection)
  pred_m, _ = _predictions_and_margin(f, jnp.asarray(x), y, draws.measurement)
  pred, pred_m, yn = np.asarray(pred), np.asarray(pred_m), np.asarray(y)
  refuse_non_finite(np.concatenate([pred, pred_m]), 'candidate_scores')
  return {
    'select_accuracy': (pred == yn[None]).mean(0),
    'select_margin': np.asarray(margin).mean(0),
    'measure_mean': (pred_m == yn[None]).mean(0),
    'measure_majority': plurality(pred_m, yn),
  }


def scorer(logits_fn, key, selection_draws: int, measurement_draws: int):
  """`score(x, y, start)`: `candidate_scores` of a batch's candidates on that batch's estimator
  draws (`keys.batch_keys(key, start).estimator`), the same draws for every candidate of a batch
  (`robust_accuracy`'s `score_candidate`; the adaptive suite draws its batches' alike)."""

  def score(x, y, start: int) -> dict[str, np.ndarray]:
    draws = draw_keys(keys.batch_keys(key, start).estimator, selection_draws, measurement_draws)
    return candidate_scores(logits_fn, x, y, draws)

  return score


def worst_case(scores: Mapping[str, Mapping[str, np.ndarray]]) -> WorstCase:
  """Chooses each point's worst candidate by its selection scores and returns the measurement of
  that candidate (`scores`: {candidate name: `candidate_scores` over all points}).

  Every candidate is measured on the same measurement draws, but the choice reads only the
  selection draws, so the measured value of the chosen candidate is an unbiased estimate of its
  accuracy.

  Raises:
    ValueError: for no candidates, a missing field, candidates of different lengths, or values
      that are not finite (a non-finite score never becomes an accuracy).
  """
  names = tuple(scores)
  if not names:
    raise ValueError('worst_case: scores is empty; give at least one candidate (the clean points)')
  n = None
  for name in names:
    for field in SCORE_FIELDS:
      if field not in scores[name]:
        raise ValueError(f'worst_case: scores[{name!r}] has no {field!r}; it needs {SCORE_FIELDS}')
      v = np.asarray(scores[name][field], float)
      n = len(v) if n is None else n
      if v.shape != (n,):
        raise ValueError(
          f'worst_case: scores[{name!r}][{field!r}] has shape {v.shape}; every field needs ({n},)'
        )
      if not np.isfinite(v).all():
        raise ValueError(f'worst_case: scores[{name!r}][{field!r}] holds non-finite values')
  acc = np.stack([np.asarray(scores[n]['select_accuracy'], float) for n in names])  # (C, n)
  margin = np.stack([np.asarray(scores[n]['select_margin'], float) for n in names])
  # lexsort sorts by the last key first: accuracy, then margin; index 0 is the worst.
  pick = np.array([np.lexsort((margin[:, j], acc[:, j]))[0] for j in range(acc.shape[1])], int)
  cols = np.arange(acc.shape[1])
  per_point = np.stack([np.asarray(scores[n]['measure_mean'], float) for n in names])[pick, cols]
  wins = np.stack([np.asarray(scores[n]['measure_majority'], bool) for n in names])[pick, cols]
  return WorstCase(
    expected=float(per_point.mean()),
    expected_interval=mean_interval(per_point),
    majority=float(wins.mean()),
    majority_interval=wilson_interval(int(wins.sum()), len(wins)),
    names=names,
    chosen=pick,
    per_point=per_point,
    won=wins,
  )


def select_and_measure(
  logits_fn,
  candidates: Mapping[str, np.ndarray],
  labels,
  *,
  key,
  selection_draws: int = 10,
  measurement_draws: int = 10,
  batch_size: int = 250,
) -> WorstCase:
  """Chooses each point's worst candidate on selection draws and measures it on fresh draws.

  Args:
    logits_fn: `logits_fn(x, key) -> logits` of the (stochastic) model.
    candidates: {name: array of the points' candidates, all of one shape}; include the clean
      inputs under some name, so a point no attack moved is measured as itself.
    labels: the true labels.
    key: the estimator's key (`draw_keys` derives both phases from it).
    selection_draws, measurement_draws: S and N.
    batch_size: points per compiled call.

  Raises:
    ValueError: for no candidates, candidates of different shapes or another number of points
      than labels, draw counts below 1, or candidates that are not images in [0, 1] or uint8
      pixels (`as_unit_float`, the input check of every evaluation entry point).
  """
  if not candidates:
    raise ValueError('select_and_measure: give at least one candidate (the clean inputs)')
  if not is_count(batch_size, 1):
    raise ValueError(f'select_and_measure: batch_size must be an integer >= 1, got {batch_size!r}')
  if len(labels) == 0:  # an accuracy over no point is undefined, never 0 or NaN
    raise ValueError('select_and_measure: labels is empty (no points to measure)')
  arrays: dict[str, Any] = {}
  for n, a in candidates.items():
    try:
      arrays[n] = as_unit_float(a)  # a batch on its devices stays there
    except ValueError as e:
      raise ValueError(f'select_and_measure: candidate {n!r}: {e}') from None
  y = np.asarray(labels)
  first = next(iter(arrays.values()))
  for n, a in arrays.items():
    if a.shape != first.shape or a.shape[0] != len(y):
      raise ValueError(
        f'select_and_measure: candidate {n!r} has shape {a.shape}; every candidate must have '
        f'shape {first.shape} with one point per label ({len(y)})'
      )
  draws = draw_keys(key, selection_draws, measurement_draws)
  parts: dict[str, list[dict[str, np.ndarray]]] = {n: [] for n in arrays}
  for i in range(0, len(y), batch_size):
    for n, a in arrays.items():
      parts[n].append(candidate_scores(logits_fn, a[i : i + batch_size], y[i : i + batch_size], draws))
  return worst_case({n: {k: np.concatenate([p[k] for p in ps]) for k in ps[0]} for n, ps in parts.items()})
