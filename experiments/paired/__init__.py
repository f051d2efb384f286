"""Is a stochastic row more or less robust than PGD-AT? The paired comparison on the same images.

  python -m experiments.paired --measure_reference   # PGD-AT's per-point AutoAttack (minutes)
  python -m experiments.paired                       # the paired table from the committed records

The converged study evaluates each row on the same first 1000 Fashion-MNIST test images. Two
accuracies measured on the same points are not independent, so "the two 95 % intervals overlap"
says little: what decides is the per-point difference. For each stochastic row, its per-point
worst case (each point's worst candidate chosen on the selection draws and measured on fresh
ones, recomputed from the committed pieces, `estimator.worst_case`) is paired with PGD-AT's
per-point AutoAttack outcome (standard version, committed by `--measure_reference`):

- expected: d_i = (fraction of measurement draws right at point i) − (PGD-AT robust at i); the
  mean of d with a 95 % interval from the d_i's own spread (paired, normal approximation);
- majority: d_i = (the chosen candidate wins the vote at i) − (PGD-AT robust at i); the same
  interval, and McNemar's exact test on the discordant points (the row robust where PGD-AT is
  not, and the reverse).

Writes results/converged/<dataset>/paired.json and paired.md.

References:
  McNemar. Note on the sampling error of the difference between correlated proportions or
  percentages. Psychometrika 12, 1947.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re

import numpy as np

from jaxrobust.evaluation import EvalSpec, evaluate_test_set
from jaxrobust.evaluation.cache import stored_pieces
from jaxrobust.evaluation.estimator import SCORE_FIELDS, worst_case
from jaxrobust.files import write_atomic
from jaxrobust.provenance import write_result_json

ROOT = os.path.join('results', 'converged')
REFERENCE = 'pgd_at'
STOCHASTIC_ROWS = ('lwta', 'noise_injection', 'smoothing_pgd_fgsm_cw_pni')
PIECE = re.compile(r'batch(\d{7})_(.+)\.json$')


def row_worst_case(pieces_dir: str):
  """The row's `estimator.worst_case` over every candidate, from its committed adaptive pieces
  (their values only: no model is run)."""
  return worst_case(row_scores(pieces_dir))


def row_scores(pieces_dir: str) -> dict[str, dict[str, np.ndarray]]:
  """{candidate: `estimator.candidate_scores` over the row's points} from its committed adaptive
  pieces, batches in order."""
  parts: dict[str, dict[int, dict]] = {}
  for path in glob.glob(os.path.join(pieces_dir, 'batch*.json')):
    m = PIECE.search(os.path.basename(path))
    if not m:
      continue
    with open(path) as f:
      parts.setdefault(m.group(2), {})[int(m.group(1))] = json.load(f)['value']['estimator']
  if not parts:
    raise FileNotFoundError(f'{pieces_dir}: no adaptive pieces')
  starts = sorted(next(iter(parts.values())))
  for name, by_start in parts.items():
    if sorted(by_start) != starts:
      raise ValueError(f'{pieces_dir}: candidate {name!r} has pieces for other batches than the rest')
  return {
    name: {f: np.concatenate([np.asarray(by_start[s][f]) for s in starts]) for f in SCORE_FIELDS}
    for name, by_start in parts.items()
  }


def adaptive_pieces(directory: str) -> dict[str, dict[str, dict]]:
  """{candidate: {batch: its estimator scores}} of a row's intact adaptive pieces
  (batch<start>_<candidate>), read through their seals; {} without the folder."""
  out: dict[str, dict[str, dict]] = {}
  if os.path.isdir(directory):
    for name, value in stored_pieces(directory).items():
      batch, _, candidate = name.partition('_')
      out.setdefault(candidate, {})[batch] = value['estimator']
  return out


def added_pieces(directory: str) -> dict[str, dict[str, dict]]:
  """{attack: {batch: its estimator scores}} of the added attacks' intact pieces under
  `directory` (one folder per attack, as `experiments.added_attacks` keeps them); {} without it."""
  if not os.path.isdir(directory):
    return {}
  return {
    name: {batch: value['estimator'] for batch, value in stored_pieces(os.path.join(directory, name)).items()}
    for name in sorted(os.listdir(directory))
    if os.path.isdir(os.path.join(directory, name))
  }


def agreement(rerun: dict[str, dict[str, dict]], study: dict[str, dict[str, dict]], *, worst: bool) -> dict:
  """How far a rerun's candidates land from the study's, point by point (both as
  `adaptive_pieces` returns them): each candidate both hold, on the batches both hold, alone in
  both (expected and majority of the measurement draws) with the paired difference rerun − study
  and McNemar's test; with `worst`, also the worst case (`estimator.worst_case`, each run choosing
  on its own selection draws) over the candidates both hold, on the batches where every one of
  them is in both. When the key schedule changed between the two, only sampling noise should
  separate them.

  Raises:
    ValueError: when no candidate has a batch in both.
  """
  out: dict = {'attacks': {}}
  common: dict[str, list[str]] = {}
  for name in sorted(set(rerun) & set(study)):
    batches = sorted(set(rerun[name]) & set(study[name]))
    if batches:
      common[name] = batches
      out['attacks'][name] = dict(_pair(rerun[name], study[name], batches), batches=batches)
  if not common:
    raise ValueError('agreement: no candidate has a batch in both the rerun and the study')
  if worst:
    batches = sorted(set.intersection(*(set(b) for b in common.values())))
    a = worst_case({name: _joined(rerun[name], batches) for name in common})
    b = worst_case({name: _joined(study[name], batches) for name in common})
    t = mcnemar(a.won, b.won)
    out['worst_case'] = {
      'n': len(a.won),
      'batches': batches,
      'candidates': sorted(common),
      'study': {'expected': b.expected, 'majority': b.majority},
      'rerun': {'expected': a.expected, 'majority': a.majority},
      # how many points each candidate supplied to each run's worst case
      'chosen': {
        run: {k: int((wc.chosen == i).sum()) for i, k in enumerate(wc.names)}
        for run, wc in (('study', b), ('rerun', a))
      },
      'majority_rerun_minus_study': paired(a.won, b.won),
      'expected_rerun_minus_study': paired(a.per_point, b.per_point),
      'mcnemar_majority': {
        'robust_only_rerun': t['only_row'],
        'robust_only_study': t['only_reference'],
        'p_value': t['p_value'],
      },
    }
  return out


def _joined(by_batch: dict[str, dict], batches: list[str]) -> dict[str, np.ndarray]:
  """One candidate's scores on the given batches, in their order, as one array per field."""
  return {f: np.concatenate([np.asarray(by_batch[b][f]) for b in batches]) for f in SCORE_FIELDS}


