"""The adaptive evaluation of a stochastic defense, as one suite: single-draw attacks (the kind of
number randomised defenses report, an upper bound: PGD, APGD-CE, APGD-DLR and AutoAttack's
standard version), EOT attacks (AA-rand, EOT-PGD), a
gradient-free EOT attack (Square on the margin averaged over draws), transfer from deterministic
surrogates of the same weights, attacks on what the model samples (`suites.sampling_attacks`: the
expected-probability loss; for LWTA straight-through winners and a low-temperature relaxation),
and every adversarial point classified with N fresh draws (mean,
majority-vote and all-N accuracy). The headline is the per-point worst case over all attacks,
with its 95 % interval.

References:
  Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of Security", ICML
  Athalye et al. 2018, "Synthesizing Robust Adversarial Examples" (EOT), arXiv:1707.07397
  Tramèr, Carlini, Brendel & Madry 2020, "On Adaptive Attacks to Adversarial Example Defenses",
  NeurIPS
  Croce & Hein 2020 (AutoAttack, its rand version), arXiv:2003.01690
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxrobust import attacks as A
from jaxrobust.counts import is_count
from jaxrobust.evaluation.accuracy import as_unit_float
from jaxrobust.evaluation.cache import PieceCache, digest, run_identity
from jaxrobust.files import write_atomic
from jaxrobust.evaluation.estimator import (
  SCORE_FIELDS,
  candidate_scores,
  draw_keys,
  plurality,
  refuse_non_finite,
  scores_as_lists,
  worst_case,
)
from jaxrobust.evaluation.results import AdaptiveResult
from jaxrobust.evaluation.spec import AdaptivePlan
from jaxrobust.evaluation.suites import SamplingAttack, eot_pgd_spec
from jaxrobust.models import make_logits_fn, model_traits, with_lwta_mode
from jaxrobust import keys


@functools.partial(jax.jit, static_argnames=('num_draws',))
def _draw_predictions(logits_fn, x, key, num_draws: int):
  keys = jax.random.split(key, num_draws)
  logits = jax.vmap(lambda k: logits_fn(x, k))(keys)  # (N, B, K)
  finite = jnp.all(jnp.isfinite(logits), -1)
  return jnp.where(finite, jnp.argmax(logits, -1), -1), logits.shape[-1]


def prediction_over_draws(logits_fn, x, y, key, num_draws: int = 10) -> dict[str, np.ndarray]:
  """Each example classified with `num_draws` fresh draws of the model.

  Returns per-example arrays:
    'mean': the fraction of draws that are right;
    'majority': the true class gets strictly more votes than any other class;
    'all': every draw is right.
  Always all ≤ majority and all ≤ mean ≤ 1.

  Raises:
    ValueError: for num_draws < 1 (no draw decides nothing) or an empty batch.
    NonFiniteLogitsError: when any draw's logits are NaN or infinite.
  """
  if not is_count(num_draws, 1):
    raise ValueError(f'prediction_over_draws: num_draws must be an integer >= 1, got {num_draws!r}')
  if len(x) == 0:
    raise ValueError('prediction_over_draws: x is an empty batch')
  pred, _ = _draw_predictions(A.as_pytree_fn(logits_fn), as_unit_float(x), key, num_draws)
  pred, y = np.asarray(pred), np.asarray(y)
  refuse_non_finite(pred, 'prediction_over_draws')
  right = pred == y[None]
  return {'mean': right.mean(0), 'majority': plurality(pred, y), 'all': right.all(0)}


def surrogates(model) -> dict[str, object]:
  """Deterministic versions of a stochastic model with the same variables: 'argmax' (LWTA winners
  by argmax; for PNI the noise-free network), and for LWTA 'mean_field' (each unit weighted by
  its probability of winning, no sampling)."""
  # Every model has the `deterministic` switch; a deterministic model's noise-free surrogate is
  # itself, so every row of a comparison gets the same transfer columns.
  traits = model_traits(model)
  out = {'argmax' if traits.lwta else 'noise_free': model.clone(deterministic=True)}
  if traits.lwta:
    out['mean_field'] = with_lwta_mode(model, 'mean')
  return out


def sampling_attack(model, variables, sampling: SamplingAttack) -> Callable:
  """`attack(logits_fn, key, x, y)` of a `SamplingAttack`: its spec run on the version of `model`
  it names (same variables), ignoring the `logits_fn` it is given; the suite classifies the
  points with the model itself."""
  version = model
  if sampling.lwta_mode is not None:
    version = with_lwta_mode(
      model, sampling.lwta_mode, temperature=sampling.temperature, eval_temperature=sampling.eval_temperature
    )
  g = make_logits_fn(version, variables)
  if sampling.mean_probability is not None:
    g = A.mean_probability(g, sampling.mean_probability)
  attack = A.build_attack(sampling.attack)
  return lambda _f, k, x, y: attack(g, k, x, y)


def evaluate_adaptive(
  model,
  variables,
  images,
  labels,
  plan: AdaptivePlan,
  *,
  key,
  progress: bool = False,
  extra_attacks: dict[str, Callable] | None = None,
  cache_dir: str | None = None,
  candidates_dir: str | None = None,
  while_waiting: Callable[[], Any] | None = None,
) -> AdaptiveResult:
  """The adaptive protocol on a (stochastic) model; see the module docstring.

  Args:
    model, variables: the model and its variables.
    images, labels: test images (uint8 or floats in [0, 1]) and labels.
    plan: the 'adaptive' suite resolved for the model (`build_evaluation`): its attacks, the
      transfer attack, AutoAttack's budget, and the spec's draws (`measurement_draws` N fresh
      draws classify each adversarial point; `selection_draws` S choose each point's worst
      candidate, `evaluation/estimator.py`).
    key: PRNG key.
    progress: a progress bar over the pieces.
    extra_attacks: more `attack(logits_fn, key, x, y)` to include (tests).
    cache_dir: if given, each attack's result on each batch is stored there when done and read
      back on the next run, so an interrupted evaluation resumes (`evaluation/cache.py`); a
      directory holding results of other settings is refused. Chunked EOT gradients
      (`eot_microbatch`) draw their own noise, so the cache keeps them apart.
    candidates_dir: if given, each candidate (clean inputs and every attack's adversarial
      points) is kept there as `batch<start>_<name>.npy` (float32) when its piece is computed, so
      the choice can be recomputed on other draws without attacking again
      (`estimator.select_and_measure`).
    while_waiting: with `cache_dir` shared by several processes, other work to do once this
      process has only pieces left that another one is computing (`PieceCache.get_all`).

  Returns:
    an `AdaptiveResult`: `attacks` {name: {'single_draw', 'mean', 'majority', 'all'}} and `clean`
    alike; `worst_case`, the share of points whose worst candidate, chosen on `selection_draws`
    draws, wins the vote of `num_draws` fresh draws, with `worst_case_interval`;
    `worst_case_expected`, the same candidates' accuracy over the fresh draws (expected
    accuracy), with `worst_case_expected_interval`; `worst_case_chosen`, how many points each
    candidate decided; `and_of_majority_votes`, the AND over attacks of each attack's own
    majority vote (biased low for a stochastic model: its independent votes count prediction
    noise as attack success; kept for comparison only); `flags` (AA-rand's checks and
    'gradient_masking': EOT-Square more than a point below every single-draw white-box attack);
    `seconds` (wall time per attack, summed over batches; from the run that computed it); `n`,
    `num_draws`, and `per_example` {name: majority bools, 'worst_case', 'and_of_majority_votes',
    'scores': {candidate: `estimator.candidate_scores` lists}} (`estimator.worst_case` on any
    subset of the scores recomputes the choice over those candidates).
  """
  spec = plan.spec
  if not isinstance(plan, AdaptivePlan):
    raise ValueError(f"evaluate_adaptive: the plan is for the {spec.suite!r} suite, not 'adaptive'")
  num_draws, selection_draws, batch_size = spec.measurement_draws, spec.selection_draws, spec.batch_size
  f = make_logits_fn(model, variables)
  attacks: dict[str, Callable] = {k: A.build_attack(v) for k, v in plan.attacks.items()}
  batch_flags = {}  # an AutoAttack's sanity flags on the batch it just attacked

  def autoattack(version: str, flag_prefix: str):
    """AutoAttack's `version` as an attack of the suite; its sanity checks go to the flags."""

    def attack(g, k, x, y):
      x_adv, rep = A.autoattack(
        g,
        k,
        x,
        y,
        epsilon=plan.linf,
        version=version,
        eot_samples=spec.eot_samples,
        num_steps=plan.autoattack.steps,
        num_queries=plan.autoattack.queries,
        batch_size=x.shape[0],
        microbatch=spec.eot_microbatch if version == 'rand' else None,
      )
      batch_flags.update({f'{flag_prefix}{n}': v for n, v in rep['flags'].items()})
      return x_adv

    return attack

  # The standard version is what a deterministic model would get (every attack on one draw).
  attacks['aa_standard'] = autoattack('standard', 'standard_')
  attacks['aa_rand'] = autoattack('rand', '')
  transfer = A.build_attack(plan.transfer)
  for name, sur in surrogates(model).items():
    sf = make_logits_fn(sur, variables)
    attacks[f'transfer_{name}'] = lambda _g, k, x, y, sf=sf: transfer(sf, k, x, y)
  for name, sampling in plan.sampling.items():
    attacks[name] = sampling_attack(model, variables, sampling)
  attacks.update(extra_attacks or {})
  names = ['clean'] + list(attacks)
  settings = dict(
    run_identity(variables, images, labels, key),
    dataset=spec.dataset,
    num_draws=num_draws,
    eot_samples=spec.eot_samples,
    steps_scale=spec.steps_scale,
    queries=spec.square_queries,
    batch_size=batch_size,
    attacks=names,
    # Every hyperparameter of every attack: a spec that changes is another setting.
    specs=json.loads(json.dumps(dict(plan.attacks, transfer=plan.transfer), default=str)),
  )
  if plan.sampling:  # absent without them, so the settings of a deterministic model stay as they were
    settings['sampling'] = json.loads(json.dumps({k: v._asdict() for k, v in plan.sampling.items()}))
  if spec.eot_microbatch is not None:  # absent by default, so caches written before it stay valid
    settings['eot_microbatch'] = spec.eot_microbatch
  # Pieces carry the estimator's scores: a cache written before them holds other settings.
  settings['estimator'] = dict(selection_draws=selection_draws, measurement_draws=num_draws)
  cache = PieceCache(cache_dir, settings)
  parts: dict[str, dict[str, list]] = {
    n: {'single_draw': [], 'mean': [], 'majority': [], 'all': []} for n in names
  }
  scores: dict[str, list[dict]] = {n: [] for n in names}
  seconds = dict.fromkeys(names, 0.0)
  flag_values: dict[str, list] = {}

  starts = range(0, len(images), batch_size)
  # Each batch converted once, not once per attack.
  batches = {
    i: (as_unit_float(images[i : i + batch_size]), jnp.asarray(labels[i : i + batch_size])) for i in starts
  }

  def piece(i: int, j: int, name: str) -> dict:
    """Attack `name` on the batch starting at image i, its adversarial points classified."""
    t = time.perf_counter()
    x, y = batches[i]
    kb = keys.batch_keys(key, i)
    k_attack, k_predict = keys.attack_keys(kb, j)
    x_adv = x if name == 'clean' else attacks[name](f, k_attack, x, y)
    if candidates_dir is not None:
      write_atomic(
        os.path.join(candidates_dir, f'batch{i:07d}_{name}.npy'),
        lambda fh: np.save(fh, np.asarray(x_adv, np.float32), allow_pickle=False),
      )
    d = prediction_over_draws(f, x_adv, y, k_predict, num_draws)
    first = np.asarray(_draw_predictions(f, x_adv, k_predict, 1)[0])
    refuse_non_finite(first, f'evaluate_adaptive ({name}, batch at {i})')
    first = first[0]
    out = {k: np.asarray(v).tolist() for k, v in d.items()}
    # Every candidate of a batch is scored on the same selection and measurement draws.
    scores = candidate_scores(f, x_adv, y, draw_keys(kb.estimator, selection_draws, num_draws))
    out['estimator'] = scores_as_lists(scores)
    out.update(single_draw=(first == np.asarray(y)).tolist(), seconds=time.perf_counter() - t)
    out['flags'] = dict(batch_flags)
    batch_flags.clear()
    return out

  computes = {
    f'batch{i:07d}_{name}': functools.partial(piece, i, j, name)
    for i in starts
    for j, name in enumerate(names)
  }
  # Processes sharing cache_dir split the pieces between them (`PieceCache.get_all`).
  pieces = cache.get_all(_with_progress(computes, cache, progress), while_waiting=while_waiting)
  for i in starts:
    for name in names:
      r = pieces[f'batch{i:07d}_{name}']
      for k in parts[name]:
        parts[name][k].append(np.asarray(r[k]))
      scores[name].append(r['estimator'])
      seconds[name] += r['seconds']
      for flag, v in r['flags'].items():
        flag_values.setdefault(flag, []).append(v)
  per = {n: {k: np.concatenate(v) for k, v in d.items()} for n, d in parts.items()}
  n = len(images)
  all_scores = {k: {f: np.concatenate([p[f] for p in v]) for f in v[0]} for k, v in scores.items()}
  est = worst_case(all_scores)
  and_of_votes = np.logical_and.reduce([per[k]['majority'] for k in names])
  worst = est.won
  lo, hi = est.majority_interval
  acc = {name: {k: float(v.mean()) for k, v in d.items()} for name, d in per.items()}
  # A flag raised on any batch is raised; a measured fraction is its largest batch value.
  report_flags = {k: (any(v) if isinstance(v[0], bool) else max(v)) for k, v in flag_values.items()}
  # AutoAttack's test: the gradient-free attack breaks points the single-draw white-box attacks
  # left standing (a plan without either has no such flag).
  white_box = [acc[k]['majority'] for k in ('pgd', 'apgd_ce', 'apgd_dlr') if k in acc]
  flags = dict(report_flags)
  if white_box and 'eot_square' in acc:
    flags['gradient_masking'] = bool(acc['eot_square']['majority'] < min(white_box) - 0.01)
  return AdaptiveResult(
    clean=acc.pop('clean'),
    attacks=acc,
    worst_case=float(worst.mean()),
    worst_case_interval=[lo, hi],
    worst_case_expected=est.expected,
    worst_case_expected_interval=list(est.expected_interval),
    worst_case_chosen={k: int((est.chosen == i).sum()) for i, k in enumerate(est.names)},
    and_of_majority_votes=float(and_of_votes.mean()),
    selection_draws=selection_draws,
    flags=flags,
    n=n,
    num_draws=num_draws,
    eot_samples=spec.eot_samples,
    seconds=seconds,
    per_example=dict(
      {k: v['majority'].tolist() for k, v in per.items()},
      worst_case=worst.tolist(),
      and_of_majority_votes=and_of_votes.tolist(),
      scores={k: {f: v.tolist() for f, v in d.items()} for k, d in all_scores.items()},
    ),
    stochastic=plan.stochastic,
  )


