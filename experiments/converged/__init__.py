"""Is stochastic LWTA robust? Converged models under the adaptive protocol, in one command.

  python -m experiments.converged                       # the four rows, 1000 test images, EOT over 20 draws
  python -m experiments.converged --rows=lwta --num_test=1000 --eot=20 --convergence_n=100

Each row is trained with its full Fashion-MNIST config (10 epochs, seed 0; PNI with its
reference recipe), the same as

  python -m experiments.train --config=experiments/configs/<row>.py:fashion_mnist --workdir=runs/converged/fashion_mnist/<row>

and resumes from its checkpoints when interrupted; a row whose weights are published
(results/published/<dataset>/<row>, `python -m experiments.publish`) is evaluated from them
instead, so that every machine attacks the same bits. Stochastic rows (LWTA, PNI, the mixed row with
noise injection) are then evaluated with the adaptive suite (`jaxrobust.evaluation.adaptive`:
single-draw PGD / APGD, AutoAttack's standard version on one draw, AA-rand, EOT-PGD, EOT-Square,
transfer from each deterministic surrogate, N-draw prediction, the worst case with its interval)
and with the EOT convergence test on the first `convergence_n` images (accuracy against EOT draws
and iterations; converged when doubling both moves neither it nor the row's per-point worst
case on those images by half a point or more). The
deterministic PGD-AT row gets AutoAttack's standard version. Writes
results/converged/<dataset>/{rows/<row>.json, converged.md, figures/<row>_convergence.png}
(converged.md holds every row evaluated so far, not only this command's); rows already evaluated
are reused (--force redoes the evaluation). The adaptive suite and the
convergence test take hours per row on a CPU, so each finished piece (one attack on one batch,
one point of a curve) is kept in results/converged/<dataset>/pieces/<row>/ (per-point results,
small, committed with the model's digest: a later run that retrains the same bits resumes from
them, one that trains other bits is refused by name), and an interrupted evaluation resumes.
Once the row is trained, the same command started on a second core (or on a machine sharing the
directory on a file system that honours flock) splits the remaining pieces with the first: each
piece is computed once, under a lock. `--agreement --previous=<study>` pairs a rerun's pieces
(under another lock, key schedule or machine) with the study's, attack by attack and for the worst
case, point by point (`agreement`).
"""

from __future__ import annotations

import json
import math
import os
import time

import numpy as np

from jaxrobust.configs.defenses import DEFENSES
from jaxrobust.evaluation.accuracy import as_unit_float
from experiments import figures, paired
from experiments import rows as study_rows
from experiments.rows import TrainedRow
from jaxrobust.evaluation import STANDARD_BUDGETS, EvalSpec, evaluate_model, scaled
from jaxrobust.evaluation.adaptive import eot_convergence
from jaxrobust.evaluation.cache import digest
from jaxrobust.evaluation.estimator import wilson_interval
from jaxrobust.files import write_atomic
from jaxrobust.provenance import write_result_json
from jaxrobust.machine import cpu_model
from jaxrobust.models import make_logits_fn, model_traits
from jaxrobust import keys

ROWS = ('pgd_at', 'lwta', 'noise_injection', 'smoothing_pgd_fgsm_cw_pni')
# The EOT attacks' gradient chunk per row, chosen by `python -m benchmarks.eot --chunks=0,1,3,6,12`
# (results/benchmarks/eot_chunks.jsonl): chunks helped LWTA's EOT APGD and slowed PNI's.
EOT_MICROBATCH = {'lwta': 6}
# EOT-Square keeps its draws over the whole batch: chunks helped LWTA and slowed PNI (`python -m
# benchmarks.adaptive_budget --square_microbatch=5`, results/benchmarks/adaptive_budget.jsonl), and
# the LWTA row's cache was begun without them (a setting must not change under a cache).
OUT = os.path.join('results', 'converged')
# Each row's published weights (`python -m experiments.publish`): when there, evaluated as they are.
PUBLISHED = os.path.join('results', 'published')


