"""Does a result reproduce? Compare two records of the same run: bit for bit, to a tolerance, or
not at all; and rerun a `jaxrobust evaluate` record from the config and settings it stores.

- 'bit for bit': every number and every per-example outcome is the same (same program, same
  machine kind, same versions);
- 'to a tolerance': no accuracy moved by more than `tolerance` (another CPU, another convolution
  path, another jaxlib: float reductions round differently and training drifts a little);
- 'not at all': some accuracy moved by more, or the two records do not hold the same numbers.

Beside the verdict stand the environment fields (versions, XLA flags, device, CPU) that differ
between the record and this process, so a reader can tell a machine from a bug.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import NamedTuple

from jaxrobust.provenance import compare_environments, environment

BIT_FOR_BIT, TO_A_TOLERANCE, NOT_AT_ALL = 'bit for bit', 'to a tolerance', 'not at all'
# Two accuracy points: about twice the spread that `make reproducibility` measures for the demo's
# rows across convolution paths and core counts (docs/reproducibility.md).
DEFAULT_TOLERANCE = 0.02
# Wall times and what only describes the record: never part of the comparison.
NOT_COMPARED = frozenset(
  {
    'ms_per_image',
    'train_time_s',
    'seconds',
    'eval_s',
    'certify_s',
    'environment',
    'invocation',
    'per_example',
  }
)
NOT_COMPARED_PREFIXES = ('ms_per_image', 'train_time', 'retime')
# Per-point values (each point's outcome, an attack's per-point scores and margins): compared as
# outcomes (how many changed), never as accuracies; a logit margin that moves by 0.7 is not a
# change of 70 points.
PER_POINT = frozenset({'per_example', 'robust_at_double_budget', 'scores_at_double_budget'})


class Reproduction(NamedTuple):
  """The verdict, the largest change of any number, the numbers that changed
  ({name: (recorded, now)}), the per-example outcomes that changed, the environment fields that
  differ ('field: recorded → now'), and the numbers only one of the two records has (either
  way, a row that lacks a number, or holds a string or a boolean in its place, does not
  reproduce; `spread` compares the common ones only), and the largest change of an accuracy among
  the numbers both records hold (the verdict's own when nothing is unmatched; NaN when nothing is
  common)."""

  verdict: str
  largest_difference: float
  changed: dict
  changed_outcomes: int
  environment: list
  unmatched: tuple = ()
  largest_common_difference: float = math.nan


def counts(record, prefix: str = '') -> set[str]:
  """The names (as `numbers` flattens them) of a record's integer values: counts of points
  (broken, n, non_finite), never accuracies."""
  out = set()
  items = record.items() if isinstance(record, dict) else enumerate(record)
  for k, v in items:
    name = f'{prefix}[{k}]' if isinstance(k, int) else (f'{prefix}.{k}' if prefix else k)
    if isinstance(v, int) and not isinstance(v, bool):
      out.add(name)
    elif isinstance(v, (dict, list)):
      out |= counts(v, name)
  return out


def numbers(record: dict | list, prefix: str = '') -> dict[str, float]:
  """Every number of a record, flattened to 'a.b[3]' names, timings and descriptions left out.

  Raises:
    ValueError: for a non-finite number (it is never compared as an accuracy).
  """
  out = {}
  items = record.items() if isinstance(record, dict) else enumerate(record)
  for k, v in items:
    name = f'{prefix}[{k}]' if isinstance(k, int) else (f'{prefix}.{k}' if prefix else k)
    if isinstance(k, str) and (k in NOT_COMPARED or k in PER_POINT or k.startswith(NOT_COMPARED_PREFIXES)):
      continue
    if isinstance(v, bool) or v is None or isinstance(v, str):
      continue
    if isinstance(v, (int, float)):
      if not math.isfinite(v):
        raise ValueError(f'{name} is {v}: a non-finite number is not an accuracy')
      out[name] = float(v)
    elif isinstance(v, (dict, list)):
      out.update(numbers(v, name))
  return out


def per_point(record: dict | list, prefix: str = '', *, inside: bool = False) -> dict[str, list]:
  """Every list of per-point values of a record (under a `PER_POINT` key), by its flattened name."""
  out: dict[str, list] = {}
  items = record.items() if isinstance(record, dict) else enumerate(record)
  for k, v in items:
    name = f'{prefix}[{k}]' if isinstance(k, int) else (f'{prefix}.{k}' if prefix else k)
    within = inside or (isinstance(k, str) and k in PER_POINT)
    if within and isinstance(v, list) and not any(isinstance(e, (dict, list)) for e in v):
      out[name] = v
    elif isinstance(v, dict) or (isinstance(v, list) and not within):
      if not (isinstance(k, str) and k in NOT_COMPARED - PER_POINT):
        out.update(per_point(v, name, inside=within))
  return out


def compare(
  recorded: dict, rerun: dict, *, tolerance: float = DEFAULT_TOLERANCE, common_only: bool = False
) -> Reproduction:
  """Compares two records of one row (see the module docstring for the verdicts). A number that
  only one of them has (removed, turned into a string or a boolean, or a column that newer code
  adds: rerun the row to record it) is a failure to reproduce, listed as unmatched. With
  `common_only`, numbers that either side lacks are listed and not compared (records of two
  configurations, `spread`)."""
  a, b = numbers(recorded), numbers(rerun)
  env = compare_environments(recorded.get('environment'), rerun.get('environment') or environment())
  common = a.keys() & b.keys()
  unmatched = tuple(sorted(a.keys() ^ b.keys()))
  changed: dict[str, tuple[float | None, float | None]] = {
    k: (a[k], b[k]) for k in sorted(common) if a[k] != b[k]
  }
  # The tolerance is in accuracy (a fraction of the images): a count that moved (AutoAttack's
  # `broken`) is a change, but not one measured in points.
  integral = counts(recorded)
  largest = max((abs(a[k] - b[k]) for k in changed if k not in integral), default=0.0)
  pa, pb = per_point(recorded), per_point(rerun)
  outcomes = sum(
    sum(x != y for x, y in zip(pa[k], pb[k])) + abs(len(pa[k]) - len(pb[k])) for k in pa.keys() & pb.keys()
  )
  if not common or (unmatched and not common_only):
    # What the columns both hold did stays on record: a rerun with a larger suite is judged on them.
    changed.update({k: (a.get(k), b.get(k)) for k in unmatched})
    common_largest = largest if common else math.nan
    return Reproduction(NOT_AT_ALL, math.inf, changed, outcomes, env, unmatched, common_largest)
  if not changed and not outcomes:
    verdict = BIT_FOR_BIT
  elif largest <= tolerance + 1e-9:  # accuracies are k/n: 0.764 - 0.744 is 0.020000000000000018
    verdict = TO_A_TOLERANCE
  else:
    verdict = NOT_AT_ALL
  return Reproduction(verdict, largest, changed, outcomes, env, unmatched, largest)


def verdict_record(path: str, r: Reproduction, tolerance: float, *, against: str | None = None) -> dict:
  """The verdict as a results record (the caller adds this process's environment); `against`
  names the rerun's file when it was not made by this process."""
  return {
    'record': path,
    **({'against': against} if against else {}),
    'verdict': r.verdict,
    'tolerance': tolerance,
    'largest_difference': r.largest_difference if math.isfinite(r.largest_difference) else None,
    'largest_common_difference': (
      r.largest_common_difference if math.isfinite(r.largest_common_difference) else None
    ),
    'changed': {k: list(v) for k, v in r.changed.items()},
    'changed_outcomes': r.changed_outcomes,
    'environment_differences': r.environment,
    'unmatched': list(r.unmatched),
  }


def report(path: str, r: Reproduction) -> str:
  """The verdict in words, for the command line."""
  lines = [f'{path}: reproduces {r.verdict}']
  if r.changed:
    largest = r.largest_difference if not r.unmatched else r.largest_common_difference
    where = '' if not r.unmatched else ' among the numbers both records hold'
    if math.isfinite(largest):
      lines.append(f'  largest change of an accuracy{where} {100 * largest:.2f} points')
    lines.append('  changed numbers:')
    lines += [f'    {k}: {x} → {y}' for k, (x, y) in sorted(r.changed.items())]
  if r.changed_outcomes:
    lines.append(f'  {r.changed_outcomes} per-example outcomes changed')
  if r.unmatched:
    lines.append(f'  numbers only one record has (missing, or not a number): {", ".join(r.unmatched)}')
  lines.append(
    '  environment differences: ' + ('; '.join(r.environment) if r.environment else 'none (same program)')
  )
  return '\n'.join(lines)


def evaluation_invocation(
  model_path: str, *, suite: str, num_test: int, steps_scale: float, eot: int, seed: int
) -> dict:
  """What `reproduce_evaluation` needs to rerun an evaluation of the model in `model_path` (a run's
  work directory or a published-weights folder): the config that trained it and the options."""
  path = os.path.join(model_path, 'config.json')
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f'{path}: not a readable config ({e})') from None
  return {
    'config': config,
    'evaluate': dict(suite=suite, num_test=num_test, steps_scale=steps_scale, eot=eot, seed=seed),
  }


