"""Train and evaluate every row of the study's Table 1, then write the table and figures.

  python -m experiments.table1                                   # Fashion-MNIST, small CNN, 1 epoch/row
  python -m experiments.table1 --rows=regular,pgd_at --epochs=2 --num_test=2000
  python -m experiments.table1 --dataset=cifar10 --epochs=100    # the study's setting, on a GPU

Writes results/<dataset>/table1.md, table1.json, rows/<row>.json and figures/*.png. A row whose
results exist is not redone (--force redoes it); an interrupted row resumes from its checkpoints
in runs/<dataset>/<row>. Every row also gets AutoAttack at its full budget (the standard version,
or the rand version for a randomised row; --noautoattack leaves the column out).
"""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np

from experiments import figures
from experiments import rows as study_rows
from jaxrobust.configs.defenses import DEFENSES
from experiments.rows import TrainedRow
from experiments.report import write_table
from jaxrobust.evaluation import (
  STANDARD_BUDGETS,
  EvalSpec,
  build_evaluation,
  evaluate_model,
  examples_and_confidence,
  inference_ms_per_image,
)
from jaxrobust import keys
from jaxrobust.certify import certified_accuracy
from jaxrobust.evaluation.accuracy import as_unit_float
from jaxrobust.models import make_logits_fn, model_traits
from jaxrobust.files import write_json_atomic
from jaxrobust.machine import cpu_model
from jaxrobust.train import train_and_evaluate
from jaxrobust.train.config import with_defaults
from jaxrobust.train.restore import load_trained

GRID = {
  'fashion_mnist': (0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3),
  'cifar10': (0.0, 2 / 255, 4 / 255, 8 / 255, 12 / 255, 16 / 255),
  'synthetic': (0.0, 0.05, 0.1, 0.2),
}


# The smoothed rows' certificate: CERTIFY at the L2 radius of the standard suite's L2 attacks.
SMOOTHING = dict(radius=1.5, n0=100, n=10_000, alpha=0.001)
# Table 1's rows: every defense but Gaussian augmentation at σ = 0.25, which cannot certify the
# column's radius: when all n draws agree, CERTIFY's radius is σ·Φ⁻¹(α^(1/n)) = 0.25 · 3.2 = 0.8 < 1.5
# at n = 10 000 and α = 0.001 (σ = 0.5 reaches 1.6), so the column would read 0 by construction.
ROWS = tuple(r for r in DEFENSES if r != 'gaussian_025')


def smoothed_certificate(model, variables, images, labels, sigma: float, *, key) -> dict:
  """The certified L2 accuracy at SMOOTHING['radius'] of the model smoothed with noise σ (the
  base classifier sees its noisy input clipped to [0, 1], as in training); `key` is the
  evaluation's `certify` key, as the certify command's."""
  from jaxrobust.certify.bracket import certify_smoothing, clipped

  s = SMOOTHING
  cert = certify_smoothing(
    clipped(make_logits_fn(model, variables)),
    np.asarray(as_unit_float(images)),
    np.asarray(labels),
    sigma=sigma,
    n0=s['n0'],
    n=s['n'],
    alpha=s['alpha'],
    key=keys.certify_keys(key).certify,
  )
  return {
    'certified_l2': float(certified_accuracy(cert, np.asarray(labels), [s['radius']])[0]),
    'certified_l2_settings': dict(s, sigma=sigma),
  }