def _draw_convergence(conv: dict, out_dir: str, dataset: str, row: str):
  """The row's convergence figure, from its record's `convergence` entry (one place names it)."""
  figures.plot_convergence(
    os.path.join(out_dir, dataset, 'figures', f'{row}_convergence.png'),
    conv,
    title=f'{DEFENSES[row].title}, {conv["n"]} images',
  )


def converged_row(
  row: str,
  dataset: str = 'fashion_mnist',
  *,
  num_test: int = 1000,
  eot_samples: int = 20,
  convergence_n: int = 100,
  steps_scale: float = 1.0,
  runs_dir: str = os.path.join('runs', 'converged'),
  published_dir: str = PUBLISHED,
  out_dir: str = OUT,
  seed: int = 0,
  force: bool = False,
  progress: bool = True,
) -> dict:
  """Trains (or resumes) and evaluates one row, or evaluates its published weights
  (published_dir/<dataset>/<row>) when they exist; caches its record in out_dir/<dataset>/rows/.

  Raises:
    ValueError: for num_test or eot_samples below 1, convergence_n below 0 or a steps_scale that
      is not a positive number (before anything is trained or attacked).
  """
  for name, v, low in (
    ('num_test', num_test, 1),
    ('eot_samples', eot_samples, 1),
    ('convergence_n', convergence_n, 0),
  ):
    # A negative count would slice the test set from its end ([:-1]) instead of failing.
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
      raise ValueError(f'converged: {name} must be an integer >= {low}, got {v!r}')
  if not (isinstance(steps_scale, (int, float)) and math.isfinite(steps_scale) and steps_scale > 0):
    raise ValueError(f'converged: steps_scale must be a finite number > 0, got {steps_scale!r}')
  pieces = os.path.join(out_dir, dataset, 'pieces', row)

  def redraw(record: dict) -> None:
    if 'convergence' in record:  # the figure is drawn from the record: redraw it as the code says
      _draw_convergence(record['convergence'], out_dir, dataset, row)

  def evaluate(t: TrainedRow) -> dict:
    model, variables, ds = t.model, t.variables, t.dataset
    n = min(num_test, len(ds.test_images))
    stochastic = model_traits(model).stochastic
    key = keys.evaluation_key(seed)
    c = min(convergence_n, n) if stochastic else 0
    # What a regenerated checkpoint must match for the stored pieces to be its own.
    model_id = digest(variables)

    def convergence(worst_case_scores=None) -> dict:
      """EOT-PGD against draws and iterations on the first c images, its points cached; with the
      suite's candidates' scores on those images, also whether doubling the budget moves the
      worst case."""
      s = lambda k: scaled(k, steps_scale)  # noqa: E731
      return eot_convergence(
        make_logits_fn(model, variables),
        as_unit_float(ds.test_images[:c]),
        np.asarray(ds.test_labels[:c]),
        keys.eval_keys(key).study,
        epsilon=STANDARD_BUDGETS[dataset]['linf'],
        # The suite's own EOT budget is the fixed point of the draws curve, which runs up to twice it.
        draws=tuple(d for d in (1, 2, 4, 8, 16, 32) if d <= 2 * eot_samples),
        fixed_draws=eot_samples,
        steps=tuple(s(k) for k in (10, 20, 50, 100, 200)),
        fixed_steps=s(100),
        cache_dir=os.path.join(pieces, 'convergence'),
        model_id=model_id,
        worst_case_scores=worst_case_scores,
        selection_draws=spec.selection_draws,
        microbatch=EOT_MICROBATCH.get(row),
      )

    t0 = time.time()
    spec = EvalSpec(
      dataset=dataset,
      suite='adaptive' if stochastic else 'autoattack',
      eot_samples=eot_samples,
      steps_scale=steps_scale,
      eot_microbatch=EOT_MICROBATCH.get(row) if stochastic else None,
    )
    result = evaluate_model(
      model,
      variables,
      ds.test_images[:n],
      ds.test_labels[:n],
      spec,
      key=key,
      progress=progress,
      # Hours on a CPU: every finished piece is kept, and a rerun (or a second process) resumes.
      cache_dir=os.path.join(pieces, 'adaptive') if stochastic else None,
      # Every candidate (MBs per row: kept with the runs, not committed), to choose again on other
      # draws without attacking again.
      candidates_dir=os.path.join(runs_dir, dataset, row, 'candidates') if stochastic else None,
      # A second process left with only the other's last pieces computes the convergence points.
      while_waiting=convergence if c else None,
    ).to_record()
    per_example = result.pop('per_example', None)
    record = {
      'dataset': dataset,
      'epochs': t.config.train.num_epochs,
      'train_steps': t.steps,
      'test_accuracy_full': t.test_accuracy,
      'model_digest': model_id,
      'n_eval': n,
      # The pieces' own times: a resumed evaluation's wall time covers only its last part.
      'eval_s': sum(result['seconds'].values()) if 'seconds' in result else time.time() - t0,
      'result': result,
      'cpu': cpu_model(),
    }
    if c:
      # the headline is the per-point worst case: doubling must not move it either
      scores = {k: {f: v[:c] for f, v in d.items()} for k, d in per_example['scores'].items()}
      conv = convergence(scores)
      conv['n'] = c
      record['convergence'] = conv
      _draw_convergence(conv, out_dir, dataset, row)
    return record

  return study_rows.study_row(
    row,
    dataset,
    out_dir=out_dir,
    runs_dir=runs_dir,
    published=os.path.join(published_dir, dataset, row),
    evaluate=evaluate,
    seed=seed,
    force=force,
    progress=progress,
    on_cached=redraw,
  )


