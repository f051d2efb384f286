"""Published weights: a trained run as files anyone can load without pickle and re-attack.

A published model is a folder with four files:
  weights.npz   every variable as a float array named by its path ('params/Conv_0/kernel'),
                read back with `allow_pickle=False`;
  config.json   the run's full config (the model, its normalisation, the dataset);
  record.json   the checkpoint step published, the run's test row of that step, and the
                environment that published it;
  SHA256SUMS    the SHA-256 of the other three (in `sha256sum`'s format), checked before any is used.

`publish(workdir, out_dir)` writes the folder from the run's final checkpoint (the step of its
last test row; an older intact step only when asked); `load_weights(path)` reads it back into
(config, model, variables, dataset), refusing a folder whose checksums, names, shapes or values
are not what the config's model expects; `published_record(path)` reads record.json's test row,
refusing one that the checksums do not cover (it becomes a table's accuracy).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Any

import jax
import numpy as np

from jaxrobust.files import write_atomic, write_json_atomic
from jaxrobust.provenance import write_result_json
from jaxrobust.train.config import with_defaults
from jaxrobust.train.experiment import build_experiment
from jaxrobust.train.metrics import read_jsonl
from jaxrobust.train.restore import load_trained, restore_run

FILES = ('weights.npz', 'config.json')
RECORD = 'record.json'
SUMS = 'SHA256SUMS'


class PublishedWeightsError(ValueError):
  """A published-weights folder that cannot be trusted or does not fit its config (file named)."""


def _flat(variables) -> dict[str, np.ndarray]:
  flat = jax.tree_util.tree_flatten_with_path(variables)[0]
  return {'/'.join(str(getattr(k, 'key', k)) for k in path): np.asarray(v) for path, v in flat}


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      h.update(chunk)
  return h.hexdigest()


def publish(
  workdir: str,
  out_dir: str,
  *,
  require_checksums: bool = True,
  force: bool = False,
  allow_older: bool = False,
) -> str:
  """Writes `out_dir`/{weights.npz, config.json, record.json, SHA256SUMS} from the run in `workdir`.

  The weights are those of the run's final checkpoint: the step of its last test row in
  metrics.jsonl. When that step is damaged (set aside by the restore), the newest intact step is
  older: publishing it needs `allow_older`, and record.json then names that step and its own test
  row (None when it had none), never the final one's.

  Args:
    force: replace a folder that already holds published weights.
    allow_older: publish an older intact step when the final one is damaged.

  Returns:
    out_dir.

  Raises:
    FileExistsError: `out_dir` holds published files and `force` is not set.
    PublishedWeightsError: the final step is damaged and `allow_older` is not set.
  """
  existing = [f for f in (*FILES, RECORD, SUMS) if os.path.exists(os.path.join(out_dir, f))]
  if existing and not force:
    raise FileExistsError(
      f'{out_dir}: already holds {", ".join(existing)}; pass force=True (--force) to replace it'
    )
  tests = [r for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl')) if 'test_accuracy' in r]
  run = restore_run(workdir, require_checksums=require_checksums)
  final = tests[-1] if tests else None
  if final is not None and final.get('step') != run.step:
    if not allow_older:
      raise PublishedWeightsError(
        f"{workdir}: the final checkpoint (step {final.get('step')}, whose test row is the run's last) "
        f'is damaged or missing; the newest intact one is step {run.step}. Pass allow_older=True '
        f'(--allow_older) to publish step {run.step} with its own record.'
      )
    final = next((r for r in tests if r.get('step') == run.step), None)
  os.makedirs(out_dir, exist_ok=True)
  buf = io.BytesIO()
  arrays: dict[str, Any] = _flat(run.variables)
  np.savez(buf, **arrays)
  write_atomic(os.path.join(out_dir, 'weights.npz'), buf.getvalue())
  write_json_atomic(os.path.join(out_dir, 'config.json'), run.config.to_dict(), indent=1, sort_keys=True)
  # The step published and its test row, with the environment that publishes; covered by the
  # checksums, since a study reads its test accuracy as a row's (experiments/rows.py).
  write_result_json(
    os.path.join(out_dir, RECORD),
    {'workdir': workdir, 'model': run.config.model.name, 'step': run.step, 'final': final},
    indent=1,
  )
  sums = ''.join(f'{_sha256(os.path.join(out_dir, f))}  {f}\n' for f in (*FILES, RECORD))
  write_atomic(os.path.join(out_dir, SUMS), sums)
  return out_dir


def _read_sums(sums_path: str) -> dict[str, str]:
  """{file: lower-case hex digest} from a `sha256sum` listing ('HASH  name' or 'HASH *name')."""
  expected = {}
  for line in open(sums_path, encoding='utf-8', errors='replace'):
    parts = line.split()
    if len(parts) == 2:
      expected[parts[1].removeprefix('*')] = parts[0].lower()
  return expected


def _verified_folder(path: str) -> str:
  if not os.path.exists(path):
    raise PublishedWeightsError(f'{path}: no such published-weights folder or weights.npz')
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  sums_path = os.path.join(folder, SUMS)
  if not os.path.exists(sums_path):
    raise PublishedWeightsError(f'{sums_path}: missing; published weights are used only with their checksums')
  expected = _read_sums(sums_path)
  for f in FILES:
    _check_sum(os.path.join(folder, f), expected, sums_path)
  return folder


def _check_sum(p: str, expected: dict[str, str], sums_path: str) -> None:
  if not os.path.exists(p):
    raise PublishedWeightsError(f'{p}: missing')
  if expected.get(os.path.basename(p)) != _sha256(p):
    raise PublishedWeightsError(f'{p}: its SHA-256 is not the one {sums_path} records')


def published_record(path: str) -> dict:
  """record.json of a published-weights folder, verified: {'step': the published step,
  'test_accuracy': that step's test accuracy, ...} (its test row).

  Raises:
    PublishedWeightsError: the checksums do not cover record.json or do not match it, or it
      names no test row (nothing to report).
  """
  folder = _verified_folder(path)
  sums_path = os.path.join(folder, SUMS)
  expected = _read_sums(sums_path)
  p = os.path.join(folder, RECORD)
  if RECORD not in expected:
    raise PublishedWeightsError(f'{p}: not covered by {sums_path}; its test accuracy cannot be trusted')
  _check_sum(p, expected, sums_path)
  with open(p) as f:
    final = json.load(f).get('final')
  if not isinstance(final, dict) or not {'step', 'test_accuracy'} <= set(final):
    raise PublishedWeightsError(f'{p}: names no test row (step and test_accuracy)')
  return final


def load_weights(path: str, *, ds=None):
  """(config, model, variables, dataset) of a published-weights folder (or its weights.npz).

  Raises:
    PublishedWeightsError: a missing file, a checksum that does not match, arrays whose names or
      shapes are not the config's model's, or non-finite values (each naming the file).
  """
  folder = _verified_folder(path)
  with open(os.path.join(folder, 'config.json')) as f:
    config = with_defaults(json.load(f))
  config.train.parallel = 'none'
  exp = build_experiment(config, dataset=ds)
  initial = exp.init_state().variables
  template = _flat(initial)
  npz_path = os.path.join(folder, 'weights.npz')
  try:
    loaded = np.load(npz_path, allow_pickle=False)
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # pickled arrays are refused here
    raise PublishedWeightsError(f'{npz_path}: not a plain array archive: {e}') from None
  if not isinstance(loaded, np.lib.npyio.NpzFile):  # a single .npy array saved under the name
    raise PublishedWeightsError(f'{npz_path}: a single array, not an archive of named arrays (.npz)')
  try:
    with loaded as z:
      stored = {k: z[k] for k in z.files}
  except (ValueError, OSError, zipfile.BadZipFile) as e:  # object arrays (pickle) are refused here
    raise PublishedWeightsError(f'{npz_path}: not a plain array archive: {e}') from None
  if set(stored) != set(template):
    missing, extra = sorted(set(template) - set(stored)), sorted(set(stored) - set(template))
    raise PublishedWeightsError(
      f'{npz_path}: not the parameters of {config.model.name!r}: missing {missing[:5]}, unexpected {extra[:5]}'
    )
  for k, v in stored.items():
    if v.shape != template[k].shape or v.dtype != template[k].dtype:
      raise PublishedWeightsError(
        f'{npz_path}: {k} is {v.dtype}{list(v.shape)}, the model needs {template[k].dtype}{list(template[k].shape)}'
      )
    if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
      raise PublishedWeightsError(f'{npz_path}: {k} holds non-finite values')
  # _flat lists the leaves in the tree's own order, so its keys put them back in place.
  variables = jax.tree.unflatten(jax.tree.structure(initial), [stored[k] for k in template])
  return config, exp.model, variables, exp.dataset


def load_model(path: str, *, ds=None):
  """(config, model, variables, dataset) of a published-weights folder (it holds SHA256SUMS) or of a
  run's work directory (its newest intact checkpoint)."""
  if os.path.exists(os.path.join(path, SUMS)):
    return load_weights(path, ds=ds)
  return load_trained(path, ds=ds)