def table1_row(
  row: str,
  dataset: str,
  *,
  epochs: float | None = None,
  num_test: int = 1000,
  suite: str = 'standard',
  steps_scale: float = 1.0,
  eot_samples: int = 8,
  runs_dir: str = 'runs',
  out_dir: str = 'results',
  force: bool = False,
  seed: int = 0,
  autoattack: bool = False,
  autoattack_scale: float = 1.0,
  progress: bool = True,
  variant: str = '',
) -> dict:
  """Trains (or resumes) and evaluates one row; caches its record in out_dir/<dataset>/rows/.

  With `autoattack`, AutoAttack at its full budget joins the suite (standard, or rand on a
  randomised model): the AutoAttack column, and the worst case includes it. `variant` names a
  variant of the row's config (e.g. 'authors' for LWTA, `configs/defenses.py`).
  """

  def evaluate(t: TrainedRow) -> dict:
    ds, model, variables = t.dataset, t.model, t.variables
    n = min(num_test, len(ds.test_images)) if num_test else len(ds.test_images)
    key = keys.evaluation_key(seed)
    images, labels = ds.test_images[:n], ds.test_labels[:n]
    spec = EvalSpec(
      dataset=dataset,
      suite=suite,
      steps_scale=steps_scale,
      eot_samples=eot_samples,
      epsilon_grid=GRID.get(dataset, GRID['synthetic']),
      with_autoattack=autoattack,
      autoattack_scale=autoattack_scale,
    )
    plan = build_evaluation(spec, model_traits(model))
    result = evaluate_model(model, variables, images, labels, plan, key=key, progress=progress).to_record()
    if DEFENSES[row].noise_sigma:  # a smoothed classifier's row: its certified L2 accuracy
      result.update(
        smoothed_certificate(
          model, variables, images, labels, DEFENSES[row].noise_sigma, key=keys.eval_keys(key).certify
        )
      )
    _draw_row_figures(row, dataset, out_dir, plan.transfer, t, images, labels, key)
    return {
      # table1_row's arguments that decide the numbers: `experiments.reproduce` reruns the row from them.
      'invocation': dict(
        epochs=epochs,
        num_test=num_test,
        suite=suite,
        steps_scale=steps_scale,
        eot_samples=eot_samples,
        seed=seed,
        autoattack=autoattack,
        autoattack_scale=autoattack_scale,
        variant=variant,
      ),
      'variant': variant,
      'seed': seed,
      'dataset': dataset,
      'epochs': t.config.train.num_epochs,
      'train_time_s': t.train_time_s,
      # A resumed run's wall time covers only its last part; the record says so.
      'resumed': t.resumed,
      'test_accuracy_full': t.test_accuracy,
      'n_eval': n,
      'result': result,
    }

  return study_rows.study_row(
    row,
    dataset,
    out_dir=out_dir,
    runs_dir=runs_dir,
    evaluate=evaluate,
    config_arg=f'{dataset},quick' + (f',{variant}' if variant else ''),
    epochs=epochs,
    seed=seed,
    force=force,
    progress=progress,
  )


def _draw_row_figures(row, dataset, out_dir, drawn: dict, t: TrainedRow, images, labels, key) -> None:
  """The row's adversarial examples (Figure 3) and confidence histograms (Figure 4), under the
  transfer attack's PGD run on the model itself."""
  n = len(images)
  ex = examples_and_confidence(
    t.model, t.variables, images, labels, drawn, key=keys.eval_keys(key).figures, n=min(n, 500)
  )
  fig_dir = os.path.join(out_dir, dataset, 'figures')
  title = f'{DEFENSES[row].title} — PGD-{drawn["num_steps"]} L∞ ε={drawn["epsilon"]:.3g}'
  figures.adversarial_examples_grid(
    os.path.join(fig_dir, f'{row}_examples.png'),
    ex['x'],
    ex['x_adv'],
    ex['labels'],
    ex['pred'],
    ex['pred_adv'],
    t.dataset.class_names,
    title=title,
  )
  figures.confidence_histograms(
    os.path.join(fig_dir, f'{row}_confidence.png'),
    {'clean': ex['conf'], 'PGD': ex['conf_adv']},
    {'clean': ex['pred'] == ex['labels'], 'PGD': ex['pred_adv'] == ex['labels']},
    title=DEFENSES[row].title,
  )


