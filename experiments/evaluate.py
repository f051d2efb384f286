"""Evaluate a checkpoint under an attack suite, with robust accuracy against a vmapped ε grid.

  python -m experiments.evaluate --workdir=runs/fashion_mnist/pgd_at --suite=standard --num_test=1000
  python -m experiments.evaluate --workdir=... --suite=study --epsilons=0,0.05,0.1,0.2,0.3
  python -m experiments.evaluate --workdir=... --suite=autoattack     # AA standard, or AA-rand if randomised

Prints the accuracies and writes <workdir>/eval_<suite>.json.
"""

from __future__ import annotations

import os

import jax

from jaxrobust.evaluation import SUITES, evaluate_model
from jaxrobust.files import write_json_atomic
from jaxrobust.train.restore import load_trained


def evaluate_checkpoint(
  workdir: str,
  *,
  suite: str = 'standard',
  num_test: int = 1000,
  epsilons=None,
  steps_scale: float = 1.0,
  eot_samples: int = 8,
  seed: int = 0,
  progress: bool = False,
) -> dict:
  """Loads the run in `workdir`, evaluates it, writes eval_<suite>.json there, returns the result.

  Raises:
    ValueError: for num_test < 0, steps_scale <= 0, eot_samples < 1 or an unknown suite (before
      anything is loaded).
    NonFiniteLogitsError: when the checkpoint's clean logits are not finite.
  """
  if not isinstance(num_test, int) or num_test < 0:
    raise ValueError(f'num_test must be an integer >= 0 (0 = the whole test set), got {num_test!r}')
  if not steps_scale > 0:
    raise ValueError(f'steps_scale must be > 0, got {steps_scale}')
  if not isinstance(eot_samples, int) or eot_samples < 1:
    raise ValueError(f'eot must be an integer >= 1, got {eot_samples!r}')
  if suite not in SUITES:
    raise ValueError(f'unknown suite {suite!r}; use one of {SUITES}')
  config, model, variables, ds = load_trained(workdir)
  n = min(num_test, len(ds.test_images)) if num_test else len(ds.test_images)
  res = evaluate_model(
    model,
    variables,
    ds.test_images[:n],
    ds.test_labels[:n],
    dataset=ds.name,
    suite=suite,
    key=jax.random.key(seed),
    steps_scale=steps_scale,
    eot_samples=eot_samples,
    epsilon_grid=epsilons,
    progress=progress,
  )
  write_json_atomic(os.path.join(workdir, f'eval_{suite}.json'), res)
  return res


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  eps = [float(e) for e in F.epsilons.split(',')] if F.epsilons else None
  res = evaluate_checkpoint(
    F.workdir,
    suite=F.suite,
    num_test=F.num_test,
    epsilons=eps,
    steps_scale=F.steps_scale,
    eot_samples=F.eot,
    seed=F.seed,
    progress=True,
  )
  for k, v in res.items():
    if isinstance(v, float):
      print(f'{k:>24}: {100 * v:6.2f}%' if k != 'ms_per_image' else f'{k:>24}: {v:.3f} ms')
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

  flags.DEFINE_string('workdir', None, 'work directory of a training run', required=True)
  flags.DEFINE_string('suite', 'standard', 'standard, study, autoattack or autoattack_rand')
  flags.DEFINE_integer('num_test', 1000, 'test images (0 = all)')
  flags.DEFINE_string('epsilons', '', 'comma-separated ε grid for PGD-L∞ accuracy (vmapped)')
  flags.DEFINE_float('steps_scale', 1.0, 'scale attack iteration counts')
  flags.DEFINE_integer('eot', 8, 'EOT samples for stochastic models')
  flags.DEFINE_integer('seed', 0, 'seed')
  logging.set_verbosity(logging.WARNING)
  app.run(main)
