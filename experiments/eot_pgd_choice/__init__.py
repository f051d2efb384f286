"""Which EOT-PGD the adaptive suite should run, decided by measurement on stochastic models.

  python -m experiments.eot_pgd_choice --workdir=results/published/fashion_mnist/lwta --num_test=500

Runs two EOT-PGD variants with equal work (same ε, steps, restarts, EOT draws and keys) on the
first `num_test` test images of a trained stochastic model:
  ce_constant    cross-entropy, constant step ε/4·20/steps (the suite's `eot_pgd_spec` today)
  margin_cosine  CW margin loss, the same initial step with a cosine schedule
and classifies each attacked point with `draws` fresh draws (keys disjoint from the attack's).
Writes results/eot_pgd_choice/<dataset>/<row>.json: per variant the expected accuracy (mean over
draws) and the majority-of-draws accuracy with 95 % intervals, and the paired comparison (points
only one variant broke, under the majority vote). The stronger variant is the one with the lower
majority accuracy; the suite's spec should name it.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxrobust import attacks as A
from jaxrobust import keys
from jaxrobust.evaluation.accuracy import as_unit_float
from jaxrobust.evaluation.suites import eot_pgd_spec
from jaxrobust.evaluation.estimator import mean_interval, plurality, wilson_interval
from jaxrobust.evaluation.suites import linf_budget
from jaxrobust.models import make_logits_fn
from jaxrobust.provenance import write_result_json
from jaxrobust.train.weights import load_model

OUT = os.path.join('results', 'eot_pgd_choice')


def variants(epsilon: float, *, num_steps: int, eot_samples: int) -> dict[str, dict]:
  """The two candidates, equal in work: the suite's spec and the same with margin + cosine."""
  base = eot_pgd_spec(epsilon, num_steps=num_steps, eot_samples=eot_samples)
  return {'ce_constant': base, 'margin_cosine': dict(base, loss='margin', step_schedule='cosine')}


def measure(logits_fn, x, y, specs: dict, *, key, draws: int, batch: int = 100) -> dict:
  """Per variant: each attacked point's prediction on `draws` fresh draws, (draws, N).

  Args:
    specs: {variant: an attack spec (`attacks.build_attack`) or an `attack(logits_fn, key, x, y)`}.
  """
  k_attack, k_measure = jax.random.split(key)
  predict = jax.jit(lambda xx, k: jnp.argmax(logits_fn(xx, k), -1))
  out = {}
  for name, spec in specs.items():
    fn = spec if callable(spec) else A.build_attack(spec)
    attack = jax.jit(lambda f, k, xx, yy, fn=fn: fn(f, k, xx, yy))
    preds = []
    for a in tqdm(range(0, len(x), batch), desc=name, leave=False):
      xa = attack(logits_fn, keys.batch_keys(k_attack, a).attacks, x[a : a + batch], y[a : a + batch])
      preds.append(
        np.stack(
          [
            np.asarray(predict(xa, keys.draw_key(keys.batch_keys(k_measure, a).clean, d)))
            for d in range(draws)
          ]
        )
      )
    out[name] = np.concatenate(preds, axis=1)  # (draws, N)
  return out


def accuracies(p: np.ndarray, y: np.ndarray) -> dict:
  """The expected (mean over draws) and majority-of-draws accuracy of predictions p (draws, N),
  with their 95 % intervals."""
  per_point = (p == y[None]).mean(0)
  k = int(plurality(p, y).sum())
  return {
    'expected': float(per_point.mean()),
    'expected_interval': mean_interval(per_point),
    'majority': k / len(y),
    'majority_interval': wilson_interval(k, len(y)),
  }


def summarize(preds: dict, y: np.ndarray) -> dict:
  res = {name: accuracies(p, y) for name, p in preds.items()}
  majority = {name: plurality(p, y) for name, p in preds.items()}
  a, b = list(preds)
  res['paired'] = {
    f'broken_only_by_{a}': int((~majority[a] & majority[b]).sum()),
    f'broken_only_by_{b}': int((majority[a] & ~majority[b]).sum()),
  }
  res['stronger'] = min((a, b), key=lambda n: res[n]['majority'])
  return res


def main(argv):
  del argv
  config, model, variables, ds = load_model(FLAGS.workdir)
  n = min(FLAGS.num_test, len(ds.test_labels))
  x, y = np.asarray(as_unit_float(ds.test_images[:n])), np.asarray(ds.test_labels[:n])
  eps = linf_budget('standard', config.data.name)
  specs = variants(eps, num_steps=FLAGS.steps, eot_samples=FLAGS.eot)
  key = keys.eval_keys(keys.evaluation_key(config.seed)).study
  preds = measure(make_logits_fn(model, variables), x, y, specs, key=key, draws=FLAGS.draws)
  row = os.path.basename(os.path.normpath(FLAGS.workdir))
  rec = dict(summarize(preds, y), row=row, num_test=n, epsilon=eps, draws=FLAGS.draws, specs=specs)
  path = write_result_json(os.path.join(FLAGS.out, config.data.name, f'{row}.json'), rec, indent=1)
  print(path, {k: rec[k]['majority'] for k in specs}, 'stronger:', rec['stronger'])


def command_line() -> None:
  """`python -m experiments.eot_pgd_choice`: the flags below, then the run (experiments/eot_pgd_choice/__main__.py)."""
  global FLAGS
  from absl import app, flags

  flags.DEFINE_string('workdir', None, 'a trained stochastic run, or its published weights', required=True)
  flags.DEFINE_integer('num_test', 500, 'test images', lower_bound=1)
  flags.DEFINE_integer('steps', 100, 'EOT-PGD steps', lower_bound=1)
  flags.DEFINE_integer('eot', 20, 'draws per gradient', lower_bound=1)
  flags.DEFINE_integer('draws', 10, 'fresh draws that classify each attacked point', lower_bound=1)
  flags.DEFINE_string('out', OUT, 'results directory')
  FLAGS = flags.FLAGS
  app.run(main)