def retime(records, dataset: str, *, runs_dir: str, out_dir: str, training: bool = False) -> None:
  """Re-measures every row's inference time in one pass, from its checkpoint, and stores it in
  the row's record ('ms_per_image', with 'ms_per_image_pass': 'retimed').

  Each row's own figure is taken when its evaluation ends, under whatever else ran on the machine
  then; rows timed one after the other, with nothing else running, compare under one condition.
  With `training`, each row is also trained again from its stored config in a scratch directory
  and its wall time replaces 'train_time_s' ('train_time_pass': 'retimed'); the retrained model
  must reach the stored test accuracy exactly (same seed, same bits), or the pass names it. Each
  record names the CPU of its times; a row already retrained on this CPU keeps its training time,
  so an interrupted pass goes on where it stopped (the inference times are cheap and always
  re-measured together).

  Raises:
    RuntimeError: after the pass, naming every row whose retrained test accuracy differs from the
      stored one (those rows keep their old time).
  """
  ds = None  # every row reads the same dataset: load it once
  cpu = cpu_model()
  mismatches = []
  for r in records:
    workdir = os.path.join(runs_dir, dataset, r['row'])
    _, model, variables, ds = load_trained(workdir, ds=ds)
    r['result']['ms_per_image'] = inference_ms_per_image(model, variables, ds.test_images.shape[1:])
    r['ms_per_image_pass'], r['ms_per_image_cpu'] = 'retimed', cpu
    if training and (r.get('train_time_pass'), r.get('train_time_cpu')) != ('retimed', cpu):
      with open(os.path.join(workdir, 'config.json')) as f:
        config = with_defaults(json.load(f))
      with tempfile.TemporaryDirectory(dir=runs_dir) as scratch:
        t0 = time.time()
        out = train_and_evaluate(config, scratch, progress=False)
        seconds = time.time() - t0
      if out['test_accuracy'] != r['test_accuracy_full']:
        # Not the same run: its time is not the row's. The other rows are still retimed, so one
        # pass names every row that the current code no longer reproduces.
        mismatches.append(
          f'{workdir}: retrained from its config.json, the row reaches test accuracy '
          f'{out["test_accuracy"]} instead of {r["test_accuracy_full"]}: not the same run'
        )
      else:
        r['train_time_s'], r['train_time_pass'], r['train_time_cpu'] = seconds, 'retimed', cpu
    write_json_atomic(study_rows.record_file(out_dir, dataset, r['row']), r)
  if mismatches:
    raise RuntimeError('; '.join(mismatches))


def timing_note(records) -> str:
  """Says under which condition the table's two time columns were taken."""
  ms_cpus = {r.get('ms_per_image_cpu') for r in records if r.get('ms_per_image_pass') == 'retimed'}
  train_cpus = {r.get('train_time_cpu') for r in records if r.get('train_time_pass') == 'retimed'}
  if len(ms_cpus) == 1 and all(r.get('ms_per_image_pass') == 'retimed' for r in records):
    ms = f'ms/image re-measured row after row on {next(iter(ms_cpus))}'
  else:
    ms = 'ms/image measured as each row finished, under whatever else ran then'
  if len(train_cpus) == 1 and all(r.get('train_time_pass') == 'retimed' for r in records):
    train = f'train s: each row retrained alone on {next(iter(train_cpus))}'
  else:
    train = 'train s as each row trained, or retimed (its record says which; "–": resumed, not measured)'
  return f'{ms}; {train}.'


def run_table(
  rows,
  dataset: str = 'fashion_mnist',
  *,
  out_dir: str = 'results',
  retime_rows: bool = False,
  retime_training: bool = False,
  **kw,
) -> tuple[list, str]:
  """Runs every row, writes table1.md/json and the accuracy-vs-ε figure; returns (records, md path).

  With `retime_rows`, the inference times are re-measured in one pass first (`retime`), and with
  `retime_training` the training times too.
  """
  unknown = [r for r in rows if r not in DEFENSES]
  if unknown:
    raise ValueError(f'unknown Table 1 rows {unknown}; known: {", ".join(DEFENSES)}')
  if dataset not in STANDARD_BUDGETS:
    raise ValueError(f'unknown dataset {dataset!r}; use fashion_mnist, cifar10 or synthetic')
  records = [table1_row(r, dataset, out_dir=out_dir, **kw) for r in rows]
  if retime_rows or retime_training:
    retime(records, dataset, runs_dir=kw.get('runs_dir', 'runs'), out_dir=out_dir, training=retime_training)
  return records, write_report(records, dataset, out_dir)


