"""Evaluate a checkpoint under an attack suite, with robust accuracy against a vmapped ε grid.

  python -m experiments.evaluate --workdir=runs/fashion_mnist/pgd_at --suite=standard --num_test=1000
  python -m experiments.evaluate --workdir=... --suite=study --epsilons=0,0.05,0.1,0.2,0.3
  python -m experiments.evaluate --workdir=... --suite=autoattack     # AA standard, or AA-rand if randomised
  python -m experiments.evaluate --workdir=runs/lwta --suite=adaptive --eot=20  # stochastic defenses
  python -m experiments.evaluate --check-reproduces=results/demo/fashion_mnist/rows/pgd_at.json

A published model (PyTorch/RobustBench state dict, .safetensors, or DeepMind's JAX .npy), read
without torch and without running pickle code (jaxrobust.models.zoo):

  python -m experiments.evaluate --checkpoint=Carmon2019Unlabeled.pt --arch=wrn28_10 --dataset=cifar10 --suite=autoattack

Prints the accuracies and writes <workdir>/eval_<suite>.json (for a checkpoint file:
<out_dir>/eval_<suite>.json, by default runs/published/<file name>/). The adaptive suite keeps
each finished piece in <workdir>/adaptive_cache_n<N>_eot<S>_scale<s>_seed<k>/, so the same
command resumes an interrupted evaluation.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple


from jaxrobust.evaluation import EvalSpec, evaluate_test_set
from jaxrobust.provenance import write_result_json
from jaxrobust.train.restore import restore_run

PUBLISHED_RUNS = os.path.join('runs', 'published')


class EvalOptions(NamedTuple):
  """What every evaluation command takes besides its model: the suite and its knobs."""

  suite: str = 'standard'
  num_test: int = 1000
  epsilons: tuple | list | None = None
  steps_scale: float = 1.0
  eot_samples: int = 8
  seed: int = 0
  progress: bool = False


def _options(options: dict) -> tuple[EvalOptions, EvalSpec]:
  """The options and the evaluation they ask for, checked before anything is loaded or run (the
  spec's dataset is set once the data are known).

  Raises:
    TypeError: an option that does not exist.
    ValueError: a value that cannot work, naming the option.
  """
  o = EvalOptions(**options)
  if not isinstance(o.num_test, int) or isinstance(o.num_test, bool) or o.num_test < 0:
    raise ValueError(f'num_test must be an integer >= 0 (0 = the whole test set), got {o.num_test!r}')
  spec = EvalSpec(
    dataset='synthetic',
    suite=o.suite,
    steps_scale=o.steps_scale,
    eot_samples=o.eot_samples,
    epsilon_grid=o.epsilons,
  )
  return o, spec


def _evaluate_and_write(model, variables, ds, out_dir, o: EvalOptions, spec: EvalSpec, source: dict):
  """Evaluates and writes eval_<suite>.json; `source` names what was evaluated (the run and its
  checkpoint step, the weights folder, or the checkpoint file) in the record."""
  if o.num_test > len(ds.test_images):
    raise ValueError(
      f'num_test={o.num_test}, but the {ds.name} test set has {len(ds.test_images)} images '
      '(0 evaluates all of them)'
    )
  n = o.num_test or len(ds.test_images)
  if o.progress:
    print(f'evaluating {n} {ds.name} test images under the {o.suite!r} suite')
  # The adaptive suite takes hours on a CPU: its finished pieces are kept, one directory per
  # setting of the command's knobs, and a rerun of the same command resumes.
  cache = f'adaptive_cache_n{n}_eot{o.eot_samples}_scale{o.steps_scale:g}_seed{o.seed}'
  res = evaluate_test_set(
    model,
    variables,
    ds,
    spec,
    seed=o.seed,
    num_test=n,
    progress=o.progress,
    cache_dir=os.path.join(out_dir, cache) if o.suite == 'adaptive' else None,
  )
  res = {**res, 'source': source}
  write_result_json(os.path.join(out_dir, f'eval_{o.suite}.json'), res)
  return res


def evaluate_checkpoint(workdir: str, *, require_checksums: bool = False, **options) -> dict:
  """Loads the run in `workdir`, evaluates it, writes eval_<suite>.json there, returns the result.
  With `require_checksums`, a checkpoint without a checksum is refused.

  Args:
    workdir: a training run's work directory.
    **options: the fields of `EvalOptions` (suite, num_test, epsilons, steps_scale, eot_samples,
      seed, progress).

  Raises:
    ValueError: for num_test < 0, steps_scale <= 0, eot_samples < 1 or an unknown suite (before
      anything is loaded).
    NonFiniteLogitsError: when the checkpoint's clean logits are not finite.
  """
  o, spec = _options(options)
  run = restore_run(workdir, require_checksums=require_checksums)
  # The step evaluated: older than the newest when newer checkpoints were damaged (set aside).
  source = {'workdir': os.path.abspath(workdir), 'step': run.step}
  return _evaluate_and_write(run.model, run.variables, run.dataset, workdir, o, spec, source)


def evaluate_weights(weights: str, *, out_dir: str | None = None, ds=None, **options) -> dict:
  """Evaluates a published-weights folder of ours (`jaxrobust.train.weights`: weights.npz,
  config.json, SHA256SUMS) with no training; results go to `out_dir` (default
  runs/published_weights/<folder name>). `options` as `evaluate_checkpoint`.

  Raises:
    PublishedWeightsError: the folder's checksums, names, shapes or values are wrong.
  """
  from jaxrobust.train.weights import load_weights

  o, spec = _options(options)
  _, model, variables, ds = load_weights(weights, ds=ds)
  folder = weights if os.path.isdir(weights) else os.path.dirname(weights)
  out_dir = out_dir or os.path.join('runs', 'published_weights', os.path.basename(os.path.normpath(folder)))
  os.makedirs(out_dir, exist_ok=True)
  # Two folders of one name share the default out_dir: the record names the folder it evaluated.
  source = {'weights': os.path.abspath(folder)}
  return _evaluate_and_write(model, variables, ds, out_dir, o, spec, source)


def evaluate_published(
  checkpoint: str,
  *,
  arch: str,
  dataset: str,
  data_dir: str | None = None,
  out_dir: str | None = None,
  ds=None,
  model_overrides: dict | None = None,
  **options,
) -> dict:
  """Evaluates a published checkpoint file (see `jaxrobust.models.zoo`) on `dataset`'s test set.

  Args:
    checkpoint: a .pt/.pth (PyTorch, zip or legacy), .safetensors or DeepMind .npy file.
    arch: a key of `jaxrobust.models.zoo.ARCHS` (wrn28_10, wrn70_16, preact_resnet18, ...).
    dataset: 'cifar10' or 'cifar100'.
    out_dir: where eval_<suite>.json goes; default runs/published/<checkpoint file name>.
    ds: an already loaded `Dataset` (tests), instead of loading `dataset` from tfds.
    model_overrides: model fields (see `zoo.zoo_network`).
    **options: as `evaluate_checkpoint`.

  Raises:
    ValueError: bad options (before anything is read), an unknown arch or dataset.
    UnsafeCheckpointError: the file's pickle names a global outside the allow-list.
    ArchitectureMismatchError: the file does not hold `arch`'s parameters (first keys named).
  """
  from jaxrobust.data import load_dataset
  from jaxrobust.models.zoo import load_published

  o, spec = _options(options)
  model, variables = load_published(checkpoint, arch, dataset, **(model_overrides or {}))
  if ds is None:
    ds = load_dataset(dataset, data_dir)
  if ds.image_shape != (32, 32, 3):
    raise ValueError(f'{dataset}: images of shape {ds.image_shape}, but the published models take 32×32×3')
  out_dir = out_dir or os.path.join(PUBLISHED_RUNS, os.path.basename(checkpoint))
  os.makedirs(out_dir, exist_ok=True)
  source = {'checkpoint': os.path.abspath(checkpoint), 'arch': arch}
  return _evaluate_and_write(model, variables, ds, out_dir, o, spec, source)


def main(argv):
  del argv
  from absl import app, flags

  F = flags.FLAGS
  if F.check_reproduces:
    from experiments import reproduce

    r = reproduce.check_reproduces(F.check_reproduces, tolerance=F.tolerance, rerun_out=F.rerun_out or None)
    print(reproduce.report(F.check_reproduces, r))
    if F.verdict_out:
      write_result_json(F.verdict_out, reproduce.verdict_record(F.check_reproduces, r, F.tolerance), indent=1)
    return
  eps = [float(e) for e in F.epsilons.split(',')] if F.epsilons else None
  if sum(map(bool, (F.workdir, F.checkpoint, F.weights))) != 1:
    raise app.UsageError(
      'give one of --workdir (a jaxrobust run), --weights (our published weights folder) or --checkpoint '
      '(a published model file of another project)'
    )
  common = dict(
    suite=F.suite,
    num_test=F.num_test,
    epsilons=eps,
    steps_scale=F.steps_scale,
    eot_samples=F.eot,
    seed=F.seed,
    progress=True,
  )
  if F.checkpoint:
    if not F.arch or not F.dataset:
      raise app.UsageError('--checkpoint needs --arch (e.g. wrn28_10) and --dataset (cifar10 or cifar100)')
    res = evaluate_published(
      F.checkpoint,
      arch=F.arch,
      dataset=F.dataset,
      data_dir=F.data_dir or None,
      out_dir=F.out_dir or None,
      **common,
    )
  elif F.weights:
    res = evaluate_weights(F.weights, out_dir=F.out_dir or None, **common)
  else:
    for flag in ('arch', 'dataset', 'out_dir', 'data_dir'):
      if getattr(F, flag):
        raise app.UsageError(f'--{flag} is for --checkpoint; a --workdir run has its own')
    res = evaluate_checkpoint(F.workdir, require_checksums=F.require_checksums, **common)
  for k, v in res.items():
    if isinstance(v, float):
      print(f'{k:>24}: {100 * v:6.2f}%' if k != 'ms_per_image' else f'{k:>24}: {v:.3f} ms')
  if res.get('suite') == 'adaptive':
    print(
      f'{"attack":>20} {"one draw":>9} {"mean":>7} {"majority":>9} {"all-N":>7}  (N = {res["num_draws"]})'
    )
    for name, a in [('clean', res['clean'])] + list(res['attacks'].items()):
      print(
        f'{name:>20} ' + ' '.join(f'{100 * a[k]:8.2f}%' for k in ('single_draw', 'mean', 'majority', 'all'))
      )
    lo, hi = res['worst_case_interval']
    elo, ehi = res['worst_case_expected_interval']
    print(
      f"worst case (each point's worst candidate chosen on {res['selection_draws']} draws, measured on "
      f'{res["num_draws"]} fresh ones): majority {100 * res["worst_case"]:.2f}% '
      f'[{100 * lo:.1f}, {100 * hi:.1f}], expected {100 * res["worst_case_expected"]:.2f}% '
      f'[{100 * elo:.1f}, {100 * ehi:.1f}]'
    )
    print(f"AND of each attack's own majority vote (biased low): {100 * res['and_of_majority_votes']:.2f}%")
    print('flags:', res['flags'])
  report = res.get('autoattack_report')
  if report:
    print(f'AutoAttack ({res["autoattack_version"]}), robust accuracy after each attack:')
    for name, acc in report['robust_accuracy'].items():
      print(
        f'{name:>24}: {100 * acc:6.2f}%  ({report["broken"][name]} broken, {report["seconds"][name]:.0f} s)'
      )
    for w in report['warnings']:
      print('warning:', w)
  if eps:
    print('accuracy vs ε:', {e: round(a, 4) for e, a in zip(eps, res['accuracy_vs_epsilon'])})


if __name__ == '__main__':
  from absl import app, flags, logging

  flags.DEFINE_string('workdir', '', 'work directory of a jaxrobust training run')
  flags.DEFINE_string(
    'weights', '', 'a published-weights folder of ours (weights.npz, config.json, SHA256SUMS)'
  )
  flags.DEFINE_string('checkpoint', '', 'a published model file: .pt/.pth, .safetensors, DeepMind .npy')
  flags.DEFINE_string(
    'arch', '', 'architecture of --checkpoint: wrn28_10, wrn34_10, wrn34_20, wrn70_16, resnet18, ...'
  )
  flags.DEFINE_string('dataset', '', 'dataset of --checkpoint: cifar10 or cifar100')
  flags.DEFINE_string('data_dir', '', 'tfds data_dir for --dataset')
  flags.DEFINE_string('out_dir', '', 'where --checkpoint results go (default runs/published/<file name>)')
  flags.DEFINE_string('suite', 'standard', 'standard, study, autoattack, autoattack_rand or adaptive')
  flags.DEFINE_integer('num_test', 1000, 'test images (0 = all)', lower_bound=0)
  flags.DEFINE_string('epsilons', '', 'comma-separated ε grid for PGD-L∞ accuracy (vmapped)')
  flags.DEFINE_float('steps_scale', 1.0, 'scale attack iteration counts')
  flags.DEFINE_integer('eot', 8, 'EOT samples for stochastic models', lower_bound=1)
  flags.DEFINE_integer('seed', 0, 'seed', lower_bound=0)
  flags.DEFINE_string(
    'check_reproduces',
    '',
    'a Table 1 row record (results/<dataset>/rows/<row>.json): rerun the row here and say whether it '
    'reproduces bit for bit, to --tolerance, or not at all (also spelled --check-reproduces)',
  )
  flags.DEFINE_bool('require_checksums', False, 'refuse a --workdir checkpoint that has no checksum')
  flags.DEFINE_float('tolerance', 0.02, 'with --check_reproduces: largest accuracy change (fraction) allowed')
  flags.DEFINE_string(
    'verdict_out', '', 'with --check_reproduces: also write the verdict (JSON, with the environment)'
  )
  flags.DEFINE_string(
    'rerun_out',
    '',
    "with --check_reproduces: also keep the rerun's own row record in this folder (<row>.json; an "
    'existing file there is refused)',
  )
  logging.set_verbosity(logging.WARNING)
  # The dashed spelling of the flag, as the docs write it.
  sys.argv = [a.replace('--check-reproduces', '--check_reproduces', 1) for a in sys.argv]
  app.run(main)