def _pair(rerun: dict[str, dict], study: dict[str, dict], batches: list[str]) -> dict:
  """One candidate of two runs on the given batches: alone in each, and paired."""
  a_scores, b_scores = _joined(rerun, batches), _joined(study, batches)
  a, b = np.asarray(a_scores['measure_majority'], bool), np.asarray(b_scores['measure_majority'], bool)
  t = mcnemar(a, b)
  return {
    'n': len(a),
    'study': {'expected': float(np.mean(b_scores['measure_mean'])), 'majority': float(b.mean())},
    'rerun': {'expected': float(np.mean(a_scores['measure_mean'])), 'majority': float(a.mean())},
    'majority_rerun_minus_study': paired(a, b),
    'expected_rerun_minus_study': paired(a_scores['measure_mean'], b_scores['measure_mean']),
    'mcnemar_majority': {
      'robust_only_rerun': t['only_row'],
      'robust_only_study': t['only_reference'],
      'p_value': t['p_value'],
    },
  }


def agreement_markdown(out: dict, caption: str) -> str:
  """`agreement`'s table under a caption: one line per candidate, then the worst case if any."""
  pct = lambda v: f'{100 * v:.1f}'  # noqa: E731

  def pts(d: dict) -> str:
    return f'{100 * d["difference"]:+.1f} [{100 * d["interval"][0]:+.1f}, {100 * d["interval"][1]:+.1f}]'

  lines = [
    caption + ' Accuracy expected / majority of the measurement draws; differences rerun − study '
    'in points with the paired 95 % interval; McNemar on the points whose majority verdict differs.',
    '',
    '| attack | images | study | rerun | majority: rerun − study | expected: rerun − study '
    '| robust only in the rerun / only in the study | McNemar p |',
    '|---|---|---|---|---|---|---|---|',
  ]
  rows = list(out['attacks'].items())
  if 'worst_case' in out:
    rows.append(
      (f'**worst case** (over the {len(out["worst_case"]["candidates"])} above)', out['worst_case'])
    )
  for name, r in rows:
    t = r['mcnemar_majority']
    lines.append(
      f'| {name} | {r["n"]} | {pct(r["study"]["expected"])} / {pct(r["study"]["majority"])} '
      f'| {pct(r["rerun"]["expected"])} / {pct(r["rerun"]["majority"])} '
      f'| {pts(r["majority_rerun_minus_study"])} | {pts(r["expected_rerun_minus_study"])} '
      f'| {t["robust_only_rerun"]} / {t["robust_only_study"]} | {t["p_value"]:.2g} |'
    )
  return '\n'.join(lines) + '\n'


def paired(a: np.ndarray, b: np.ndarray) -> dict:
  """Mean of a − b with its paired 95 % interval; a and b per point, on the same points."""
  d = np.asarray(a, float) - np.asarray(b, float)
  se = float(d.std(ddof=1) / math.sqrt(len(d)))
  mean = float(d.mean())
  return {'difference': mean, 'interval': [mean - 1.96 * se, mean + 1.96 * se], 'n': len(d)}