# Published figures for the same question, on CIFAR-10 (WRN-34 LWTA): context, not comparable in
# dataset or scale. The study's Table 1 gives single-draw numbers; the LWTA authors report
# AutoAttack (Panousis et al. 2022) between 74.5 and 79.5 %.
CONTEXT = (
  'For context, on CIFAR-10 with a stochastic LWTA WRN-34 (another dataset and scale): the study '
  'reports natural 67.9 %, PGD 36.2 % and CW 68.8 % (single-draw attacks), and the LWTA authors '
  '(Panousis et al. 2022) report 74.5–79.5 % under AutoAttack.'
)


def _pct(v) -> str:
  return '–' if v is None else f'{100 * v:.1f}'


def flag_summary(flags: dict) -> str:
  """AutoAttack's sanity flags in words, for the table beside the worst case: the gradient-masking
  flag, outputs that look like probabilities, and the largest share of exactly-zero gradients. A
  stochastic row's 'randomized' flag is its design, not a warning, and is left out.

  Args:
    flags: {name: bool or fraction}, names possibly prefixed by the suite's attack
      ('aa_rand_zero_gradients').
  """
  said = []
  if flags.get('gradient_masking'):
    said.append('**gradient masking** (EOT-Square below every white-box attack)')
  for k in sorted(flags):
    if k.endswith('_gradient_masking') and flags[k]:
      version = k.removesuffix('_gradient_masking')
      said.append(
        f"**AutoAttack {version}'s masking flag** (its Square broke points its gradient attacks left)"
      )
  if any(v for k, v in flags.items() if k.endswith('probabilities')):
    said.append('outputs look like probabilities')
  zero = max((v for k, v in flags.items() if k.endswith('zero_gradients')), default=0.0)
  if zero > 0:
    said.append(f'{100 * zero:.1f} % zero gradients')
  return '; '.join(said) or 'none'


