"""What an evaluation is, as one frozen value, and the plan resolved from it once.

`EvalSpec` holds every setting that decides an evaluation's numbers (the suite, its budgets, the
draws); `build_evaluation(spec, traits)` resolves it against a model's declared traits into an
`EvalPlan`: the attack specs of the suite, the one transfer attack, the ε-grid's steps and the
AutoAttack version. The evaluator runs a plan; it resolves nothing itself. Run-time choices that
do not change the numbers (progress bars, the piece cache's folder) are arguments of the call.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

from jaxrobust.evaluation.suites import (
  AUTOATTACK_SUITES,
  STANDARD_BUDGETS,
  SUITES,
  SamplingAttack,
  adaptive_attacks,
  attack_suite,
  linf_budget,
  listed_sampling_attacks,
  sampling_attacks,
  scaled,
  transfer_attack,
)
from jaxrobust.models.traits import ModelTraits
from jaxrobust.counts import is_count


def _positive_int(name: str, v, *, optional: bool = False) -> None:
  if optional and v is None:
    return
  if not is_count(v, 1):
    raise ValueError(f'EvalSpec: {name} must be an integer >= 1{" or None" if optional else ""}, got {v!r}')


def _positive_finite(name: str, v) -> None:
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
    raise ValueError(f'EvalSpec: {name} must be a finite number > 0, got {v!r}')


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """The settings that decide an evaluation's numbers.

  Attributes:
    dataset: the dataset's name (picks the suite's budgets).
    suite: 'study', 'standard', 'autoattack' (AutoAttack's standard version, or its rand version
      for a randomised model), 'autoattack_rand', or 'adaptive' (the adaptive protocol for
      stochastic defenses, `evaluation/adaptive.py`).
    steps_scale: scales every attack's iterations (< 1 for quick runs; at least one step each).
    eot_samples: draws per gradient of the EOT attacks.
    eval_draws: 'study' and 'standard', stochastic models: the clean accuracy when a point must
      be right in all of this many fresh draws.
    batch_size: images per evaluation batch.
    epsilon_grid: PGD-L∞ accuracy at each of these ε (one vmapped call), or None.
    with_autoattack: 'study' and 'standard': AutoAttack beside the suite (the worst case then
      includes it).
    autoattack_scale: scales AutoAttack's iterations and queries apart from `steps_scale` (1: the
      reference's budget).
    eot_microbatch: 'adaptive' only: the gradient chunk of its EOT attacks (None: the default).
    measurement_draws: stochastic models ('adaptive', and 'study' and 'standard' for their
      selected worst case): N, the fresh draws that classify each point's chosen candidate.
    selection_draws: stochastic models, likewise: S, the draws that choose each point's worst
      candidate.
    square_queries: 'adaptive' only: EOT-Square's query budget (before `steps_scale`).
  """

  dataset: str
  suite: str = 'standard'
  steps_scale: float = 1.0
  eot_samples: int = 8
  eval_draws: int = 5
  batch_size: int = 250
  epsilon_grid: tuple[float, ...] | None = None
  with_autoattack: bool = False
  autoattack_scale: float = 1.0
  eot_microbatch: int | None = None
  measurement_draws: int = 10
  selection_draws: int = 10
  square_queries: int = 1000

  def __post_init__(self):
    if self.suite not in SUITES:
      raise ValueError(f'EvalSpec: unknown suite {self.suite!r}; use one of {SUITES}')
    if (self.suite != 'study' or self.with_autoattack) and self.dataset not in STANDARD_BUDGETS:
      raise ValueError(
        f'EvalSpec: no standard budgets for dataset {self.dataset!r}; known: {", ".join(STANDARD_BUDGETS)}'
      )
    _positive_finite('steps_scale', self.steps_scale)
    _positive_finite('autoattack_scale', self.autoattack_scale)
    _positive_int('eot_samples', self.eot_samples)
    _positive_int('eval_draws', self.eval_draws)
    _positive_int('batch_size', self.batch_size)
    _positive_int('eot_microbatch', self.eot_microbatch, optional=True)
    _positive_int('measurement_draws', self.measurement_draws)
    _positive_int('selection_draws', self.selection_draws)
    _positive_int('square_queries', self.square_queries)
    if self.with_autoattack and self.suite not in ('study', 'standard'):
      raise ValueError(
        f"EvalSpec: with_autoattack is for the 'study' and 'standard' suites, not {self.suite!r}"
      )
    if self.eot_microbatch is not None and self.suite != 'adaptive':
      raise ValueError(f"EvalSpec: eot_microbatch is for the 'adaptive' suite, not {self.suite!r}")
    if self.epsilon_grid is not None:
      if isinstance(self.epsilon_grid, str):
        raise ValueError(f'EvalSpec: epsilon_grid must be numbers, got {self.epsilon_grid!r}')
      grid = tuple(self.epsilon_grid)
      for e in grid:
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e) or e < 0:
          raise ValueError(f'EvalSpec: epsilon_grid must be finite numbers >= 0, got {e!r} in {list(grid)}')
      object.__setattr__(self, 'epsilon_grid', tuple(float(e) for e in grid))


class AutoAttackSettings(NamedTuple):
  """AutoAttack as a plan runs it: its version, L∞ radius (the dataset's standard ε, whatever the
  suite), iterations and Square's queries (scaled by `autoattack_scale` for the column beside a
  listed suite, by `steps_scale` otherwise)."""

  version: str
  epsilon: float
  steps: int
  queries: int


class GridSettings(NamedTuple):
  """The accuracy-against-ε grid: its radii and its PGD steps."""

  epsilons: tuple[float, ...]
  steps: int


class ListedPlan(NamedTuple):
  """The 'study' and 'standard' suites resolved for one model.

  Attributes:
    spec: the spec it was built from.
    stochastic: the model's declared trait.
    attacks: the suite's attack specs by column (with EOT-PGD and EOT-APGD for a stochastic model).
    transfer: the PGD-L∞ spec run on a stochastic model's deterministic surrogate (and drawn in
      the example figures).
    linf: the suite's L∞ ε (the verified bound is taken there).
    autoattack: the AutoAttack column, when the spec asks for it.
    grid: the ε grid, when the spec asks for it.
    sampling: a stochastic model's attacks on its sampling at both threats
      (`listed_sampling_attacks`, by its traits), each with the work of the suite's EOT-PGD at
      that threat; empty for a deterministic model.
  """

  spec: EvalSpec
  stochastic: bool
  attacks: dict
  transfer: dict
  linf: float
  autoattack: AutoAttackSettings | None
  grid: GridSettings | None
  sampling: dict[str, SamplingAttack]


class AutoAttackPlan(NamedTuple):
  """The 'autoattack' and 'autoattack_rand' suites resolved for one model: AutoAttack alone (the
  'rand' version for a stochastic model), and the ε grid when the spec asks for it. `transfer`
  is the attack drawn in the example figures."""

  spec: EvalSpec
  stochastic: bool
  autoattack: AutoAttackSettings
  transfer: dict
  grid: GridSettings | None


class AdaptivePlan(NamedTuple):
  """The 'adaptive' suite resolved for one model: `adaptive_attacks`, the transfer attack run on
  each surrogate, AutoAttack (both versions run, at `linf`, with these steps and queries), and
  for a stochastic model the attacks on its sampling (`sampling_attacks`, by its traits)."""

  spec: EvalSpec
  stochastic: bool
  attacks: dict
  transfer: dict
  linf: float
  autoattack: AutoAttackSettings
  sampling: dict[str, SamplingAttack]


EvalPlan = ListedPlan | AutoAttackPlan | AdaptivePlan
PLAN_TYPES = (ListedPlan, AutoAttackPlan, AdaptivePlan)


def build_evaluation(spec: EvalSpec, traits: ModelTraits) -> EvalPlan:
  """Resolves `spec` for a model with `traits`: a `ListedPlan`, `AutoAttackPlan` or `AdaptivePlan`."""
  s, stochastic = spec, traits.stochastic
  listed = s.suite in ('study', 'standard')
  # The column beside a listed suite has its own scale; elsewhere AutoAttack is the suite.
  aa_scale = s.autoattack_scale if listed else s.steps_scale
  suite_of_budgets = s.suite if listed else 'standard'
  transfer = transfer_attack(suite_of_budgets, s.dataset, steps_scale=s.steps_scale)
  linf = linf_budget(suite_of_budgets, s.dataset)
  grid = None if s.epsilon_grid is None else GridSettings(s.epsilon_grid, scaled(10, s.steps_scale))

  def autoattack(version: str) -> AutoAttackSettings:
    return AutoAttackSettings(
      version=version,
      epsilon=linf_budget('standard', s.dataset),
      steps=scaled(100, aa_scale),
      queries=scaled(5000, aa_scale),
    )

  if listed:
    attacks = attack_suite(
      s.suite, s.dataset, stochastic=stochastic, eot_samples=s.eot_samples, steps_scale=s.steps_scale
    )
    column = autoattack('rand' if stochastic else 'standard') if s.with_autoattack else None
    sampling = listed_sampling_attacks(s.dataset, lwta=traits.lwta, attacks=attacks) if stochastic else {}
    return ListedPlan(s, stochastic, attacks, transfer, linf, column, grid, sampling)
  if s.suite == 'adaptive':
    attacks = adaptive_attacks(
      s.dataset,
      eot_samples=s.eot_samples,
      steps_scale=s.steps_scale,
      queries=s.square_queries,
      eot_microbatch=s.eot_microbatch,
    )
    sampling = (
      sampling_attacks(
        s.dataset,
        lwta=traits.lwta,
        eot_samples=s.eot_samples,
        steps_scale=s.steps_scale,
        eot_microbatch=s.eot_microbatch,
      )
      if stochastic
      else {}
    )
    return AdaptivePlan(
      s, stochastic, attacks, transfer, linf, autoattack('rand' if stochastic else 'standard'), sampling
    )
  version = 'rand' if stochastic and s.suite == 'autoattack' else AUTOATTACK_SUITES[s.suite]
  return AutoAttackPlan(s, stochastic, autoattack(version), transfer, grid)
