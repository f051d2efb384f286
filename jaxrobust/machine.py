"""The machine a measurement was taken on, named in every timing the project writes."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
  """The CPU's model name (/proc/cpuinfo), with its core count."""
  name = platform.processor() or 'unknown'
  try:
    with open('/proc/cpuinfo') as f:
      name = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return f'{name} ({os.cpu_count()} cores)'