def table(records) -> str:
  """One line per row: the columns of the adaptive protocol (majority vote over the N draws)."""
  head = [
    'defense',
    'clean',
    'PGD, one draw',
    'AA standard, one draw',
    'AA-rand',
    'EOT-PGD',
    'EOT-Square',
    'transfer',
    'mean / majority / all-N under EOT-PGD',
    'worst case, selected and measured: expected / majority [95 % intervals]',
    'sanity flags',
    'converged (doubling EOT-PGD draws and steps)',
  ]
  lines = ['| ' + ' | '.join(head) + ' |', '|---' * len(head) + '|']
  for r in records:
    res = r['result']
    if res.get('suite') == 'adaptive':
      a = res['attacks']
      transfer = ', '.join(
        f'{k.removeprefix("transfer_")} {_pct(v["majority"])}'
        for k, v in a.items()
        if k.startswith('transfer_')
      )
      e = a['eot_pgd']
      conv = r.get('convergence')
      cells = [
        _pct(res['clean']['majority']),
        _pct(a['pgd']['single_draw']),
        _pct(a['aa_standard']['single_draw']),
        _pct(a['aa_rand']['majority']),
        _pct(e['majority']),
        _pct(a['eot_square']['majority']),
        transfer,
        f'{_pct(e["mean"])} / {_pct(e["majority"])} / {_pct(e["all"])}',
        _worst_cell(res, r['n_eval']),
        flag_summary(res['flags']),
        '–' if conv is None else _verdict(conv),
      ]
    else:
      cells = (
        [_pct(res['clean'])]
        + ['–', _pct(res['autoattack'])]
        + ['–'] * 5
        + [_worst_cell(res, r['n_eval']), flag_summary(res['autoattack_report']['flags']), '–']
      )
    lines.append(f'| {r["title"]} | ' + ' | '.join(cells) + ' |')
  per_row = ''.join('\n' + row_table(r) for r in records if r['result'].get('suite') == 'adaptive')
  return '\n'.join(lines) + '\n\n' + _times(records) + CONTEXT + '\n' + per_row


def _worst_cell(res: dict, n: int) -> str:
  """The worst case as expected accuracy and majority vote, each with its 95 % interval. On a
  deterministic model every draw is the same, so selection and measurement coincide and both are
  AutoAttack's accuracy (Wilson interval); a record of the AND of votes, from before the estimator,
  is labelled as such."""
  if res.get('suite') != 'adaptive':
    lo, hi = wilson_interval(round(res['autoattack'] * n), n)
    one = f'**{_pct(res["autoattack"])}** [{_pct(lo)}, {_pct(hi)}]'
    return f'{one} / {one}'
  lo, hi = res['worst_case_interval']
  if 'worst_case_expected' not in res:
    return f'AND of votes (biased low): {_pct(res["worst_case"])} [{_pct(lo)}, {_pct(hi)}]'
  elo, ehi = res['worst_case_expected_interval']
  return (
    f'**{_pct(res["worst_case_expected"])}** [{_pct(elo)}, {_pct(ehi)}] / '
    f'**{_pct(res["worst_case"])}** [{_pct(lo)}, {_pct(hi)}]'
  )


def _verdict(conv: dict) -> str:
  """The doubling test in a cell: its verdict and what moved, on how many images."""
  return f'{"yes" if conv["converged"] else "no"} ({figures.describe_convergence(conv)}; n = {conv["n"]})'


# The adaptive suite's attacks in the order of the protocol, with the names a reader knows.
ATTACK_TITLES = {
  'pgd': "PGD-20, one draw (the study's number)",
  'apgd_ce': 'APGD-CE, one draw',
  'apgd_dlr': 'APGD-DLR, one draw',
  'aa_standard': 'AutoAttack standard, one draw',
  'aa_rand': 'AA-rand (EOT-20 APGD-CE + APGD-DLR)',
  'eot_pgd': 'EOT-PGD (20 draws, 100 steps, 2 restarts)',
  'eot_square': 'EOT-Square (20 draws)',
  'transfer_argmax': 'transfer from the argmax-winner surrogate',
  'transfer_mean_field': 'transfer from the mean-field surrogate',
  'transfer_noise_free': 'transfer from the noise-free network',
  'eot_expected_probability': 'PGD on the expected probability (20 draws, 100 steps, 2 restarts)',
  'eot_straight_through': 'EOT-PGD through straight-through winners',
  'transfer_low_temperature': 'transfer from EOT-PGD on low-temperature relaxed winners',
}


