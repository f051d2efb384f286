"""Evaluate a checkpoint under an attack suite, with robust accuracy against a vmapped ε grid.

  python -m experiments.evaluate --workdir=runs/fashion_mnist/pgd_at --suite=standard --num_test=1000
  python -m experiments.evaluate --workdir=... --suite=study --epsilons=0,0.05,0.1,0.2,0.3

Prints the accuracies and writes <workdir>/eval_<suite>.json.
"""
from __future__ import annotations

import json
import os

import jax

from jaxrobust.evaluation import evaluate_model
from jaxrobust.train.restore import load_trained


def evaluate_checkpoint(workdir: str, *, suite: str = 'standard', num_test: int = 1000, epsilons=None,
                        steps_scale: float = 1.0, eot_samples: int = 8, seed: int = 0,
                        progress: bool = False) -> dict:
  """Loads the run in `workdir`, evaluates it, writes eval_<suite>.json there, returns the result."""
  config, model, variables, ds = load_trained(workdir)
  n = min(num_test, len(ds.test_images)) if num_test else len(ds.test_images)
  res = evaluate_model(model, variables, ds.test_images[:n], ds.test_labels[:n], dataset=ds.name,
                       suite=suite, key=jax.random.key(seed), steps_scale=steps_scale,
                       eot_samples=eot_samples, epsilon_grid=epsilons, progress=progress)
  out = os.path.join(workdir, f'eval_{suite}.json')
  with open(out + '.tmp', 'w') as f:
    json.dump(res, f)
  os.replace(out + '.tmp', out)
  return res


def main(argv):
  del argv
  from absl import flags
  F = flags.FLAGS
  eps = [float(e) for e in F.epsilons.split(',')] if F.epsilons else None
  res = evaluate_checkpoint(F.workdir, suite=F.suite, num_test=F.num_test, epsilons=eps,
                            steps_scale=F.steps_scale, eot_samples=F.eot, seed=F.seed, progress=True)
  for k, v in res.items():
    if isinstance(v, float):
      print(f'{k:>24}: {100 * v:6.2f}%' if k != 'ms_per_image' else f'{k:>24}: {v:.3f} ms')
  if eps:
    print('accuracy vs ε:', {e: round(a, 4) for e, a in zip(eps, res['accuracy_vs_epsilon'])})


if __name__ == '__main__':
  from absl import app, flags, logging
  flags.DEFINE_string('workdir', None, 'work directory of a training run', required=True)
  flags.DEFINE_string('suite', 'standard', 'standard or study')
  flags.DEFINE_integer('num_test', 1000, 'test images (0 = all)')
  flags.DEFINE_string('epsilons', '', 'comma-separated ε grid for PGD-L∞ accuracy (vmapped)')
  flags.DEFINE_float('steps_scale', 1.0, 'scale attack iteration counts')
  flags.DEFINE_integer('eot', 8, 'EOT samples for stochastic models')
  flags.DEFINE_integer('seed', 0, 'seed')
  logging.set_verbosity(logging.WARNING)
  app.run(main)
