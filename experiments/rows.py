"""One row of a study: its defense trained (or resumed) from its config, evaluated, and its record
cached. Table 1 and the converged study differ only in the config's variant and in what they
evaluate; both go through `study_row`.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable, NamedTuple

from jaxrobust.configs.defenses import DEFENSES, defense_config
from jaxrobust.files import write_json_atomic
from jaxrobust.provenance import with_environment
from jaxrobust.train import train_and_evaluate
from jaxrobust.train.config import training_differences
from jaxrobust.train.weights import load_weights, published_record


class TrainedRow(NamedTuple):
  """A row's defense after training: what its evaluation needs.

  Attributes:
    row: the defense's name (`experiments/configs/defenses.py`).
    config: the config it was trained from.
    workdir: its work directory.
    model, variables, dataset: the trained model, its variables and the dataset.
    steps, test_accuracy: training steps and the full test set's clean accuracy.
    train_time_s: this call's wall time (a resumed run's covers only its last part).
    resumed: whether the work directory held a run before this call.
  """

  row: str
  config: Any
  workdir: str
  model: Any
  variables: Any
  dataset: Any
  steps: int
  test_accuracy: float
  train_time_s: float
  resumed: bool


def record_file(out_dir: str, dataset: str, row: str) -> str:
  """Where a study keeps a row's record."""
  return os.path.join(out_dir, dataset, 'rows', f'{row}.json')


def _train(row: str, config, workdir: str, progress: bool) -> TrainedRow:
  resumed = os.path.exists(os.path.join(workdir, 'metrics.jsonl'))
  t0 = time.time()
  out = train_and_evaluate(config, workdir, progress=progress)
  return TrainedRow(
    row=row,
    config=config,
    workdir=workdir,
    model=out['model'],
    variables=out['state'].variables,
    dataset=out['dataset'],
    steps=out['steps'],
    test_accuracy=out['test_accuracy'],
    train_time_s=time.time() - t0,
    resumed=resumed,
  )


def _from_published(row: str, config, folder: str) -> TrainedRow:
  """The row from its published weights; refused when they were trained from another config."""
  stored, model, variables, ds = load_weights(folder)
  # load_weights has read and checked config.json; its one change (the parallel mode) is resumable.
  differences = training_differences(stored.to_dict(), config)
  # Epochs may change on resume, but not between a published row and the row it stands for.
  if stored.train.num_epochs != config.train.num_epochs:
    differences.append(f'train.num_epochs: {stored.train.num_epochs} -> {config.train.num_epochs}')
  if differences:
    raise ValueError(
      f'{folder}: trained from another config than the row {row!r} now has: {"; ".join(differences)}'
    )
  final = published_record(folder)  # checked against SHA256SUMS: it becomes the row's accuracy
  return TrainedRow(
    row=row,
    config=stored,
    workdir=folder,
    model=model,
    variables=variables,
    dataset=ds,
    steps=final['step'],
    test_accuracy=final['test_accuracy'],
    train_time_s=0.0,
    resumed=True,
  )


def study_row(
  row: str,
  dataset: str,
  *,
  out_dir: str,
  runs_dir: str,
  evaluate: Callable[[TrainedRow], dict],
  config_arg: str | None = None,
  published: str | None = None,
  epochs: float | None = None,
  seed: int = 0,
  force: bool = False,
  progress: bool = True,
  on_cached: Callable[[dict], Any] | None = None,
) -> dict:
  """The record of `row`: read from out_dir/<dataset>/rows/<row>.json if there (unless `force`),
  else trained in runs_dir/<dataset>/<row> (resumed if a run is there) or loaded from its published
  weights, evaluated and written there.

  Args:
    row: a defense of `DEFENSES`.
    dataset: the dataset's name.
    out_dir: the study's results folder.
    runs_dir: the parent of the datasets' work directories.
    evaluate: the study's evaluation: a trained row -> the record's fields (the record gets the
      row, its title and the environment besides).
    config_arg: the argument of `defense_config` (default: the dataset's name).
    published: a published-weights folder (`jaxrobust.train.weights`); when it exists the row is
      evaluated from it, with no training, so that every machine evaluates the same bits (a
      retrained model's last bits depend on the CPU). Its config must be the row's.
    epochs: training epochs in place of the config's.
    seed: the config's seed.
    force: retrain (resume) and re-evaluate even when the record exists.
    progress: training progress bars.
    on_cached: called with a cached record before it is returned (e.g. to redraw its figure).

  Raises:
    ValueError: an unknown row.
  """
  if row not in DEFENSES:
    raise ValueError(f'unknown row {row!r}; known: {", ".join(DEFENSES)}')
  record_path = record_file(out_dir, dataset, row)
  if os.path.exists(record_path) and not force:
    with open(record_path) as f:
      record = json.load(f)
    if on_cached is not None:
      on_cached(record)
    return record
  config = defense_config(row, config_arg or dataset)
  config.seed = seed
  if epochs is not None:
    config.train.num_epochs = float(epochs)
  if published is not None and os.path.isdir(published):
    trained = _from_published(row, config, published)
  else:
    trained = _train(row, config, os.path.join(runs_dir, dataset, row), progress)
  record = {'row': row, 'title': DEFENSES[row].title, **evaluate(trained)}
  record = with_environment(record)
  write_json_atomic(record_path, record)
  return record