def _with_progress(computes: dict, cache: PieceCache, progress: bool) -> dict:
  """The same computations, each advancing one tqdm bar (over the pieces not yet stored) when it
  runs."""
  todo = sum(not cache.has(name) for name in computes)
  bar = tqdm(total=todo, disable=not progress or not todo, desc='adaptive')

  def ticking(compute):
    def run():
      out = compute()
      bar.update()
      return out

    return run

  return {name: ticking(c) for name, c in computes.items()}


def eot_convergence(
  logits_fn,
  x,
  y,
  key,
  *,
  epsilon: float,
  draws=(1, 2, 4, 8, 16, 32),
  steps=(10, 20, 50, 100, 200),
  fixed_draws: int = 20,
  fixed_steps: int = 100,
  num_draws: int = 10,
  cache_dir: str | None = None,
  model_id: str | None = None,
  worst_case_scores: Mapping[str, Mapping[str, Any]] | None = None,
  selection_draws: int = 10,
  microbatch: int | None = None,
) -> dict:
  """EOT-PGD robust accuracy (majority over `num_draws`) against the number of EOT draws (at
  `fixed_steps`) and against iterations (at `fixed_draws`), and whether the evaluation has
  converged: doubling both draws and iterations from (fixed_draws, fixed_steps) moves the
  accuracy by less than half a point, and, given the suite's candidates on the same points,
  moves the suite's selected-and-measured worst case by less than half a point too.

  The doubled attack's points join the suite's candidates as one more candidate, and the worst
  case is chosen and measured again (`estimator.worst_case`): the AND of the suite's vote with
  the doubled attack's own vote on independent draws would count prediction noise as attack
  success.

  Args:
    cache_dir: if given, each point of the curves is stored there when done and read back on the
      next run (an interrupted test resumes); needs `model_id`.
    model_id: what identifies the model behind `logits_fn` in the cache's settings (for example
      `cache.digest(variables)`).
    worst_case_scores: optional, the suite's candidates on the points of `x`: {candidate:
      `estimator.candidate_scores` over these points} (`evaluate_adaptive`'s
      `per_example['scores']`, cut to these points). The evaluation has converged only if adding
      the doubled EOT-PGD as a candidate moves the worst case (expected and majority) by less than
      half a point, since the headline is the worst case, not one attack.
    selection_draws: the draws that choose among the candidates; the doubled attack's points are
      scored on `selection_draws` selection draws and `num_draws` measurement draws of their own,
      from `estimator.draw_keys(key)`.
    microbatch: EOT-PGD's gradient chunk size (None: the whole batch), as `evaluate_adaptive`'s
      `eot_microbatch`; a stochastic model draws other noise in chunks, so it is a setting of
      the cache.

  Returns:
    {'draws': [...], 'accuracy_vs_draws': [...], 'steps': [...], 'accuracy_vs_steps': [...],
    'at_budget': acc, 'at_double_budget': acc, 'robust_at_double_budget': per-point bools,
    'scores_at_double_budget': the doubled attack's `candidate_scores` lists, 'converged': bool,
    'seconds': the points' compute time}, and with `worst_case_scores`: 'worst_case' and
    'worst_case_with_double_budget' (majority of the measurement draws), 'worst_case_expected'
    and 'worst_case_expected_with_double_budget' (mean over them).
  """
  if cache_dir is not None and not model_id:
    raise ValueError('eot_convergence: cache_dir needs model_id, the identity of the model it caches')
  for name, fields in (worst_case_scores or {}).items():
    for field in SCORE_FIELDS:
      if field not in fields or np.shape(fields[field]) != (len(x),):
        raise ValueError(
          f'eot_convergence: worst_case_scores[{name!r}][{field!r}] has shape '
          f'{np.shape(fields[field]) if field in fields else None}; it needs one value per point of x, ({len(x)},)'
        )
  x, y = as_unit_float(x), jnp.asarray(y)
  settings = dict(model=model_id, data=digest(np.asarray(x), np.asarray(y)), key=digest(key), epsilon=epsilon)
  # Pieces hold per-point results (earlier ones held an accuracy), and the attack is the suite's
  # own EOT-PGD (earlier: the margin loss with cosine steps): older caches are refused by name.
  settings.update(
    num_draws=num_draws, pieces='per_point', attack='eot_pgd_spec', key_schedule=keys.EVAL_SCHEDULE
  )
  if microbatch is not None:
    settings['microbatch'] = microbatch
  cache = PieceCache(cache_dir, settings)
  # The attacks (one key per budget), the draws that classify their points, the estimator's draws.
  k_attacks, k_predict, k_scores = jax.random.split(key, 3)

  def point(s: int, t: int, scored: bool = False) -> dict:
    """Per point: robust (majority of the draws) to EOT-PGD with s draws and t steps; `scored`:
    also its points' `candidate_scores`."""
    spec = eot_pgd_spec(epsilon, num_steps=t, eot_samples=s, microbatch=microbatch)
    t0 = time.perf_counter()
    x_adv = A.build_attack(spec)(logits_fn, keys.pair_key(k_attacks, s, t), x, y)
    pred = prediction_over_draws(logits_fn, x_adv, y, k_predict, num_draws)
    out = {'robust': np.asarray(pred['majority']).tolist()}
    if scored:
      # Scored for the estimator on draws of its own, disjoint from the attacks' and the curve's.
      scores = candidate_scores(logits_fn, x_adv, y, draw_keys(k_scores, selection_draws, num_draws))
      out['estimator'] = scores_as_lists(scores)
    return dict(out, seconds=time.perf_counter() - t0)

  # The budget point lies on both curves: a dict computes it once. Processes sharing cache_dir
  # split the points between them. The doubled budget's piece also carries the estimator's scores
  # (another name: its pieces without them, from before, are not read as if they had them).
  budgets = [(s, fixed_steps) for s in draws] + [(fixed_draws, t) for t in steps]
  d2, t2 = 2 * fixed_draws, 2 * fixed_steps
  computes = {f'draws{s}_steps{t}': functools.partial(point, s, t) for s, t in budgets}
  doubled_name = f'draws{d2}_steps{t2}_scored_on{selection_draws}'
  computes[doubled_name] = functools.partial(point, d2, t2, scored=True)
  computed = cache.get_all(computes)

  def robust(s, t):
    return np.asarray(computed[f'draws{s}_steps{t}']['robust'], bool)

  by_draws = [float(robust(s, fixed_steps).mean()) for s in draws]
  by_steps = [float(robust(fixed_draws, t).mean()) for t in steps]
  doubled = computed[doubled_name]
  base, double = robust(fixed_draws, fixed_steps), np.asarray(doubled['robust'], bool)
  out = {
    'draws': list(draws),
    'accuracy_vs_draws': by_draws,
    'steps': list(steps),
    'accuracy_vs_steps': by_steps,
    'at_budget': float(base.mean()),
    'at_double_budget': float(double.mean()),
    'robust_at_double_budget': double.tolist(),
    'scores_at_double_budget': doubled['estimator'],
    'converged': bool(abs(double.mean() - base.mean()) < 0.005),
    # The points' own times (whichever process computed them); None if a stored point lacks one.
    'seconds': None
    if any('seconds' not in p for p in computed.values())
    else sum(p['seconds'] for p in computed.values()),
  }
  if worst_case_scores is not None:
    before = worst_case(worst_case_scores)
    # A name of its own, so that it can never replace one of the suite's candidates.
    after = worst_case({**worst_case_scores, '(doubled eot_pgd)': doubled['estimator']})
    out.update(
      worst_case=before.majority,
      worst_case_with_double_budget=after.majority,
      worst_case_expected=before.expected,
      worst_case_expected_with_double_budget=after.expected,
    )
    out['converged'] &= before.majority - after.majority < 0.005 and before.expected - after.expected < 0.005
  return out
