"""Certified lower bounds on robust accuracy, beside the attacks' upper bounds.

Like `jaxrobust.attacks`, this package takes plain functions (`logits_fn(x, key)` or a model's
`apply(variables, x)`) and imports nothing of the models or training.

Components:
  interval_bounds, verified_accuracy    L∞ interval bounds through any JAX model (Gowal et al.)
  propagate_box, Interval               the interval evaluator under them
  worst_case_logits                     the certified-training logits
  smooth_predict, smooth_certify        randomized smoothing's PREDICT and CERTIFY (Cohen et al.)
  certified_accuracy                    certified accuracy at a list of L2 radii
  smoothed_soft_logits                  the smoothed soft classifier, for SmoothAdv-style attacks
"""

from jaxrobust.certify.intervals import (
  Interval,
  interval_bounds,
  linf_box,
  propagate_box,
  verified,
  verified_accuracy,
  worst_case_logits,
)
from jaxrobust.certify.smoothing import (
  ABSTAIN,
  Certificate,
  certified_accuracy,
  class_counts,
  clopper_pearson_lower,
  smooth_certify,
  smooth_predict,
  smoothed_soft_logits,
)

__all__ = [
  'ABSTAIN',
  'Certificate',
  'Interval',
  'certified_accuracy',
  'class_counts',
  'clopper_pearson_lower',
  'interval_bounds',
  'linf_box',
  'propagate_box',
  'smooth_certify',
  'smooth_predict',
  'smoothed_soft_logits',
  'verified',
  'verified_accuracy',
  'worst_case_logits',
]
