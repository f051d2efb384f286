"""Published weights: a trained run as files anyone can load without pickle and re-attack.

A published model is a folder with three files:
  weights.npz   every variable as a float array named by its path ('params/Conv_0/kernel'),
                read back with `allow_pickle=False`;
  config.json   the run's full config (the model, its normalisation, the dataset);
  SHA256SUMS    the SHA-256 of the other two, checked before either is used;
  record.json   the run's final test row and the environment that published it (a description).

`publish(workdir, out_dir)` writes the folder from a run's newest intact checkpoint;
`load_weights(path)` reads it back into (config, model, variables, dataset), refusing a folder
whose checksums, names, shapes or values are not what the config's model expects.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import jax
import numpy as np

from jaxrobust.files import write_atomic, write_json_atomic
from jaxrobust.provenance import write_result_json
from jaxrobust.train.config import with_defaults
from jaxrobust.train.experiment import build_experiment
from jaxrobust.train.metrics import read_jsonl
from jaxrobust.train.restore import load_trained

FILES = ('weights.npz', 'config.json')
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


def publish(workdir: str, out_dir: str, *, require_checksums: bool = True) -> str:
  """Writes `out_dir`/{weights.npz, config.json, SHA256SUMS} from the run in `workdir`.

  Returns:
    out_dir.
  """
  config, _, variables, _ = load_trained(workdir, require_checksums=require_checksums)
  os.makedirs(out_dir, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, **_flat(variables))
  write_atomic(os.path.join(out_dir, 'weights.npz'), buf.getvalue())
  write_json_atomic(os.path.join(out_dir, 'config.json'), config.to_dict(), indent=1, sort_keys=True)
  sums = ''.join(f'{_sha256(os.path.join(out_dir, f))}  {f}\n' for f in FILES)
  write_atomic(os.path.join(out_dir, SUMS), sums)
  # What the run reported when it finished (its final test row), with the environment that
  # publishes: a description beside the weights, not part of what loading checks.
  final = [r for r in read_jsonl(os.path.join(workdir, 'metrics.jsonl')) if 'test_accuracy' in r]
  write_result_json(
    os.path.join(out_dir, 'record.json'),
    {'workdir': workdir, 'model': config.model.name, 'final': final[-1] if final else None},
    indent=1,
  )
  return out_dir


def _verified_folder(path: str) -> str:
  if not os.path.exists(path):
    raise PublishedWeightsError(f'{path}: no such published-weights folder or weights.npz')
  folder = path if os.path.isdir(path) else os.path.dirname(path)
  sums_path = os.path.join(folder, SUMS)
  if not os.path.exists(sums_path):
    raise PublishedWeightsError(f'{sums_path}: missing; published weights are used only with their checksums')
  expected = {}
  for line in open(sums_path, encoding='utf-8', errors='replace'):
    parts = line.split()
    if len(parts) == 2:
      expected[parts[1]] = parts[0]
  for f in FILES:
    p = os.path.join(folder, f)
    if not os.path.exists(p):
      raise PublishedWeightsError(f'{p}: missing')
    if expected.get(f) != _sha256(p):
      raise PublishedWeightsError(f'{p}: its SHA-256 is not the one {sums_path} records')
  return folder


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
    with np.load(npz_path, allow_pickle=False) as z:
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