def row_table(record: dict) -> str:
  """One stochastic row's table: each attack of the adaptive protocol, its accuracy on one draw
  and, over N draws per adversarial point, the mean, majority-vote and all-N-correct accuracy;
  then the per-point worst case over every attack with its 95 % interval, and the flags."""
  res = record['result']
  n_draws = res['num_draws']
  lines = [
    f'**{record["title"]}** ({record["n_eval"]} test images, {record["epochs"]:g} epochs, clean test '
    f'accuracy {100 * record["test_accuracy_full"]:.2f} %)',
    '',
    f'| attack | one draw | mean of {n_draws} draws | majority of {n_draws} | all {n_draws} correct |',
    '|---|---|---|---|---|',
  ]
  entries = [('clean', res['clean'])] + sorted(
    res['attacks'].items(), key=lambda kv: list(ATTACK_TITLES).index(kv[0]) if kv[0] in ATTACK_TITLES else 99
  )
  for name, a in entries:
    title = 'no attack' if name == 'clean' else ATTACK_TITLES.get(name, name)
    lines.append(
      f'| {title} | ' + ' | '.join(_pct(a[k]) for k in ('single_draw', 'mean', 'majority', 'all')) + ' |'
    )
  lo, hi = res['worst_case_interval']
  if 'worst_case_expected' in res:
    elo, ehi = res['worst_case_expected_interval']
    lines.append(
      f"| **worst case**: each point's worst candidate chosen on {res['selection_draws']} draws, "
      f'measured on {n_draws} fresh ones | | **{_pct(res["worst_case_expected"])}** [{_pct(elo)}, {_pct(ehi)}] '
      f'| **{_pct(res["worst_case"])}** [{_pct(lo)}, {_pct(hi)}] | |'
    )
    lines.append(
      f"| AND of every attack's own majority vote (biased low: independent votes count noise) | | | "
      f'{_pct(res["and_of_majority_votes"])} | |'
    )
  else:
    lines.append(
      f"| **worst case over every attack** (AND of each attack's own majority vote: biased low for a "
      f'stochastic model) | | | **{_pct(res["worst_case"])}** [{_pct(lo)}, {_pct(hi)}] | |'
    )
  lines.append(f'\nSanity flags: {flag_summary(res["flags"])}.')
  return '\n'.join(lines) + '\n'


def _times(records) -> str:
  """Where each adaptive evaluation spent its time: the total and its three largest parts."""
  out = []
  for r in records:
    seconds = r['result'].get('seconds')
    if not seconds:
      continue
    total = sum(seconds.values())
    top = sorted(seconds.items(), key=lambda kv: -kv[1])[:3]
    parts = ', '.join(f'{name} {100 * s / total:.0f} %' for name, s in top)
    out.append(
      f'- {r["title"]}: the adaptive suite took {total / 3600:.2f} h on {r["n_eval"]} images ({parts}), '
      f'on {r.get("cpu", "an unrecorded CPU")}.'
    )
  return '\n'.join(out) + '\n\n' if out else ''


def run(rows=ROWS, dataset: str = 'fashion_mnist', *, out_dir: str = OUT, **kw) -> tuple[list, str]:
  unknown = [r for r in rows if r not in DEFENSES]
  if unknown:
    raise ValueError(f'unknown rows {unknown}; known: {", ".join(DEFENSES)}')
  records = [converged_row(r, dataset, out_dir=out_dir, **kw) for r in rows]
  md = table(records + earlier_rows(rows, dataset, out_dir))
  write_atomic(os.path.join(out_dir, dataset, 'converged.md'), md)
  return records, md


def earlier_rows(rows, dataset: str, out_dir: str) -> list[dict]:
  """The records of rows evaluated by earlier commands and not in `rows`, in ROWS order then by
  name: a command that evaluates one row keeps the others in converged.md."""
  folder = os.path.join(out_dir, dataset, 'rows')
  if not os.path.isdir(folder):
    return []
  names = [f.removesuffix('.json') for f in os.listdir(folder) if f.endswith('.json')]
  rank = lambda r: (ROWS.index(r) if r in ROWS else len(ROWS), r)  # noqa: E731
  out = []
  for r in sorted((r for r in names if r not in rows and r in DEFENSES), key=rank):
    with open(os.path.join(folder, f'{r}.json')) as f:
      out.append(json.load(f))
  return out


