"""Evaluate a trained model under an attack suite: robust accuracy per attack and per-point worst
case, single-draw and multi-draw numbers for stochastic models, transfer from the deterministic
surrogate, accuracy against ε over a vmapped grid, and inference time per image."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import attacks as A
from jaxrobust import keys
from jaxrobust.certify import interval_bounds, verified
from jaxrobust.counts import is_count
from jaxrobust.evaluation.accuracy import (
  NonFiniteLogitsError,
  as_unit_float,
  check_dataset,
  correct,
  join_batches,
  robust_accuracy,
)
from jaxrobust.evaluation.adaptive import evaluate_adaptive, sampling_attack
from jaxrobust.evaluation.estimator import scorer, worst_case
from jaxrobust.evaluation.results import AutoAttackResult, AutoAttackRun, EvalResult, Grid, SuiteResult
from jaxrobust.evaluation.spec import (
  PLAN_TYPES,
  AdaptivePlan,
  AutoAttackPlan,
  EvalPlan,
  EvalSpec,
  GridSettings,
  ListedPlan,
  build_evaluation,
)
from jaxrobust.models import forward, make_logits_fn, model_traits


def deterministic_surrogate(model):
  """The same model (same variables) with every stochastic layer's noise off (LWTA winners by
  argmax, PNI without weight noise, IBP gates at their means), or None for a model declared
  deterministic."""
  return model.clone(deterministic=True) if model_traits(model).stochastic else None


@functools.partial(jax.jit, static_argnames=('model',))
def _forward(model, variables, x, key):
  return forward(model.apply, variables, x, key)


def inference_ms_per_image(model, variables, image_shape, batch: int = 256, repeats: int = 5) -> float:
  """Median wall time of one jitted forward pass per image, in ms.

  Raises:
    ValueError: for a batch or repeats that is not an integer >= 1.
  """
  for name, v in (('batch', batch), ('repeats', repeats)):
    if not is_count(v, 1):
      raise ValueError(f'inference_ms_per_image: {name} must be an integer >= 1, got {v!r}')
  x = jax.random.uniform(jax.random.key(0), (batch,) + tuple(image_shape))
  key = jax.random.key(1)
  jax.block_until_ready(_forward(model, variables, x, key))
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(_forward(model, variables, x, key))
    ts.append(time.perf_counter() - t0)
  return 1000.0 * float(np.median(ts)) / batch


def pgd_accuracy_over_epsilons(
  logits_fn, images, labels, epsilons, *, key, num_steps: int = 10, batch_size: int = 256
) -> list[float]:
  """PGD-L∞ accuracy at every ε of the grid, one vmapped call per batch (α = 2.5·ε/steps).

  Raises:
    ValueError: for no images, labels whose count differs from the images' or batch_size < 1.
    NonFiniteLogitsError: when any logit of an attacked point is NaN or infinite.
  """
  check_dataset(images, labels, batch_size, 'pgd_accuracy_over_epsilons')
  eps = jnp.asarray(epsilons, jnp.float32)
  hits, bad = np.zeros(len(epsilons)), 0
  for i in range(0, len(images), batch_size):
    x = as_unit_float(images[i : i + batch_size])
    y = jnp.asarray(labels[i : i + batch_size])
    k_attack, k_predict = keys.attack_keys(keys.batch_keys(key, i), 0)
    xs = A.over_epsilons(A.pgd, logits_fn, k_attack, x, y, eps, num_steps=num_steps)
    logits = jax.vmap(lambda xa: logits_fn(xa, k_predict))(xs)
    finite = jnp.all(jnp.isfinite(logits), -1)
    hits += np.asarray(jnp.sum((jnp.argmax(logits, -1) == y[None]) & finite, axis=1))
    bad += int((~finite).sum())
  if bad:
    raise NonFiniteLogitsError(f'pgd_accuracy_over_epsilons: {bad} attacked points have non-finite logits')
  return (hits / len(images)).tolist()


def check_finite_model(logits_fn, images, *, key, batch_size: int = 250) -> None:
  """Raises NonFiniteLogitsError when the model's clean logits are not all finite."""
  for i in range(0, len(images), batch_size):
    x = as_unit_float(images[i : i + batch_size])
    _, finite = correct(logits_fn, x, jnp.zeros((x.shape[0],), jnp.int32), keys.batch_keys(key, i).clean)
    if not finite.all():
      raise NonFiniteLogitsError(
        f'the model gives non-finite clean logits on {int((~finite).sum())} of '
        f'{x.shape[0]} examples in batch {i // batch_size}: refusing to evaluate '
        f'it (a broken checkpoint?)'
      )


