"""What an evaluation returns: one typed value per kind of suite, each with `to_record()`, the flat
JSON layout of the results files (Table 1's rows, eval_<suite>.json) that reports read back.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np

from jaxrobust.evaluation.estimator import WorstCase


class Grid(NamedTuple):
  """PGD-L∞ accuracy at each ε of a grid."""

  epsilons: tuple[float, ...]
  steps: int
  accuracy: list[float]

  def to_record(self) -> dict:
    return {
      'epsilon_grid': list(self.epsilons),
      'grid_steps': self.steps,
      'accuracy_vs_epsilon': self.accuracy,
    }


class AutoAttackRun(NamedTuple):
  """AutoAttack over a test set.

  Attributes:
    clean: clean accuracy (one draw).
    accuracy: the final robust accuracy.
    version: 'standard' or 'rand'.
    report: accuracy after each attack, points broken, seconds, sanity checks.
    robust: per image, not broken by any of its attacks.
    stochastic: whether the model is randomised.
    points: its adversarial points (host array), when asked to keep them; never in a record.
  """

  clean: float
  accuracy: float
  version: str
  report: dict
  robust: np.ndarray
  stochastic: bool
  points: np.ndarray | None = None

  def column(self) -> dict:
    """The AutoAttack column's fields of a record."""
    return {'autoattack': self.accuracy, 'autoattack_version': self.version, 'autoattack_report': self.report}


class SuiteResult(NamedTuple):
  """The 'study' and 'standard' suites.

  Attributes:
    suite: the suite's name.
    stochastic: the model's declared trait.
    n: images evaluated.
    non_finite: images whose logits were not finite under some attack (counted as wrong).
    accuracy: 'clean', each attack's column, 'transfer' (stochastic models), 'worst_case' (per
      point, over every attack and AutoAttack when it ran).
    per_example: per column, whether each image stayed correct.
    attacks: the attack specs that ran.
    clean_all_of_k_draws: stochastic models: clean accuracy when every one of `eval_draws` fresh
      draws must be right (None otherwise).
    eval_draws: those draws (None for a deterministic model).
    autoattack: AutoAttack beside the suite, or None.
    grid: the ε grid, or None.
    verified_linf: the share of images that interval bounds verify at the suite's L∞ ε (None for
      a randomised model), and `verified_note` says which.
    ms_per_image: one forward pass, per image.
    selected: a stochastic model's worst case selected and measured (`estimator.worst_case` over
      the clean points, every attack's and AutoAttack's, each scored on the batch's estimator
      draws); None for a deterministic model, whose `worst_case` is already exact.
    estimator_draws: (selection, measurement) draws of `selected` (None without it).
  """

  suite: str
  stochastic: bool
  n: int
  non_finite: int
  accuracy: dict
  per_example: dict
  attacks: dict
  clean_all_of_k_draws: float | None
  eval_draws: int | None
  autoattack: AutoAttackRun | None
  grid: Grid | None
  verified_linf: float | None
  verified_note: str
  ms_per_image: float
  selected: WorstCase | None = None
  estimator_draws: tuple[int, int] | None = None

  def to_record(self) -> dict:
    r = dict(self.accuracy, n=self.n, non_finite=self.non_finite, per_example=self.per_example)
    if self.selected is not None and self.estimator_draws is not None:
      w = self.selected
      r.update(
        selection_draws=self.estimator_draws[0],
        measurement_draws=self.estimator_draws[1],
        worst_case_selected=w.majority,
        worst_case_selected_interval=list(w.majority_interval),
        worst_case_selected_expected=w.expected,
        worst_case_selected_expected_interval=list(w.expected_interval),
        worst_case_selected_chosen={k: int((w.chosen == i).sum()) for i, k in enumerate(w.names)},
      )
      r['per_example'] = dict(
        self.per_example,
        worst_case_selected=w.won.tolist(),
        worst_case_selected_expected=w.per_point.tolist(),
      )
    r.update(stochastic=self.stochastic, suite=self.suite, attacks=self.attacks)
    if self.eval_draws is not None:
      r.update(clean_all_of_k_draws=self.clean_all_of_k_draws, eval_draws=self.eval_draws)
    if self.autoattack is not None:
      r.update(self.autoattack.column())
    if self.grid is not None:
      r.update(self.grid.to_record())
    r.update(
      verified_linf=self.verified_linf, verified_note=self.verified_note, ms_per_image=self.ms_per_image
    )
    return r


class AutoAttackResult(NamedTuple):
  """The 'autoattack' and 'autoattack_rand' suites: AutoAttack alone, and the ε grid."""

  suite: str
  run: AutoAttackRun
  grid: Grid | None
  ms_per_image: float

  def to_record(self) -> dict:
    r = {'clean': self.run.clean, **self.run.column(), 'stochastic': self.run.stochastic}
    r.update(per_example={'autoattack': self.run.robust.tolist()}, suite=self.suite)
    if self.grid is not None:
      r.update(self.grid.to_record())
    r['ms_per_image'] = self.ms_per_image
    return r


class AdaptiveResult(NamedTuple):
  """The adaptive protocol (`evaluation/adaptive.py`, `evaluate_adaptive` documents each field)."""

  clean: dict
  attacks: dict
  worst_case: float
  worst_case_interval: list
  worst_case_expected: float
  worst_case_expected_interval: list
  worst_case_chosen: dict
  and_of_majority_votes: float
  selection_draws: int
  flags: dict
  n: int
  num_draws: int
  eot_samples: int
  seconds: dict
  per_example: dict
  suite: str = 'adaptive'
  stochastic: bool | None = None
  ms_per_image: float | None = None

  def to_record(self) -> dict:
    return self._asdict()


EvalResult = Union[SuiteResult, AutoAttackResult, AdaptiveResult]
