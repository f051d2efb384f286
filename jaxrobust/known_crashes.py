"""Releases of JAX's CPU backend known to crash jaxrobust's models, and the warning that names them.

jaxlib 0.10.2 and 0.11.0 fuse a WideResNet's forward pass on the CPU into one YNNPACK graph whose
execution intermittently corrupts the heap (`free(): invalid pointer`, `corrupted double-linked
list`, segmentation faults), on some CPUs and not others (docs/known-crashes.md).
`pyproject.toml` excludes both; a process that has one anyway (an install without dependency
resolution, a pinned environment) is warned once at import, with the two ways out.
"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import PackageNotFoundError, version

CRASHING_JAXLIB = frozenset({'0.10.2', '0.11.0'})
# Turns XLA's YNNPACK fusions off (every kind of them); set before JAX starts.
YNN_FUSION_OFF = '--xla_cpu_experimental_ynn_fusion_type='


def installed_jaxlib() -> str | None:
  try:
    return version('jaxlib')
  except PackageNotFoundError:
    return None


def warn_if_crashing(jaxlib_version: str | None = None, xla_flags: str | None = None) -> bool:
  """Warns (RuntimeWarning) when the installed jaxlib is a crashing release and YNNPACK fusion
  is not turned off in XLA_FLAGS; returns whether it warned."""
  jaxlib_version = installed_jaxlib() if jaxlib_version is None else jaxlib_version
  flags = os.environ.get('XLA_FLAGS', '') if xla_flags is None else xla_flags
  if jaxlib_version not in CRASHING_JAXLIB or any(f.strip() == YNN_FUSION_OFF for f in flags.split()):
    return False
  warnings.warn(
    f'jaxlib {jaxlib_version} intermittently crashes the process on the CPU while running '
    f"WideResNets (XLA's YNNPACK fusion). Install another release (pip install "
    f'"jaxlib!=0.10.2,!=0.11.0"), or set XLA_FLAGS={YNN_FUSION_OFF} before JAX starts. '
    f'See docs/known-crashes.md in the jaxrobust repository.',
    RuntimeWarning,
    stacklevel=3,
  )
  return True