def evaluate_model(
  model,
  variables,
  images,
  labels,
  spec: EvalSpec | EvalPlan,
  *,
  key,
  progress: bool = False,
  cache_dir: str | None = None,
  candidates_dir: str | None = None,
  while_waiting: Callable[[], Any] | None = None,
) -> EvalResult:
  """Robust accuracy of a model under the evaluation `spec`, with stochastic-model extras.

  Args:
    model, variables: a Linen model with declared traits (`jaxrobust.models.model_traits`) and
      its variables.
    images, labels: uint8 test images (N,H,W,C) and labels.
    spec: what to evaluate (`EvalSpec`), or the plan already resolved from it for this model
      (`build_evaluation`).
    key: the evaluation's root key (`keys.evaluation_key(seed)` for a run's); each part of the
      evaluation takes its own key from it (`keys.eval_keys`).
    progress: progress bars.
    cache_dir: 'adaptive' suite only: each attack's result per batch is stored there and reused,
      so an interrupted evaluation resumes (`evaluation/adaptive.py`).
    candidates_dir: 'adaptive' suite only: where every candidate point is kept (.npy).
    while_waiting: 'adaptive' suite with a shared `cache_dir` only: other work for this process
      while another one computes the last pieces it needs.

  Returns:
    a `SuiteResult` ('study', 'standard'), `AutoAttackResult` ('autoattack', 'autoattack_rand') or
    `AdaptiveResult` ('adaptive'); `.to_record()` gives the results files' flat layout.

  Raises:
    NonFiniteLogitsError: when the model's clean logits are not finite.
  """
  given = spec.spec if isinstance(spec, PLAN_TYPES) else spec
  for name, value in (('cache_dir', cache_dir), ('candidates_dir', candidates_dir)):
    if value is not None and given.suite != 'adaptive':
      raise ValueError(f"{name} is for the 'adaptive' suite, not {given.suite!r}")
  if while_waiting is not None and cache_dir is None:
    raise ValueError("while_waiting needs a cache_dir (of the 'adaptive' suite) to wait on")
  traits = model_traits(model)
  if isinstance(spec, PLAN_TYPES):
    plan, spec = spec, given
    if plan.stochastic != traits.stochastic:
      raise ValueError(f'evaluate_model: the plan was built for a model with stochastic={plan.stochastic}')
  else:
    plan = build_evaluation(spec, traits)
  f = make_logits_fn(model, variables)
  ek = keys.eval_keys(key)
  check_finite_model(f, images, key=ek.finite, batch_size=spec.batch_size)
  ms = inference_ms_per_image(model, variables, images.shape[1:])
  if isinstance(plan, AdaptivePlan):
    out = evaluate_adaptive(
      model,
      variables,
      images,
      labels,
      plan,
      key=ek.suite,
      progress=progress,
      cache_dir=cache_dir,
      candidates_dir=candidates_dir,
      while_waiting=while_waiting,
    )
    return out._replace(stochastic=plan.stochastic, ms_per_image=ms)
  if isinstance(plan, AutoAttackPlan):
    return _autoattack_suite(plan, f, images, labels, ek=ek, ms_per_image=ms)
  return _listed_suite(plan, f, model, variables, images, labels, ek=ek, progress=progress, ms_per_image=ms)


def evaluate_test_set(
  model,
  variables,
  dataset,
  spec: EvalSpec,
  *,
  seed: int,
  num_test: int = 0,
  progress: bool = False,
  cache_dir: str | None = None,
) -> dict:
  """`evaluate_model` on the first `num_test` test images of `dataset` (0: all of them), from the
  run's evaluation root `keys.evaluation_key(seed)`, as a results record (`.to_record()`) that
  also names `num_test`. The one evaluation of a trained model that the commands share.

  Raises:
    ValueError: num_test negative, or larger than the test set.
  """
  size = len(dataset.test_labels)
  if not is_count(num_test, 0) or num_test > size:
    raise ValueError(
      f'num_test must be an integer in [0, {size}] (the {dataset.name} test set; 0 = all), got {num_test!r}'
    )
  n = num_test or size
  result = evaluate_model(
    model,
    variables,
    dataset.test_images[:n],
    dataset.test_labels[:n],
    dataclasses.replace(spec, dataset=dataset.name),
    key=keys.evaluation_key(seed),
    progress=progress,
    cache_dir=cache_dir,
  )
  return {**result.to_record(), 'num_test': n}