def read_results_file(path: str):
  """The JSON value of a results file.

  Raises:
    ValueError: naming the file, when it cannot be read or is not JSON.
  """
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ValueError(f'{path}: not a readable results file ({e})') from None


def load_evaluation_record(path: str) -> dict:
  """An evaluation record written by `jaxrobust evaluate --out` (it holds its `invocation`).

  Raises:
    ValueError: naming the file, when it is not JSON or does not say how it was made.
  """
  record = read_results_file(path)
  inv = record.get('invocation') if isinstance(record, dict) else None
  if not (
    isinstance(inv, dict) and isinstance(inv.get('config'), dict) and isinstance(inv.get('evaluate'), dict)
  ):
    raise ValueError(
      f'{path}: not an evaluation record that says how it was made (no "invocation" with the '
      "config and the evaluation's options); `jaxrobust evaluate --out=FILE` writes one"
    )
  return record


def reproduce_evaluation(
  path: str, *, tolerance: float = DEFAULT_TOLERANCE, scratch: str | None = None, progress: bool = True
) -> Reproduction:
  """Trains the model again from the config stored in the evaluation record `path`, in a scratch
  directory, evaluates it with the recorded options, and compares the two records.

  Raises:
    ValueError: for a bad file (named) or a tolerance outside [0, 1].
  """
  if not 0 <= tolerance <= 1:
    raise ValueError(f'tolerance must be in [0, 1] (a fraction of the test images), got {tolerance}')
  record = load_evaluation_record(path)
  from jaxrobust.evaluation import EvalSpec, evaluate_test_set
  from jaxrobust.train import train_and_evaluate
  from jaxrobust.train.config import with_defaults
  from jaxrobust.train.weights import load_model

  inv = record['invocation']
  o = inv['evaluate']
  spec = EvalSpec(dataset='synthetic', suite=o['suite'], steps_scale=o['steps_scale'], eot_samples=o['eot'])
  with tempfile.TemporaryDirectory(dir=scratch) as tmp:
    workdir = os.path.join(tmp, 'run')
    train_and_evaluate(with_defaults(inv['config']), workdir, progress=progress)
    _, model, variables, ds = load_model(workdir)
    rerun = evaluate_test_set(
      model, variables, ds, spec, seed=o['seed'], num_test=o['num_test'], progress=progress
    )
  return compare(record, {**rerun, 'environment': environment()}, tolerance=tolerance)
