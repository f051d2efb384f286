"""Evaluation: accuracy over datasets (clean, robust, per-point worst case), attack suites, and the
evaluator: an `EvalSpec` resolved for a model's declared traits into an `EvalPlan`
(`build_evaluation`), run by `evaluate_model` into a typed result. The study's tables and figures
are in experiments/."""

from jaxrobust.evaluation.accuracy import (
  NonFiniteLogitsError,
  RobustAccuracy,
  clean_accuracy,
  correct,
  robust_accuracy,
)
from jaxrobust.evaluation.evaluator import (
  deterministic_surrogate,
  evaluate_autoattack,
  evaluate_model,
  evaluate_test_set,
  examples_and_confidence,
  inference_ms_per_image,
  pgd_accuracy_over_epsilons,
)
from jaxrobust.evaluation.certified import certify_test_set, refuse_stochastic
from jaxrobust.evaluation.estimator import WorstCase, select_and_measure
from jaxrobust.evaluation.results import AdaptiveResult, AutoAttackResult, AutoAttackRun, Grid, SuiteResult
from jaxrobust.evaluation.spec import (
  AdaptivePlan,
  AutoAttackPlan,
  AutoAttackSettings,
  EvalPlan,
  EvalSpec,
  GridSettings,
  ListedPlan,
  build_evaluation,
)
from jaxrobust.evaluation.suites import (
  SUITES,
  STANDARD_BUDGETS,
  attack_suite,
  linf_budget,
  scaled,
  transfer_attack,
)

__all__ = [
  'AdaptiveResult',
  'AutoAttackResult',
  'AutoAttackRun',
  'Grid',
  'SuiteResult',
  'EvalPlan',
  'ListedPlan',
  'AutoAttackPlan',
  'AdaptivePlan',
  'AutoAttackSettings',
  'GridSettings',
  'EvalSpec',
  'evaluate_test_set',
  'certify_test_set',
  'refuse_stochastic',
  'build_evaluation',
  'scaled',
  'WorstCase',
  'select_and_measure',
  'NonFiniteLogitsError',
  'STANDARD_BUDGETS',
  'SUITES',
  'attack_suite',
  'clean_accuracy',
  'correct',
  'deterministic_surrogate',
  'evaluate_autoattack',
  'evaluate_model',
  'examples_and_confidence',
  'inference_ms_per_image',
  'linf_budget',
  'pgd_accuracy_over_epsilons',
  'robust_accuracy',
  'RobustAccuracy',
  'transfer_attack',
]
