"""Evaluate a trained model under an attack suite: robust accuracy per attack and per-point worst
case, single-draw and multi-draw numbers for stochastic models, transfer from the deterministic
surrogate, accuracy against ε over a vmapped grid, and inference time per image."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import attacks as A
from jaxrobust import keys
from jaxrobust.certify import interval_bounds, verified
from jaxrobust.evaluation.accuracy import NonFiniteLogitsError, as_unit_float, correct, robust_accuracy
from jaxrobust.evaluation.adaptive import evaluate_adaptive
from jaxrobust.evaluation.suites import AUTOATTACK_SUITES, attack_suite, linf_budget, transfer_attack
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
  """Median wall time of one jitted forward pass per image, in ms."""
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
  """PGD-L∞ accuracy at every ε of the grid, one vmapped call per batch (α = 2.5·ε/steps)."""
  eps = jnp.asarray(epsilons, jnp.float32)
  hits = np.zeros(len(epsilons))
  for i in range(0, len(images), batch_size):
    x = as_unit_float(images[i : i + batch_size])
    y = jnp.asarray(labels[i : i + batch_size])
    kb = jax.random.fold_in(key, i)
    xs = A.over_epsilons(A.pgd, logits_fn, kb, x, y, eps, num_steps=num_steps)
    logits = jax.vmap(lambda xa: logits_fn(xa, jax.random.fold_in(kb, keys.TAG_EVAL_PREDICT)))(xs)
    ok = (jnp.argmax(logits, -1) == y[None]) & jnp.all(jnp.isfinite(logits), -1)
    hits += np.asarray(jnp.sum(ok, axis=1))
  return (hits / max(len(images), 1)).tolist()


def check_finite_model(logits_fn, images, *, key, batch_size: int = 250) -> None:
  """Raises NonFiniteLogitsError when the model's clean logits are not all finite."""
  for i in range(0, len(images), batch_size):
    x = as_unit_float(images[i : i + batch_size])
    _, finite = correct(logits_fn, x, jnp.zeros((x.shape[0],), jnp.int32), jax.random.fold_in(key, i))
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
  *,
  dataset: str,
  suite: str = 'standard',
  key,
  batch_size: int = 250,
  eval_draws: int = 5,
  steps_scale: float = 1.0,
  eot_samples: int = 8,
  epsilon_grid=None,
  with_autoattack: bool = False,
  autoattack_scale: float = 1.0,
  progress: bool = False,
  cache_dir: str | None = None,
  eot_microbatch: int | None = None,
  while_waiting: Callable[[], Any] | None = None,
) -> dict:
  """Robust accuracy of a model under a suite, with stochastic-model extras.

  Args:
    model, variables: a Linen model and its variables.
    images, labels: uint8 test images (N,H,W,C) and labels.
    dataset: dataset name (suite budgets).
    suite: 'study', 'standard', 'autoattack' (AutoAttack's standard version, or its rand version
      for a randomised model), 'autoattack_rand', or 'adaptive' (the adaptive protocol for
      stochastic defenses, `evaluation/adaptive.py`; `eot_samples` draws per EOT attack).
    key: PRNG key.
    batch_size: evaluation batch.
    eval_draws: for stochastic models, also report clean accuracy when a point must be right in
      all of this many fresh draws ('clean_all_of_k_draws').
    steps_scale: scale attack iterations (quick runs).
    eot_samples: EOT samples of the adaptive attacks.
    epsilon_grid: if given, PGD-L∞ accuracy at each ε (vmapped grid).
    with_autoattack: for 'study' and 'standard', also run AutoAttack (its standard version, or
      its rand version on a randomised model), as Table 1's AutoAttack column; the worst case
      then includes it.
    autoattack_scale: scales AutoAttack's iterations and queries apart from `steps_scale` (1:
      the reference's budget, whatever the suite's scale; smaller only for tests).
    cache_dir: 'adaptive' suite only: each attack's result per batch is stored there and reused,
      so an interrupted evaluation resumes (`evaluation/adaptive.py`).
    eot_microbatch: 'adaptive' suite only: the gradient chunk size of its EOT attacks.
    while_waiting: 'adaptive' suite with a shared `cache_dir` only: other work for this process
      while another one computes the last pieces it needs.

  Returns:
    dict with accuracies per attack ('clean', 'fgsm', ...), 'worst_case', 'stochastic',
    'clean_all_of_k_draws' (stochastic), 'transfer' (if a surrogate exists), 'ms_per_image',
    'epsilon_grid' and 'accuracy_vs_epsilon', 'n', 'non_finite', and per-example correctness.

  Raises:
    NonFiniteLogitsError: when the model's clean logits are not finite.
  """
  if with_autoattack and suite not in ('study', 'standard'):
    raise ValueError(f"with_autoattack is for the 'study' and 'standard' suites, not {suite!r}")
  if cache_dir is not None and suite != 'adaptive':
    raise ValueError(f"cache_dir is for the 'adaptive' suite, not {suite!r}")
  if eot_microbatch is not None and suite != 'adaptive':
    raise ValueError(f"eot_microbatch is for the 'adaptive' suite, not {suite!r}")
  if while_waiting is not None and cache_dir is None:
    raise ValueError("while_waiting needs a cache_dir (of the 'adaptive' suite) to wait on")
  f = make_logits_fn(model, variables)
  check_finite_model(f, images, key=key, batch_size=batch_size)
  stochastic = model_traits(model).stochastic
  if suite == 'adaptive':
    out = evaluate_adaptive(
      model,
      variables,
      images,
      labels,
      dataset=dataset,
      key=key,
      num_draws=max(eval_draws, 10),
      eot_samples=eot_samples,
      steps_scale=steps_scale,
      batch_size=batch_size,
      progress=progress,
      cache_dir=cache_dir,
      eot_microbatch=eot_microbatch,
      while_waiting=while_waiting,
    )
    out.update(
      suite=suite,
      stochastic=stochastic,
      ms_per_image=inference_ms_per_image(model, variables, images.shape[1:]),
    )
    return out
  if suite in AUTOATTACK_SUITES:
    version = 'rand' if stochastic and suite == 'autoattack' else AUTOATTACK_SUITES[suite]
    out = evaluate_autoattack(
      f,
      images,
      labels,
      dataset=dataset,
      version=version,
      key=key,
      stochastic=stochastic,
      steps_scale=steps_scale,
      batch_size=max(batch_size, 500),
    )
    out['suite'] = suite
    out.update(
      _grid(f, images, labels, epsilon_grid, key=key, steps_scale=steps_scale, batch_size=batch_size)
    )
    out['ms_per_image'] = inference_ms_per_image(model, variables, images.shape[1:])
    return out
  specs = attack_suite(
    suite, dataset, stochastic=stochastic, eot_samples=eot_samples, steps_scale=steps_scale
  )
  attacks = {k: A.build_attack(v) for k, v in specs.items()}
  surrogate = deterministic_surrogate(model) if stochastic else None
  if surrogate is not None:
    sf = make_logits_fn(surrogate, variables)
    transfer = A.build_attack(transfer_attack(suite, dataset, steps_scale=steps_scale))
    attacks['transfer'] = lambda _f, k, x, y: transfer(sf, k, x, y)
  res = robust_accuracy(f, images, labels, attacks, key=key, batch_size=batch_size, progress=progress)
  out = {k: v for k, v in res.items() if k != 'per_example'}
  out['per_example'] = {k: v.tolist() for k, v in res['per_example'].items()}
  out['stochastic'] = stochastic
  out['suite'] = suite
  out['attacks'] = specs
  if stochastic and eval_draws > 1:
    multi = robust_accuracy(
      f,
      images,
      labels,
      {},
      key=jax.random.fold_in(key, keys.TAG_EVAL_DRAWS),
      batch_size=batch_size,
      eval_draws=eval_draws,
    )
    out['clean_all_of_k_draws'] = multi['clean']
    out['eval_draws'] = eval_draws
  if with_autoattack:
    aa = evaluate_autoattack(
      f,
      images,
      labels,
      dataset=dataset,
      version='rand' if stochastic else 'standard',
      key=jax.random.fold_in(key, keys.TAG_EVAL_AUTOATTACK),
      stochastic=stochastic,
      steps_scale=autoattack_scale,
      batch_size=max(batch_size, 500),
    )
    robust = np.asarray(aa['per_example']['autoattack'], bool)
    worst = np.asarray(out['per_example']['worst_case'], bool) & robust
    out.update({k: aa[k] for k in ('autoattack', 'autoattack_version', 'autoattack_report')})
    out['worst_case'] = float(worst.mean())
    out['per_example'].update(autoattack=robust.tolist(), worst_case=worst.tolist())
  out.update(_grid(f, images, labels, epsilon_grid, key=key, steps_scale=steps_scale, batch_size=batch_size))
  if stochastic:
    out['verified_linf'], out['verified_note'] = None, 'no certificate: the model is randomized'
  else:
    eps = linf_budget(suite, dataset)
    out['verified_linf'] = verified_linf_accuracy(
      model, variables, images, labels, eps, batch_size=batch_size
    )
    out['verified_note'] = f'interval bounds at L∞ ε = {eps:g} (a lower bound on robust accuracy)'
  out['ms_per_image'] = inference_ms_per_image(model, variables, images.shape[1:])
  return out