def _autoattack_suite(
  plan: AutoAttackPlan, f, images, labels, *, ek: keys.EvalKeys, ms_per_image: float
) -> AutoAttackResult:
  """The 'autoattack' and 'autoattack_rand' suites: AutoAttack alone, and the ε grid."""
  s = plan.spec
  run = evaluate_autoattack(
    f,
    images,
    labels,
    epsilon=plan.autoattack.epsilon,
    version=plan.autoattack.version,
    key=ek.autoattack,
    stochastic=plan.stochastic,
    num_steps=plan.autoattack.steps,
    num_queries=plan.autoattack.queries,
    batch_size=max(s.batch_size, 500),
  )
  grid = _grid(plan.grid, f, images, labels, key=ek.grid, batch_size=s.batch_size)
  return AutoAttackResult(suite=s.suite, run=run, grid=grid, ms_per_image=ms_per_image)


def _listed_suite(
  plan: ListedPlan, f, model, variables, images, labels, *, ek: keys.EvalKeys, progress, ms_per_image: float
) -> SuiteResult:
  """The 'study' and 'standard' suites: each listed attack, the transfer attack, the attacks on
  the sampling and the clean draws of a stochastic model, AutoAttack if asked, the ε grid and the
  verified bound."""
  s = plan.spec
  attacks = {k: A.build_attack(v) for k, v in plan.attacks.items()}
  if plan.stochastic:
    sf = make_logits_fn(deterministic_surrogate(model), variables)
    transfer = A.build_attack(plan.transfer)
    attacks['transfer'] = lambda _f, k, x, y: transfer(sf, k, x, y)
  for name, sampling in plan.sampling.items():
    attacks[name] = sampling_attack(model, variables, sampling)
  # A stochastic model's candidates are also scored on each batch's estimator draws, so that its
  # worst case is selected and measured (the AND of single draws counts prediction noise).
  score = scorer(f, ek.suite, s.selection_draws, s.measurement_draws) if plan.stochastic else None
  res = robust_accuracy(
    f,
    images,
    labels,
    attacks,
    key=ek.suite,
    batch_size=s.batch_size,
    score_candidate=score,
    progress=progress,
  )
  accuracy = dict(res.accuracy)
  per_example = {k: v.tolist() for k, v in res.per_example.items()}
  clean_all = None
  if plan.stochastic and s.eval_draws > 1:
    multi = robust_accuracy(
      f,
      images,
      labels,
      {},
      key=ek.draws,
      batch_size=s.batch_size,
      eval_draws=s.eval_draws,
    )
    clean_all = multi.accuracy['clean']
  aa = None
  if plan.autoattack is not None:
    aa = evaluate_autoattack(
      f,
      images,
      labels,
      epsilon=plan.autoattack.epsilon,
      version=plan.autoattack.version,
      key=ek.autoattack,
      stochastic=plan.stochastic,
      num_steps=plan.autoattack.steps,
      num_queries=plan.autoattack.queries,
      batch_size=max(s.batch_size, 500),
      keep_points=score is not None,
    )
    worst = np.asarray(per_example['worst_case'], bool) & aa.robust
    accuracy['worst_case'] = float(worst.mean())
    per_example.update(autoattack=aa.robust.tolist(), worst_case=worst.tolist())
  selected = None
  if score is not None and res.scores is not None:
    candidates = dict(res.scores)
    if aa is not None and aa.points is not None:  # scored batch by batch, as the other candidates
      y = np.asarray(labels)
      parts = [
        score(jnp.asarray(aa.points[i : i + s.batch_size]), jnp.asarray(y[i : i + s.batch_size]), i)
        for i in range(0, len(y), s.batch_size)
      ]
      candidates['autoattack'] = join_batches(parts)
    selected = worst_case(candidates)
  if plan.stochastic:
    verified_linf, note = None, 'no certificate: the model is randomized'
  else:
    verified_linf = verified_linf_accuracy(
      model, variables, images, labels, plan.linf, batch_size=s.batch_size
    )
    note = f'interval bounds at L∞ ε = {plan.linf:g} (a lower bound on robust accuracy)'
  return SuiteResult(
    suite=s.suite,
    stochastic=plan.stochastic,
    n=res.n,
    non_finite=res.non_finite,
    accuracy=accuracy,
    per_example=per_example,
    attacks=dict(plan.attacks, **{k: v._asdict() for k, v in plan.sampling.items()}),
    clean_all_of_k_draws=clean_all,
    eval_draws=s.eval_draws if clean_all is not None else None,
    autoattack=aa,
    grid=_grid(plan.grid, f, images, labels, key=ek.grid, batch_size=s.batch_size),
    verified_linf=verified_linf,
    verified_note=note,
    ms_per_image=ms_per_image,
    selected=selected,
    estimator_draws=None if selected is None else (s.selection_draws, s.measurement_draws),
  )


