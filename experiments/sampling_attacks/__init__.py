"""Which attacks on a stochastic model's sampling the adaptive suite runs, and at which
temperatures, decided by measurement.

  python -m experiments.sampling_attacks --workdir=results/published/fashion_mnist/lwta

Runs, with equal work (same ε, steps, restarts, draws per step and keys), on `num_test` test
images from `first` (by default images the Table 1 rows are not evaluated on):
  eot_pgd                     the suite's EOT-PGD (cross-entropy averaged over draws)
  expected_probability        PGD on −log E_k[p_y], the draws averaged inside the loss
  straight_through_<T>        EOT-PGD through one-hot winners, the relaxed gradient at T backward
                              ('train': the model's own training temperature)
  low_temperature_<τ>         EOT-PGD on winners relaxed at τ, the points transferred
and classifies each attacked point with `draws` fresh draws of the model itself (keys disjoint
from the attacks'). Writes results/sampling_attacks/<dataset>/<row>.json: per variant the
expected and majority-of-draws accuracy with 95 % intervals, the points only it and only EOT-PGD
broke (majority vote), its seconds, and the strongest temperature of each kind (lowest majority
accuracy), which `jaxrobust.evaluation.suites` names (`LOW_TEMPERATURE`,
`STRAIGHT_THROUGH_TEMPERATURE`).
"""

from __future__ import annotations

import os
import time

import numpy as np

from experiments.eot_pgd_choice import accuracies, measure
from jaxrobust import keys
from jaxrobust.evaluation.accuracy import as_unit_float
from jaxrobust.evaluation.adaptive import sampling_attack
from jaxrobust.evaluation.estimator import plurality
from jaxrobust.evaluation.suites import SamplingAttack, eot_pgd_spec, linf_budget
from jaxrobust.models import make_logits_fn, model_traits
from jaxrobust.files import write_atomic
from jaxrobust.provenance import write_result_json
from jaxrobust.train.weights import load_model

OUT = os.path.join('results', 'sampling_attacks')
REFERENCE = 'eot_pgd'


def variants(
  epsilon: float, *, num_steps: int, eot_samples: int, low_temperatures, straight_through_temperatures
) -> dict[str, SamplingAttack]:
  """The candidates, equal in work: every one runs `eot_pgd_spec(epsilon, num_steps)` with
  `eot_samples` forward and backward passes per step and image."""
  eot = eot_pgd_spec(epsilon, num_steps=num_steps, eot_samples=eot_samples)
  out = {
    REFERENCE: SamplingAttack(eot),
    'expected_probability': SamplingAttack(dict(eot, eot_samples=1), mean_probability=eot_samples),
  }
  for t in straight_through_temperatures:
    out[f'straight_through_{"train" if t is None else t}'] = SamplingAttack(
      eot, lwta_mode='hard', temperature=t
    )
  for t in low_temperatures:
    out[f'low_temperature_{t}'] = SamplingAttack(eot, lwta_mode='eval', eval_temperature=t)
  return out


def summarize(preds: dict, y: np.ndarray, candidates: dict[str, SamplingAttack]) -> dict:
  """Per variant its accuracies and the points it broke that EOT-PGD did not (and the reverse);
  the strongest of each kind (lowest majority accuracy, then lowest expected)."""
  ref = plurality(preds[REFERENCE], y)
  res: dict = {}
  for name, p in preds.items():
    robust = plurality(p, y)
    res[name] = dict(
      accuracies(p, y),
      broken_only_by_it=int((ref & ~robust).sum()),
      broken_only_by_eot_pgd=int((~ref & robust).sum()),
    )

  def strongest(prefix: str):
    names = [n for n in preds if n.startswith(prefix)]
    if not names:
      return None
    best = min(names, key=lambda n: (res[n]['majority'], res[n]['expected']))
    return {'variant': best, 'temperature': candidates[best].temperature or candidates[best].eval_temperature}

  res['strongest'] = {
    'straight_through': strongest('straight_through_'),
    'low_temperature': strongest('low_temperature_'),
  }
  return res


def markdown(rec: dict) -> str:
  """The comparison as a table: each variant's majority and expected accuracy with 95 % intervals
  and its points broken only by it / only by EOT-PGD."""
  pct = lambda v: f'{100 * v:.1f}'  # noqa: E731
  lines = [
    f'{rec["row"]}, test images {rec["first"]}–{rec["first"] + rec["num_test"] - 1}, ε = {rec["epsilon"]}, '
    f'{rec["work"]}; each attacked point classified on {rec["draws"]} fresh draws.',
    '',
    '| variant | majority [95 %] | expected [95 %] | broken only by it / only by EOT-PGD | seconds |',
    '|---|---|---|---|---|',
  ]
  for name in rec['candidates']:
    r = rec[name]
    lines.append(
      f'| {name} | {pct(r["majority"])} [{pct(r["majority_interval"][0])}, {pct(r["majority_interval"][1])}] '
      f'| {pct(r["expected"])} [{pct(r["expected_interval"][0])}, {pct(r["expected_interval"][1])}] '
      f'| {r["broken_only_by_it"]} / {r["broken_only_by_eot_pgd"]} | {r["seconds"]:.0f} |'
    )
  return '\n'.join(lines) + '\n'