def verified_linf_accuracy(
  model, variables, images, labels, epsilon: float, *, batch_size: int = 250
) -> float:
  """The share of images that interval bounds verify at L∞ radius ε (`jaxrobust.certify`): a lower
  bound on the model's robust accuracy, to set beside an attack's upper bound."""
  ok = jax.jit(lambda v, x, y: verified(interval_bounds(model.apply, v, x, epsilon), y))
  parts = [
    np.asarray(
      ok(variables, as_unit_float(images[i : i + batch_size]), jnp.asarray(labels[i : i + batch_size]))
    )
    for i in range(0, len(images), batch_size)
  ]
  return float(np.concatenate(parts).mean())


def _grid(f, images, labels, epsilon_grid, *, key, steps_scale, batch_size) -> dict:
  """PGD-L∞ accuracy over the ε grid (empty without a grid)."""
  if epsilon_grid is None:
    return {}
  steps = max(1, int(10 * steps_scale))
  acc = pgd_accuracy_over_epsilons(
    f,
    images,
    labels,
    epsilon_grid,
    key=jax.random.fold_in(key, keys.TAG_EVAL_GRID),
    num_steps=steps,
    batch_size=batch_size,
  )
  return {'epsilon_grid': [float(e) for e in epsilon_grid], 'grid_steps': steps, 'accuracy_vs_epsilon': acc}


