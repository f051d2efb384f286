"""A trained model's certification bracket on its test set: the one the `jaxrobust certify`
command and the study's certified rows share (`jaxrobust.certify.bracket` computes it from plain
functions; this module adds the model, its declared traits, the images and the keys)."""

from __future__ import annotations

import numpy as np

from jaxrobust import keys
from jaxrobust.certify.bracket import (
  IntervalSettings,
  SmoothingSettings,
  check_settings,
  interval_bracket,
  smoothing_bracket,
)
from jaxrobust.counts import is_count
from jaxrobust.evaluation.accuracy import as_unit_float
from jaxrobust.models import make_logits_fn, model_traits


def refuse_stochastic(model, source: str = 'model') -> None:
  """Raises ValueError (naming `source`) for a model whose declared traits say it is stochastic:
  a certificate holds for a deterministic base classifier only."""
  if model_traits(model).stochastic:
    raise ValueError(
      f'{source}: model {type(model).__name__} is stochastic (its traits say it draws noise in the '
      'forward pass); a certificate needs a deterministic base classifier: deterministic models only'
    )


def certify_test_set(
  model,
  variables,
  dataset,
  settings: SmoothingSettings | IntervalSettings,
  *,
  seed: int,
  num_test: int = 0,
  source: str = 'model',
) -> dict:
  """The bracket of `settings` (randomized smoothing or interval bounds) on the first `num_test`
  test images of `dataset` (0: all of them), its draws from the run's evaluation root
  (`keys.evaluation_key(seed)`, then `EvalKeys.certify`).

  Raises:
    ValueError: a bad setting, num_test outside [0, the test set's size], or a model whose traits
      say it is stochastic (a certificate needs a deterministic base classifier), naming `source`.
  """
  check_settings(settings)
  refuse_stochastic(model, source)
  size = len(dataset.test_labels)
  if not is_count(num_test, 0) or num_test > size:
    raise ValueError(
      f'num_test must be an integer in [0, {size}] (the {dataset.name} test set; 0 = all), got {num_test!r}'
    )
  n = num_test or size
  x, y = np.asarray(as_unit_float(dataset.test_images[:n])), np.asarray(dataset.test_labels[:n])
  ck = keys.certify_keys(keys.eval_keys(keys.evaluation_key(seed)).certify)
  f = make_logits_fn(model, variables)
  if isinstance(settings, SmoothingSettings):
    return smoothing_bracket(f, x, y, settings, ck)
  return interval_bracket(model.apply, variables, f, x, y, settings, ck)