def agreement(row: str, dataset: str, *, rerun_dir: str, study_dir: str = OUT) -> dict:
  """A rerun of a stochastic row's adaptive suite (`rerun_dir`: under another lock or key schedule)
  against the study's committed pieces (`study_dir`: its adaptive pieces and the attacks added to
  them since, `experiments.added_attacks`), point by point on the batches both hold: each attack
  alone and the worst case over the attacks both hold (`paired.agreement`). Writes
  <rerun_dir>/<dataset>/agreement/<row>.json and .md; runs no model.

  Raises:
    ValueError: when no attack has a batch in both.
  """
  pieces = lambda root: os.path.join(root, dataset, 'pieces', row)  # noqa: E731
  study = {
    **paired.adaptive_pieces(os.path.join(pieces(study_dir), 'adaptive')),
    **paired.added_pieces(os.path.join(pieces(study_dir), 'added')),
  }
  rerun = paired.adaptive_pieces(os.path.join(pieces(rerun_dir), 'adaptive'))
  try:
    pairs = paired.agreement(rerun, study, worst=True)
  except ValueError:
    raise ValueError(
      f'{pieces(rerun_dir)}: no adaptive piece there is of a batch and attack that {pieces(study_dir)} holds'
    ) from None
  out = {'row': row, 'rerun': rerun_dir, 'study': study_dir, **pairs}
  base = os.path.join(rerun_dir, dataset, 'agreement', row)
  write_result_json(base + '.json', out, indent=1)
  wc = out['worst_case']
  write_atomic(
    base + '.md',
    paired.agreement_markdown(
      out,
      f"{row}: the converged study's adaptive suite rerun ({rerun_dir}) against the study's committed "
      f'pieces ({study_dir}, with the attacks added to them), each attack alone and the worst case, on '
      f'the {wc["n"]} images of the batches both runs finished.',
    ),
  )
  return out


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  if F.agreement:
    for row in F.rows.split(','):
      agreement(row, F.dataset, rerun_dir=F.out, study_dir=F.previous)
      with open(os.path.join(F.out, F.dataset, 'agreement', f'{row}.md')) as f:
        print(f.read())
    return
  _, md = run(
    F.rows.split(','),
    F.dataset,
    out_dir=F.out,
    num_test=F.num_test,
    eot_samples=F.eot,
    convergence_n=F.convergence_n,
    runs_dir=F.runs,
    force=F.force,
  )
  print(md)


def command_line() -> None:
  """`python -m experiments.converged`: the flags below, then the run (experiments/converged/__main__.py)."""
  from absl import app, flags

  flags.DEFINE_string('rows', ','.join(ROWS), 'rows to train and evaluate')
  flags.DEFINE_string('dataset', 'fashion_mnist', 'dataset')
  flags.DEFINE_integer('num_test', 1000, 'test images for the adaptive suite', lower_bound=1)
  flags.DEFINE_integer('eot', 20, 'draws of every EOT attack', lower_bound=1)
  flags.DEFINE_integer(
    'convergence_n', 100, 'test images of the EOT convergence test (0 = skip)', lower_bound=0
  )
  flags.DEFINE_string('out', OUT, 'results directory')
  flags.DEFINE_string('runs', os.path.join('runs', 'converged'), 'training work directories')
  flags.DEFINE_bool('force', False, 'redo the evaluation of rows whose results exist')
  flags.DEFINE_bool(
    'agreement',
    False,
    "compare the rows' adaptive pieces under --out with the study's under --previous, point by point "
    '(no model is run); writes <out>/<dataset>/agreement/<row>.json and .md',
  )
  flags.DEFINE_string('previous', OUT, "with --agreement: the study's results directory")
  app.run(main)