def evaluate_autoattack(
  logits_fn,
  images,
  labels,
  *,
  dataset: str,
  version: str,
  key,
  stochastic: bool,
  steps_scale: float = 1.0,
  batch_size: int = 500,
  eot_samples: int = 20,
) -> dict:
  """AutoAttack (L∞ at the dataset's standard ε) over a test set.

  Args:
    version: 'standard', or 'rand' (EOT-20 APGD-CE and APGD-DLR, for randomised models).
    stochastic: whether the model is randomised (the 'standard' version then warns).
    steps_scale: scales the iterations and Square's queries (< 1 only for quick looks).
    eot_samples: EOT draws of the 'rand' version (20, the reference's).

  Returns:
    {'clean', 'autoattack' (final robust accuracy), 'autoattack_version', 'autoattack_report'
    (accuracy after each attack, points broken, seconds, checks), 'per_example': {'autoattack'}}.
  """
  scale = lambda n: max(1, int(round(n * steps_scale)))
  x = as_unit_float(images)
  _, rep = A.autoattack(
    logits_fn,
    key,
    x,
    jnp.asarray(labels),
    norm='linf',
    epsilon=linf_budget('standard', dataset),
    version=version,
    batch_size=batch_size,
    num_steps=scale(100),
    num_queries=scale(5000),
    eot_samples=eot_samples,
  )
  robust = rep.pop('robust')
  return {
    'clean': rep['clean'],
    'autoattack': float(robust.mean()),
    'autoattack_version': version,
    'autoattack_report': rep,
    'stochastic': stochastic,
    'per_example': {'autoattack': robust.tolist()},
  }


def examples_and_confidence(
  model, variables, images, labels, attack_spec: dict, *, key, n: int = 500, batch_size: int = 250
) -> dict:
  """Clean and attacked inputs with predictions and max-softmax confidences (for the figures)."""
  f = make_logits_fn(model, variables)
  attack = A.build_attack(attack_spec)
  out = {k: [] for k in ('x', 'x_adv', 'pred', 'pred_adv', 'conf', 'conf_adv')}
  for i in range(0, min(n, len(images)), batch_size):
    x = as_unit_float(images[i : min(i + batch_size, n)])
    y = jnp.asarray(labels[i : min(i + batch_size, n)])
    kb = jax.random.fold_in(key, i)
    xa = attack(f, kb, x, y)
    for suffix, inp in (('', x), ('_adv', xa)):
      p = jax.nn.softmax(f(inp, jax.random.fold_in(kb, keys.TAG_EVAL_PREDICT)), -1)
      out['pred' + suffix].append(np.asarray(jnp.argmax(p, -1)))
      out['conf' + suffix].append(np.asarray(jnp.max(p, -1)))
    out['x'].append(np.asarray(x))
    out['x_adv'].append(np.asarray(xa))
  out = {k: np.concatenate(v) for k, v in out.items()}
  out['labels'] = np.asarray(labels[: len(out['pred'])])
  return out
