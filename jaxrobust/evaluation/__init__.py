"""Evaluation: attack suites, robust accuracy with stochastic-model extras, Table 1, figures."""
from jaxrobust.evaluation.evaluator import (accuracy_vs_epsilon, deterministic_surrogate, evaluate_model,
                                           examples_and_confidence,
                                           inference_ms_per_image)
from jaxrobust.evaluation import figures
from jaxrobust.evaluation.report import table_markdown, write_table
from jaxrobust.evaluation.suites import SUITES, attack_suite, linf_budget