def verified_linf_accuracy(
  model, variables, images, labels, epsilon: float, *, batch_size: int = 250
) -> float:
  """The share of images that interval bounds verify at L∞ radius ε (`jaxrobust.certify`): a lower
  bound on the model's robust accuracy, to set beside an attack's upper bound.

  Raises:
    ValueError: for no images, labels whose count differs from the images' or batch_size < 1.
  """
  check_dataset(images, labels, batch_size, 'verified_linf_accuracy')
  ok = jax.jit(lambda v, x, y: verified(interval_bounds(model.apply, v, x, epsilon), y))
  parts = [
    np.asarray(
      ok(variables, as_unit_float(images[i : i + batch_size]), jnp.asarray(labels[i : i + batch_size]))
    )
    for i in range(0, len(images), batch_size)
  ]
  return float(np.concatenate(parts).mean())


def _grid(grid: GridSettings | None, f, images, labels, *, key, batch_size: int) -> Grid | None:
  """PGD-L∞ accuracy over the plan's ε grid (None without a grid), on the grid's key."""
  if grid is None:
    return None
  acc = pgd_accuracy_over_epsilons(
    f, images, labels, grid.epsilons, key=key, num_steps=grid.steps, batch_size=batch_size
  )
  return Grid(epsilons=grid.epsilons, steps=grid.steps, accuracy=acc)


def evaluate_autoattack(
  logits_fn,
  images,
  labels,
  *,
  epsilon: float,
  version: str,
  key,
  stochastic: bool,
  num_steps: int = 100,
  num_queries: int = 5000,
  batch_size: int = 500,
  eot_samples: int = 20,
  keep_points: bool = False,
) -> AutoAttackRun:
  """AutoAttack at L∞ radius `epsilon` (the dataset's standard ε: `AutoAttackSettings.epsilon`)
  over a test set.

  Args:
    version: 'standard', or 'rand' (EOT-20 APGD-CE and APGD-DLR, for randomised models).
    stochastic: whether the model is randomised (the 'standard' version then warns).
    num_steps, num_queries: the APGD iterations and Square's queries (the reference's 100 and
      5000; fewer only for quick looks).
    eot_samples: EOT draws of the 'rand' version (20, the reference's).
    keep_points: keep its adversarial points (`AutoAttackRun.points`, on the host).

  Returns:
    an `AutoAttackRun`: clean and final robust accuracy, the version, the report (accuracy
    after each attack, points broken, seconds, checks) and which images stayed robust.
  """
  x = as_unit_float(images)
  x_adv, rep = A.autoattack(
    logits_fn,
    key,
    x,
    jnp.asarray(labels),
    norm='linf',
    epsilon=epsilon,
    version=version,
    batch_size=batch_size,
    num_steps=num_steps,
    num_queries=num_queries,
    eot_samples=eot_samples,
  )
  robust = rep.pop('robust')
  return AutoAttackRun(
    clean=rep['clean'],
    accuracy=float(robust.mean()),
    version=version,
    report=rep,
    robust=np.asarray(robust, bool),
    stochastic=stochastic,
    points=np.asarray(x_adv) if keep_points else None,
  )


def examples_and_confidence(
  model, variables, images, labels, attack_spec: dict, *, key, n: int = 500, batch_size: int = 250
) -> dict:
  """Clean and attacked inputs with predictions and max-softmax confidences (for the figures)."""
  f = make_logits_fn(model, variables)
  attack = A.build_attack(attack_spec)
  parts: dict[str, list[np.ndarray]] = {k: [] for k in ('x', 'x_adv', 'pred', 'pred_adv', 'conf', 'conf_adv')}
  for i in range(0, min(n, len(images)), batch_size):
    x = as_unit_float(images[i : min(i + batch_size, n)])
    y = jnp.asarray(labels[i : min(i + batch_size, n)])
    k_attack, k_predict = keys.attack_keys(keys.batch_keys(key, i), 0)
    xa = attack(f, k_attack, x, y)
    for suffix, inp in (('', x), ('_adv', xa)):
      p = jax.nn.softmax(f(inp, k_predict), -1)  # clean and attacked: the same draw
      parts['pred' + suffix].append(np.asarray(jnp.argmax(p, -1)))
      parts['conf' + suffix].append(np.asarray(jnp.max(p, -1)))
    parts['x'].append(np.asarray(x))
    parts['x_adv'].append(np.asarray(xa))
  out = {k: np.concatenate(v) for k, v in parts.items()}
  out['labels'] = np.asarray(labels[: len(out['pred'])])
  return out
