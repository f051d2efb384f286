"""Does the adaptive suite's cheaper EOT-Square find the worst case that the full one finds?

  python -m experiments.suite_budget --model=results/published/fashion_mnist/noise_injection --num_test=250

The adaptive suite's EOT-Square runs points far from breaking on a quarter of its draws per query
(`far_draws`, a sequential test in `attacks.square`). This runs the suite on a trained stochastic
model (published weights or a run's work directory) with one attack more: EOT-Square at the full
budget, every query on all its draws. From the candidates' scores the per-point worst case is
computed twice, over the suite's candidates with one EOT-Square or the other, on the same selection
and measurement draws; the record gives both estimates with their intervals, how many points the
two disagree on, and each suite's compute time (the pieces' seconds, summed by code; per 1000
images). Pieces are kept in results/suite_budget/<dataset>/pieces/<row>, so a rerun resumes and a
second process started with the same command splits the remaining pieces. Writes
results/suite_budget/<dataset>/<row>.json.
"""

from __future__ import annotations

import os

import numpy as np

from experiments.converged import EOT_MICROBATCH
from jaxrobust import keys
from jaxrobust.evaluation import EvalSpec, build_evaluation
from jaxrobust.evaluation.adaptive import evaluate_adaptive
from jaxrobust.evaluation.estimator import worst_case
from jaxrobust.models import model_traits
from jaxrobust.provenance import write_result_json

OUT = os.path.join('results', 'suite_budget')
FULL = 'eot_square_full'


def full_square(spec: dict) -> dict:
  """The suite's EOT-Square with every query on all its draws."""
  return {k: v for k, v in spec.items() if k != 'far_draws'}


def compare(scores: dict, seconds: dict, n: int) -> dict:
  """The worst case over the suite's candidates with the cheap EOT-Square ('cheap') and with the
  full one in its place ('full'), on the same draws, and what each suite costs.

  Args:
    scores: {candidate: `estimator.candidate_scores` over the points}, holding both 'eot_square'
      and `FULL`.
    seconds: {candidate: seconds of its pieces}.
    n: the number of points.
  """
  out = {}
  won = {}
  for name, drop in (('cheap', FULL), ('full', 'eot_square')):
    est = worst_case({k: v for k, v in scores.items() if k != drop})
    won[name] = est.won
    cost = sum(v for k, v in seconds.items() if k != drop)
    out[name] = {
      'worst_case': est.majority,
      'worst_case_interval': list(est.majority_interval),
      'expected': est.expected,
      'expected_interval': list(est.expected_interval),
      'core_hours_per_1000_images': cost / 3600 * 1000 / n,
    }
  lo, hi = out['full']['worst_case_interval']
  out['difference'] = out['cheap']['worst_case'] - out['full']['worst_case']
  out['half_width_of_full'] = (hi - lo) / 2
  out['within_half_width'] = bool(abs(out['difference']) < out['half_width_of_full'])
  out['points_that_differ'] = int((won['cheap'] != won['full']).sum())
  out['eot_square_seconds'] = {'cheap': seconds['eot_square'], 'full': seconds[FULL]}
  out['eot_square_speedup'] = seconds[FULL] / seconds['eot_square']
  return out


def main(argv):
  del argv
  from jaxrobust.train.weights import load_model

  config, model, variables, ds = load_model(FLAGS.model)
  row = os.path.basename(os.path.normpath(FLAGS.model))
  dataset = config.data.name
  traits = model_traits(model)
  if not traits.stochastic:
    raise SystemExit(f'--model={FLAGS.model}: a deterministic model; EOT-Square is for stochastic ones')
  n = min(FLAGS.num_test, len(ds.test_labels))
  spec = EvalSpec(
    dataset=dataset, suite='adaptive', eot_samples=FLAGS.eot, eot_microbatch=EOT_MICROBATCH.get(row)
  )
  plan = build_evaluation(spec, traits)
  plan = plan._replace(attacks=dict(plan.attacks, **{FULL: full_square(plan.attacks['eot_square'])}))
  result = evaluate_adaptive(
    model,
    variables,
    ds.test_images[:n],
    np.asarray(ds.test_labels[:n]),
    plan,
    key=keys.evaluation_key(config.seed),
    progress=True,
    cache_dir=os.path.join(FLAGS.out, dataset, 'pieces', row),
  )
  record = dict(
    row=row,
    model=FLAGS.model,
    n=n,
    eot_samples=FLAGS.eot,
    specs={k: plan.attacks[k] for k in ('eot_square', FULL)},
    **compare(result.per_example['scores'], result.seconds, n),
    # Each EOT-Square's own accuracy (majority of the fresh draws), beside the worst cases.
    eot_square_majority={
      'cheap': result.attacks['eot_square']['majority'],
      'full': result.attacks[FULL]['majority'],
    },
  )
  path = write_result_json(os.path.join(FLAGS.out, dataset, f'{row}.json'), record, indent=1)
  print(path, {k: record[k] for k in ('difference', 'half_width_of_full', 'eot_square_speedup')})


def command_line() -> None:
  """`python -m experiments.suite_budget`: the flags below, then the run (experiments/suite_budget/__main__.py)."""
  global FLAGS
  from absl import app, flags

  flags.DEFINE_string('model', None, 'published weights or a run of a stochastic model', required=True)
  flags.DEFINE_integer('num_test', 250, 'test images', lower_bound=1)
  flags.DEFINE_integer('eot', 20, 'draws of every EOT attack', lower_bound=1)
  flags.DEFINE_string('out', OUT, 'results directory')
  FLAGS = flags.FLAGS
  app.run(main)
