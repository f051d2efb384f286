"""Does a Table 1 row reproduce on this machine? Rerun it from its record and compare.

  python -m experiments.evaluate --check-reproduces=results/demo/fashion_mnist/rows/pgd_at.json

The row is trained and evaluated again, from the seed and settings its record stores
('invocation'), in a scratch directory (nothing of the recorded run is touched). The verdict:

- 'bit for bit': every number and every per-example outcome is the same (same program, same
  machine kind, same versions: docs/reproducibility.md);
- 'to a tolerance': no accuracy moved by more than `tolerance` (another CPU, another convolution
  path, another jaxlib: float reductions round differently and training drifts a little);
- 'not at all': some accuracy moved by more, or the two records do not hold the same numbers.

Beside the verdict stand the environment fields (versions, XLA flags, device, CPU) that differ
between the record and this process, so a reader can tell a machine from a bug.
"""

from __future__ import annotations

import os
import tempfile

from jaxrobust.files import write_json_atomic

from jaxrobust.reproduce import (  # noqa: F401  (the comparison is the library's)
  BIT_FOR_BIT,
  DEFAULT_TOLERANCE,
  NOT_AT_ALL,
  TO_A_TOLERANCE,
  Reproduction,
  compare,
  counts,
  numbers,
  read_results_file,
  report,
  verdict_record,
)


def load_record(path: str) -> dict:
  """A Table 1 row record that names how it was made.

  Raises:
    ValueError: naming the file, when it is not JSON or not a row record with an invocation.
  """
  record = read_results_file(path)
  if not isinstance(record, dict) or not {'row', 'dataset', 'result'} <= record.keys():
    raise ValueError(f'{path}: not a Table 1 row record (results/<dataset>/rows/<row>.json)')
  if not isinstance(record.get('invocation'), dict):
    raise ValueError(
      f'{path}: the record does not say how it was made (no "invocation"): it was written before '
      'rows recorded their settings; run the row again (experiments.table1 --force) to get one'
    )
  return record


def check_reproduces(
  path: str,
  *,
  tolerance: float = DEFAULT_TOLERANCE,
  scratch: str | None = None,
  progress: bool = True,
  rerun_out: str | None = None,
) -> Reproduction:
  """Reruns the row recorded in `path` here, in a scratch directory, and compares. With
  `rerun_out`, the rerun's own row record is also kept there, as `<row>.json`.

  Raises:
    ValueError: for a bad file (named) or a tolerance outside [0, 1].
    FileExistsError: `rerun_out` already holds the row's record (checked before the rerun).
  """
  if not 0 <= tolerance <= 1:
    raise ValueError(f'tolerance must be in [0, 1] (a fraction of the test images), got {tolerance}')
  record = load_record(path)
  kept = os.path.join(rerun_out, f'{record["row"]}.json') if rerun_out else None
  if kept and os.path.exists(kept):
    raise FileExistsError(f'{kept} exists: rerun_out keeps a new record, it never replaces one')
  from experiments.table1 import table1_row

  with tempfile.TemporaryDirectory(dir=scratch) as tmp:
    rerun = table1_row(
      record['row'],
      record['dataset'],
      runs_dir=os.path.join(tmp, 'runs'),
      out_dir=os.path.join(tmp, 'results'),
      force=True,
      progress=progress,
      **record['invocation'],
    )
    if kept:
      write_json_atomic(kept, rerun, indent=1)
  return compare(record, rerun, tolerance=tolerance)