def mcnemar(a: np.ndarray, b: np.ndarray) -> dict:
  """McNemar's exact two-sided test on paired booleans: the discordant counts and the p-value."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
  k, n = min(only_a, only_b), only_a + only_b
  p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
  return {'only_row': only_a, 'only_reference': only_b, 'p_value': p}


def measure_reference(dataset: str, num_test: int) -> str:
  """PGD-AT's published weights under AutoAttack (standard) on the study's images, per point."""
  from jaxrobust.train.weights import load_weights

  config, model, variables, ds = load_weights(os.path.join('results', 'published', dataset, REFERENCE))
  spec = EvalSpec(dataset=dataset, suite='autoattack')
  record = evaluate_test_set(model, variables, ds, spec, seed=config.seed, num_test=num_test, progress=True)
  record['source'] = {'weights': os.path.join('results', 'published', dataset, REFERENCE)}
  return write_result_json(reference_path(dataset), record)


def reference_path(dataset: str, root: str = ROOT) -> str:
  """Where `measure_reference` writes PGD-AT's per-point AutoAttack outcomes."""
  return os.path.join(root, dataset, 'paired', f'{REFERENCE}_autoattack.json')


def reference_outcomes(dataset: str, root: str = ROOT) -> tuple[str, np.ndarray]:
  """PGD-AT's committed per-point AutoAttack outcomes (robust or not) and their label."""
  with open(reference_path(dataset, root)) as f:
    reference = json.load(f)
  return (
    f'{REFERENCE}: AutoAttack standard, {reference["autoattack"]:.3f}',
    np.asarray(reference['per_example']['autoattack'], bool),
  )


def against_reference(wc, ref: np.ndarray, row: str) -> dict:
  """A row's `estimator.worst_case` paired with the reference's per-point outcomes."""
  if len(wc.won) != len(ref):
    raise ValueError(f'{row}: {len(wc.won)} points, but the reference has {len(ref)}')
  return {
    'worst_case_expected': wc.expected,
    'worst_case_majority': wc.majority,
    'reference_autoattack': float(ref.mean()),
    'expected_minus_reference': paired(wc.per_point, ref),
    'majority_minus_reference': paired(wc.won, ref),
    'mcnemar_majority': mcnemar(wc.won, ref),
  }


def compare(dataset: str) -> dict:
  """The paired comparison of every stochastic row with the reference; writes paired.json/md."""
  label, ref = reference_outcomes(dataset)
  out: dict = {'reference': label, 'rows': {}}
  for row in STOCHASTIC_ROWS:
    wc = row_worst_case(os.path.join(ROOT, dataset, 'pieces', row, 'adaptive'))
    out['rows'][row] = against_reference(wc, ref, row)
  write_result_json(os.path.join(ROOT, dataset, 'paired.json'), out, indent=1)
  write_atomic(os.path.join(ROOT, dataset, 'paired.md'), markdown(out))
  return out


def markdown(out: dict) -> str:
  """The paired table."""
  pts = lambda v: f'{100 * v:+.1f}'  # noqa: E731
  lines = [
    f"Each stochastic row against {out['reference']}, on the same images: the row's selected-and-"
    "measured worst case minus PGD-AT's per-point AutoAttack outcome, in points, with the paired "
    "95 % interval; McNemar's exact test on the points where exactly one of the two is robust.",
    '',
    '| row | worst case expected / majority | PGD-AT AutoAttack | expected − PGD-AT | majority − PGD-AT '
    '| robust only in the row / only in PGD-AT | McNemar p |',
    '|---|---|---|---|---|---|---|',
  ]
  for row, r in out['rows'].items():
    e, m, t = r['expected_minus_reference'], r['majority_minus_reference'], r['mcnemar_majority']
    lines.append(
      f'| {row} | {100 * r["worst_case_expected"]:.1f} / {100 * r["worst_case_majority"]:.1f} '
      f'| {100 * r["reference_autoattack"]:.1f} '
      f'| {pts(e["difference"])} [{pts(e["interval"][0])}, {pts(e["interval"][1])}] '
      f'| {pts(m["difference"])} [{pts(m["interval"][0])}, {pts(m["interval"][1])}] '
      f'| {t["only_row"]} / {t["only_reference"]} | {t["p_value"]:.2g} |'
    )
  return '\n'.join(lines) + '\n'


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  if F.measure_reference:
    print('wrote', measure_reference(F.dataset, F.num_test))
  print(markdown(compare(F.dataset)))


def command_line() -> None:
  """`python -m experiments.paired`: the flags below, then the run (experiments/paired/__main__.py)."""
  from absl import app, flags

  flags.DEFINE_string('dataset', 'fashion_mnist', "the converged study's dataset")
  flags.DEFINE_bool('measure_reference', False, "first run PGD-AT's AutoAttack per point (minutes)")
  flags.DEFINE_integer('num_test', 1000, "the first test images (the converged study's)", lower_bound=1)
  app.run(main)
