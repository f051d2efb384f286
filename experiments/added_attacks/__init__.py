"""A converged stochastic row with the adaptive suite's attacks on its sampling added: the
previous suite's committed candidates and the added attacks' candidates, the worst case chosen
and measured again over both, paired with the previous worst case point by point.

  python -m experiments.added_attacks --row=lwta

The added attacks are the suite's own (`suites.sampling_attacks` for the row's traits, at the
converged study's budget), run on the row's published weights (whose digest must be the row's)
on the row's test images, each batch's candidates scored on the estimator's selection and
measurement draws (`keys.eval_keys(...).added`). Their pieces are kept under
results/converged/<dataset>/pieces/<row>/added/ (hours on a CPU: an interrupted run resumes, and
two processes share the work). Writes results/converged/<dataset>/added/<row>.json and .md: the
worst case before and after (expected and majority of the measurement draws), the paired
difference with its 95 % interval, McNemar's exact test on the points whose verdict changed, and
each added attack alone.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from experiments.converged import EOT_MICROBATCH
from experiments.paired import (
  added_pieces,
  against_reference,
  mcnemar,
  paired,
  reference_outcomes,
  reference_path,
  row_scores,
)
from experiments.paired import agreement as paired_agreement
from experiments.paired import agreement_markdown as paired_agreement_markdown
from jaxrobust import keys
from jaxrobust.evaluation import EvalSpec, build_evaluation
from jaxrobust.evaluation.accuracy import as_unit_float, join_batches
from jaxrobust.evaluation.adaptive import sampling_attack
from jaxrobust.evaluation.cache import PieceCache, digest, run_identity
from jaxrobust.evaluation.estimator import (
  candidate_scores,
  draw_keys,
  scores_as_lists,
  worst_case,
)
from jaxrobust.files import write_atomic
from jaxrobust.models import make_logits_fn, model_traits
from jaxrobust.provenance import write_result_json
from jaxrobust.train.weights import load_model

ROOT = os.path.join('results', 'converged')


def added_scores(
  model,
  variables,
  images,
  labels,
  spec: EvalSpec,
  *,
  key,
  cache_dir: str | None,
  only: Sequence[str] | None = None,
  progress: bool = True,
):
  """{attack: `candidate_scores` over the points} of each attack of `build_evaluation(spec,
  traits).sampling` (or of those named in `only`), batch by batch (`spec.batch_size`), with `key`
  the evaluation's `added` part; and {attack: seconds} summed over batches. Each attack keeps its
  pieces in a cache of its own (`cache_dir/<attack>`), so that another temperature of one attack
  leaves the others' pieces valid.

  Raises:
    ValueError: for a model not declared stochastic, or a name in `only` that is not one of the
      model's attacks on its sampling.
  """
  plan = build_evaluation(spec, model_traits(model))
  if not plan.sampling:
    raise ValueError(f'{type(model).__name__} is not declared stochastic: no attack on its sampling to add')
  unknown = sorted(set(only or ()) - set(plan.sampling))
  if unknown:
    raise ValueError(f'added_scores: {unknown} are not attacks of this model; it has {list(plan.sampling)}')
  f = make_logits_fn(model, variables)
  index = {name: j for j, name in enumerate(plan.sampling)}  # each attack's key, whatever `only` holds
  names = [n for n in plan.sampling if only is None or n in only]
  identity = dict(
    run_identity(variables, images, labels, key),
    batch_size=spec.batch_size,
    estimator=dict(selection_draws=spec.selection_draws, measurement_draws=spec.measurement_draws),
  )
  starts = range(0, len(images), spec.batch_size)
  bar = tqdm(total=len(starts) * len(names), disable=not progress, desc='added attacks')

  def piece(i: int, name: str, attack) -> dict:
    t = time.perf_counter()
    x = as_unit_float(images[i : i + spec.batch_size])
    y = jnp.asarray(labels[i : i + spec.batch_size])
    kb = keys.batch_keys(key, i)
    x_adv = attack(f, keys.attack_keys(kb, index[name])[0], x, y)
    scores = candidate_scores(
      f, x_adv, y, draw_keys(kb.estimator, spec.selection_draws, spec.measurement_draws)
    )
    bar.update()
    return {'estimator': scores_as_lists(scores), 'seconds': time.perf_counter() - t}

  scores, seconds = {}, {}
  for name in names:
    sampling = plan.sampling[name]
    settings = dict(identity, attack=name, sampling=json.loads(json.dumps(sampling._asdict())))
    cache = PieceCache(None if cache_dir is None else os.path.join(cache_dir, name), settings)
    attack = sampling_attack(model, variables, sampling)
    computes = {f'batch{i:07d}': functools.partial(piece, i, name, attack) for i in starts}
    pieces = [cache.get_all(computes)[f'batch{i:07d}'] for i in starts]
    scores[name] = join_batches([p['estimator'] for p in pieces])
    seconds[name] = sum(p['seconds'] for p in pieces)
  return scores, seconds


def compare(previous: dict, added: dict, reference: tuple[str, np.ndarray] | None = None) -> dict:
  """The worst case over the previous candidates, over both, and the paired difference; with a
  `reference` (label, per-point robust booleans on the same points), both worst cases paired with
  it too (`paired.against_reference`)."""
  before, after = worst_case(previous), worst_case({**previous, **added})
  t = mcnemar(before.won, after.won)
  alone = {}
  for name, s in added.items():
    robust = np.asarray(s['measure_majority'], bool)
    alone[name] = {
      'expected': float(np.mean(s['measure_mean'])),
      'majority': float(robust.mean()),
      'broken_only_by_it': int((before.won & ~robust).sum()),
    }
  out = {
    'before': {
      'expected': before.expected,
      'expected_interval': list(before.expected_interval),
      'majority': before.majority,
      'majority_interval': list(before.majority_interval),
    },
    'after': {
      'expected': after.expected,
      'expected_interval': list(after.expected_interval),
      'majority': after.majority,
      'majority_interval': list(after.majority_interval),
    },
    'expected_after_minus_before': paired(after.per_point, before.per_point),
    'majority_after_minus_before': paired(after.won, before.won),
    'mcnemar_majority': {
      'robust_only_before': t['only_row'],
      'robust_only_after': t['only_reference'],
      'p_value': t['p_value'],
    },
    'chosen_after': {k: int((after.chosen == i).sum()) for i, k in enumerate(after.names)},
    'added_alone': alone,
    'n': len(before.won),
  }
  if reference is not None:
    label, ref = reference
    out['reference'] = {
      'label': label,
      'before': against_reference(before, ref, 'before'),
      'after': against_reference(after, ref, 'after'),
    }
  return out


def markdown(row: str, out: dict) -> str:
  pct = lambda v: f'{100 * v:.1f}'  # noqa: E731
  pts = lambda v: f'{100 * v:+.1f}'  # noqa: E731
  b, a = out['before'], out['after']
  e, m, t = out['expected_after_minus_before'], out['majority_after_minus_before'], out['mcnemar_majority']
  lines = [
    f"{row}: the worst case over the previous suite's candidates, and over them and the attacks on the "
    f'sampling added to the suite, on the same {out["n"]} images (selected on the selection draws, '
    "measured on fresh ones). Differences in points with the paired 95 % interval; McNemar's exact "
    'test on the points whose majority verdict changed.',
    '',
    '| worst case | expected | majority of draws |',
    '|---|---|---|',
    f'| previous suite | {pct(b["expected"])} [{pct(b["expected_interval"][0])}, {pct(b["expected_interval"][1])}] '
    f'| {pct(b["majority"])} [{pct(b["majority_interval"][0])}, {pct(b["majority_interval"][1])}] |',
    f'| with the added attacks | {pct(a["expected"])} [{pct(a["expected_interval"][0])}, {pct(a["expected_interval"][1])}] '
    f'| {pct(a["majority"])} [{pct(a["majority_interval"][0])}, {pct(a["majority_interval"][1])}] |',
    f'| difference | {pts(e["difference"])} [{pts(e["interval"][0])}, {pts(e["interval"][1])}] '
    f'| {pts(m["difference"])} [{pts(m["interval"][0])}, {pts(m["interval"][1])}] |',
    '',
    f'Robust only before / only after (majority): {t["robust_only_before"]} / {t["robust_only_after"]}, '
    f'McNemar p = {t["p_value"]:.2g}.',
    '',
    '| added attack | expected | majority | points it broke that the previous worst case left standing |',
    '|---|---|---|---|',
  ]
  for name, r in out['added_alone'].items():
    lines.append(f'| {name} | {pct(r["expected"])} | {pct(r["majority"])} | {r["broken_only_by_it"]} |')
  if 'reference' in out:
    ref = out['reference']
    lines += [
      '',
      f"Against {ref['label']}, on the same images (the worst case minus the reference's per-point "
      'outcome, in points, paired 95 % interval; McNemar on the points where exactly one is robust):',
      '',
      '| worst case | expected − reference | majority − reference | robust only in the row / only in the reference | McNemar p |',
      '|---|---|---|---|---|',
    ]
    for label, r in (('previous suite', ref['before']), ('with the added attacks', ref['after'])):
      e, m, t = r['expected_minus_reference'], r['majority_minus_reference'], r['mcnemar_majority']
      lines.append(
        f'| {label} | {pts(e["difference"])} [{pts(e["interval"][0])}, {pts(e["interval"][1])}] '
        f'| {pts(m["difference"])} [{pts(m["interval"][0])}, {pts(m["interval"][1])}] '
        f'| {t["only_row"]} / {t["only_reference"]} | {t["p_value"]:.2g} |'
      )
  return '\n'.join(lines) + '\n'


def run(
  row: str,
  *,
  dataset: str,
  weights: str,
  out_dir: str = ROOT,
  previous_dir: str | None = None,
  only: Sequence[str] | None = None,
  progress: bool = True,
) -> dict | None:
  """The row's added attacks (pieces stored as each finishes) and, unless `only` names some of
  them, the comparison, written as JSON and markdown; returns it (None with `only`).

  The row's record, the previous suite's pieces and PGD-AT's per-point reference are read from
  `previous_dir` (default `out_dir`: the study's own folder); the added pieces and the comparison
  go to `out_dir`, so a rerun can leave the committed study untouched.
  """
  previous_dir = previous_dir or out_dir
  with open(os.path.join(previous_dir, dataset, 'rows', f'{row}.json')) as fh:
    record = json.load(fh)
  config, model, variables, ds = load_model(weights)
  if digest(variables) != record['model_digest']:
    raise ValueError(
      f'{weights}: its variables are not the model of {row} (digest {digest(variables)[:12]} vs {record["model_digest"][:12]})'
    )
  n = record['n_eval']
  spec = EvalSpec(
    dataset=dataset,
    suite='adaptive',
    eot_samples=record['result']['eot_samples'],
    eot_microbatch=EOT_MICROBATCH.get(row),
  )
  key = keys.eval_keys(keys.evaluation_key(config.seed)).added
  t0 = time.time()
  added, seconds = added_scores(
    model,
    variables,
    ds.test_images[:n],
    np.asarray(ds.test_labels[:n]),
    spec,
    key=key,
    cache_dir=os.path.join(out_dir, dataset, 'pieces', row, 'added'),
    only=only,
    progress=progress,
  )
  if only is not None:  # some of the attacks only: their pieces are stored, nothing is compared
    return None
  has_reference = os.path.exists(reference_path(dataset, previous_dir))
  reference = reference_outcomes(dataset, previous_dir) if has_reference else None
  out = compare(row_scores(os.path.join(previous_dir, dataset, 'pieces', row, 'adaptive')), added, reference)
  out.update(row=row, weights=weights, previous=previous_dir, seconds=seconds, wall_s=time.time() - t0)
  write_result_json(os.path.join(out_dir, dataset, 'added', f'{row}.json'), out, indent=1)
  write_atomic(os.path.join(out_dir, dataset, 'added', f'{row}.md'), markdown(row, out))
  return out


def agreement(row: str, *, dataset: str, rerun_dir: str, study_dir: str = ROOT) -> dict:
  """How far a rerun of the row's added attacks (`rerun_dir`) lands from the study's committed ones
  (`study_dir`), for every attack on the batches that both hold (a rerun stopped early is compared
  on what it finished, and says so): `paired.agreement` of their pieces, each attack alone.

  Raises:
    ValueError: when no attack has a batch in both folders.
  """
  folder = lambda root: os.path.join(root, dataset, 'pieces', row, 'added')  # noqa: E731
  with open(os.path.join(study_dir, dataset, 'rows', f'{row}.json')) as fh:
    n_row = json.load(fh)['n_eval']
  try:
    pairs = paired_agreement(added_pieces(folder(rerun_dir)), added_pieces(folder(study_dir)), worst=False)
  except ValueError:
    raise ValueError(
      f'{folder(rerun_dir)}: no added attack has a batch there and in {folder(study_dir)}'
    ) from None
  return {'row': row, 'rerun': rerun_dir, 'study': study_dir, 'n_row': n_row, **pairs}


def agreement_markdown(out: dict) -> str:
  return paired_agreement_markdown(
    out,
    f"{out['row']}: the added attacks rerun ({out['rerun']}) against the study's ({out['study']}), each "
    f"alone on the images both runs finished (of the row's {out['n_row']}).",
  )


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  if F.agreement:
    out = agreement(F.row, dataset=F.dataset, rerun_dir=F.out, study_dir=F.previous or ROOT)
    base, text = os.path.join(F.out, F.dataset, 'added', f'{F.row}_agreement'), agreement_markdown(out)
    write_result_json(base + '.json', out, indent=1)
    write_atomic(base + '.md', text)
    print(text)
    return
  weights = F.weights or os.path.join('results', 'published', F.dataset, F.row)
  only = F.attacks.split(',') if F.attacks else None
  out = run(
    F.row, dataset=F.dataset, weights=weights, out_dir=F.out, previous_dir=F.previous or None, only=only
  )
  print('pieces stored; run without --attacks to compare' if out is None else markdown(F.row, out))


def command_line() -> None:
  """`python -m experiments.added_attacks`: the flags below, then the run (experiments/added_attacks/__main__.py)."""
  from absl import app, flags

  flags.DEFINE_string('row', 'lwta', 'a stochastic row of the converged study')
  flags.DEFINE_string('dataset', 'fashion_mnist', "the converged study's dataset")
  flags.DEFINE_string('weights', '', 'its published weights (default results/published/<dataset>/<row>)')
  flags.DEFINE_string('out', ROOT, 'where the added pieces and the comparison go')
  flags.DEFINE_string(
    'previous', '', "the converged study's results directory (its rows and adaptive pieces; default --out)"
  )
  flags.DEFINE_bool(
    'agreement',
    False,
    "compare the added pieces under --out with the study's under --previous (no attack is run); "
    'writes <out>/<dataset>/added/<row>_agreement.json and .md',
  )
  flags.DEFINE_string(
    'attacks', '', 'only these added attacks, comma-separated (another process can take the rest)'
  )
  app.run(main)