def write(rec: dict, out_dir: str, dataset: str) -> str:
  """The record as JSON and its table as markdown beside it; returns the JSON's path."""
  path = write_result_json(os.path.join(out_dir, dataset, f'{rec["row"]}.json'), rec, indent=1)
  write_atomic(path.removesuffix('.json') + '.md', markdown(rec))
  return path


def run(
  workdir: str, *, first: int, num_test: int, steps: int, eot: int, draws: int, low, straight, out_dir: str
):
  config, model, variables, ds = load_model(workdir)
  if not model_traits(model).lwta:
    raise ValueError(f'{workdir}: {type(model).__name__} is not declared an LWTA network')
  if first + num_test > len(ds.test_labels):
    raise ValueError(f'--first={first} + --num_test={num_test} exceeds the {len(ds.test_labels)} test images')
  x = np.asarray(as_unit_float(ds.test_images[first : first + num_test]))
  y = np.asarray(ds.test_labels[first : first + num_test])
  eps = linf_budget('standard', config.data.name)
  candidates = variants(
    eps, num_steps=steps, eot_samples=eot, low_temperatures=low, straight_through_temperatures=straight
  )
  key = keys.eval_keys(keys.evaluation_key(config.seed)).study
  f = make_logits_fn(model, variables)
  preds, seconds = {}, {}
  for name, c in candidates.items():
    t = time.perf_counter()
    preds.update(measure(f, x, y, {name: sampling_attack(model, variables, c)}, key=key, draws=draws))
    seconds[name] = time.perf_counter() - t
  res = summarize(preds, y, candidates)
  for name in candidates:
    res[name]['seconds'] = seconds[name]
  row = os.path.basename(os.path.normpath(workdir))
  rec = dict(
    res,
    row=row,
    workdir=workdir,
    first=first,
    num_test=num_test,
    epsilon=eps,
    draws=draws,
    work=f'every variant: {steps} steps, 2 restarts, {eot} forward and backward passes per step and image',
    candidates={k: v._asdict() for k, v in candidates.items()},
  )
  return write(rec, out_dir, config.data.name), rec


def main(argv):
  del argv
  temps = lambda s: [None if t == 'train' else float(t) for t in s.split(',') if t]  # noqa: E731
  path, rec = run(
    FLAGS.workdir,
    first=FLAGS.first,
    num_test=FLAGS.num_test,
    steps=FLAGS.steps,
    eot=FLAGS.eot,
    draws=FLAGS.draws,
    low=temps(FLAGS.low_temperatures),
    straight=temps(FLAGS.straight_through_temperatures),
    out_dir=FLAGS.out,
  )
  print(path)
  for name in rec['candidates']:
    r = rec[name]
    print(
      f'{name:28s} majority {r["majority"]:.3f} expected {r["expected"]:.3f} '
      f'only it {r["broken_only_by_it"]} only EOT-PGD {r["broken_only_by_eot_pgd"]} {r["seconds"]:.0f} s'
    )
  print('strongest:', rec['strongest'])


def command_line() -> None:
  """`python -m experiments.sampling_attacks`: the flags below, then the run (experiments/sampling_attacks/__main__.py)."""
  global FLAGS
  from absl import app, flags

  flags.DEFINE_string(
    'workdir', 'results/published/fashion_mnist/lwta', 'a trained LWTA run, or its published weights'
  )
  flags.DEFINE_integer(
    'first', 9000, 'first test image (Table 1 and the converged study use the first 1000)', lower_bound=0
  )
  flags.DEFINE_integer('num_test', 200, 'test images', lower_bound=1)
  flags.DEFINE_integer('steps', 50, 'PGD steps of every variant', lower_bound=1)
  flags.DEFINE_integer('eot', 10, 'draws per step of every variant', lower_bound=1)
  flags.DEFINE_integer('draws', 10, 'fresh draws that classify each attacked point', lower_bound=1)
  flags.DEFINE_string(
    'low_temperatures', '0.03,0.1,0.3,0.5,0.67', 'relaxation temperatures of the transfer surrogate'
  )
  flags.DEFINE_string(
    'straight_through_temperatures', 'train,0.25,1.0', "backward temperatures ('train': the model's)"
  )
  flags.DEFINE_string('out', OUT, 'results directory')
  FLAGS = flags.FLAGS
  app.run(main)
