"""Metrics as JSON lines in the work directory (written by process 0 only)."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np


def _plain(v):
  if isinstance(v, (np.ndarray, jax.Array)):
    v = np.asarray(v)
    return v.item() if v.ndim == 0 else v.tolist()
  if isinstance(v, (np.floating, np.integer)):
    return v.item()
  return v


class JsonlWriter:
  """Appends one JSON object per call to `<workdir>/metrics.jsonl` (append: nothing is lost)."""

  def __init__(self, workdir: str, filename: str = 'metrics.jsonl', enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, filename)
    if self.enabled:
      os.makedirs(workdir, exist_ok=True)

  def write(self, step: int, **metrics) -> None:
    if not self.enabled:
      return
    row = {'step': int(step), 'time': round(time.time(), 3)}
    row.update({k: _plain(v) for k, v in metrics.items()})
    with open(self.path, 'a') as f:
      f.write(json.dumps(row) + '\n')


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
