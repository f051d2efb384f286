"""The one test of a count argument (classes, widths, samples, examples): an integer, not a bool,
at least some minimum. Library modules word their own errors around it."""

from __future__ import annotations

import numbers


def is_count(v, low: int) -> bool:
  """True for an integer (numpy's included; bools excluded: True is not a count) that is >= low."""
  return not isinstance(v, bool) and isinstance(v, numbers.Integral) and int(v) >= low