def write_report(records: list[dict], dataset: str, out_dir: str) -> str:
  """table1.md/json and the accuracy-vs-ε figure from the rows' records; returns the table's path."""
  suite = records[0]['result'].get('suite', 'standard')
  caption = (
    f'Table 1 on {dataset} ({records[0]["n_eval"]} test images, suite "{suite}"). '
    f'Accuracy in %; worst case = correct under every attack, per point. Every attack column is an '
    f'upper bound on robust accuracy; "Verified L∞" is a lower bound (interval bounds at the suite\'s '
    f'L∞ ε: no input in the box is misclassified), so the truth lies between the two; "Certified L2" '
    f"is the smoothed classifier's certified accuracy at L2 radius {SMOOTHING['radius']:g} (randomized "
    f'smoothing, CERTIFY with n = {SMOOTHING["n"]}, α = {SMOOTHING["alpha"]}), for the rows trained '
    f'with Gaussian noise only. {timing_note(records)}'
  )
  md, _ = write_table(os.path.join(out_dir, dataset), records, caption=caption)
  figures.plot_accuracy_vs_epsilon(
    os.path.join(out_dir, dataset, 'figures', 'accuracy_vs_epsilon.png'),
    {r['title']: (r['result']['epsilon_grid'], r['result']['accuracy_vs_epsilon']) for r in records},
    title=f'PGD-{records[0]["result"].get("grid_steps", 10)} accuracy against ε, {dataset}',
  )
  return md


def committed_records(rows: list[str], dataset: str, out_dir: str) -> list[dict]:
  """The rows' records as written (out_dir/<dataset>/rows/<row>.json), in the given order.

  Raises:
    FileNotFoundError: naming a row that has no record.
  """
  records = []
  for r in rows:
    path = os.path.join(out_dir, dataset, 'rows', f'{r}.json')
    if not os.path.exists(path):
      raise FileNotFoundError(f'{path}: row {r!r} has no record; run it first (without --table_only)')
    with open(path) as f:
      records.append(json.load(f))
  return records


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  rows = F.rows.split(',') if F.rows else list(ROWS)
  t0 = time.time()
  if F.table_only:
    md = write_report(committed_records(rows, F.dataset, F.out), F.dataset, F.out)
    print(open(md).read())
    return
  _, md = run_table(
    rows,
    F.dataset,
    out_dir=F.out,
    epochs=F.epochs,
    num_test=F.num_test,
    suite=F.suite,
    steps_scale=F.steps_scale,
    eot_samples=F.eot,
    runs_dir=F.runs,
    force=F.force,
    seed=F.seed,
    autoattack=F.autoattack,
    retime_rows=F.retime,
    retime_training=F.retime_training,
  )
  print(open(md).read())
  print(f'wrote {md} ({time.time() - t0:.0f} s)')


def command_line() -> None:
  """`python -m experiments.table1`: the flags below, then the run (experiments/table1/__main__.py)."""
  from absl import app, flags, logging

  flags.DEFINE_string('dataset', 'fashion_mnist', 'fashion_mnist, cifar10 or synthetic')
  flags.DEFINE_string(
    'rows',
    '',
    f'comma-separated rows (default: {",".join(ROWS)}; also: {",".join(sorted(set(DEFENSES) - set(ROWS)))})',
  )
  flags.DEFINE_float('epochs', None, 'training epochs per row (default: the quick budget, 1)')
  flags.DEFINE_integer('num_test', 1000, 'test images to evaluate (0 = all)', lower_bound=0)
  flags.DEFINE_string('suite', 'standard', 'attack suite: standard or study')
  flags.DEFINE_float('steps_scale', 1.0, 'scale attack iteration counts')
  flags.DEFINE_integer('eot', 8, 'EOT samples of the adaptive attacks on stochastic models', lower_bound=1)
  flags.DEFINE_string('out', 'results', 'results directory')
  flags.DEFINE_string('runs', 'runs', 'training work directories')
  flags.DEFINE_bool('force', False, 'redo rows whose results exist')
  flags.DEFINE_integer('seed', 0, 'seed of every row', lower_bound=0)
  flags.DEFINE_bool('autoattack', True, 'add the AutoAttack column (standard, or rand on randomised rows)')
  flags.DEFINE_bool('retime', False, "re-measure every row's ms/image in one pass before writing the table")
  flags.DEFINE_bool(
    'retime_training',
    False,
    'retrain every row alone from its config.json for a clean training time (it must reach the '
    'stored test accuracy bit for bit)',
  )
  flags.DEFINE_bool(
    'table_only', False, "rewrite table1.md/json and the ε figure from the rows' records, running nothing"
  )
  logging.set_verbosity(logging.WARNING)
  app.run(main)
