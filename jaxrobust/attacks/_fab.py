"""FAB-T: the targeted Fast Adaptive Boundary attack (L∞ and L2), a minimum-norm attack.

Each iteration linearises the boundary between the true class y and the target t at the current
point x₁ (f_t − f_y and its gradient), projects x₁ and the original x onto that hyperplane inside
the box (the minimal-norm projections), and moves to a convex combination of the two projections
with overshoot η, biased toward the original point by α = min(‖d₁‖/(‖d₁‖ + ‖d₀‖), α_max). Once a
point is adversarial, the smallest adversarial point is kept and the iterate steps back toward x
by β. Targets are the classes with the highest clean logits after the top one, each run on the
points that have no adversarial example within ε yet.

The box-constrained projections solve min ‖d‖ s.t. w·d = c, lo ≤ d ≤ hi exactly up to float
rounding, by bisection on a monotone scalar function: the L2 solution is d = clip(λw, lo, hi) for
the λ with w·d = c (its KKT conditions); the L∞ solution is d_i = sign·min(r, room_i) for the
smallest radius r that reaches c.

References:
  Croce & Hein 2020, "Minimally distorted adversarial examples with a fast adaptive boundary
  attack", ICML, arXiv:1907.02044 (fra31/auto-attack `fab_base.py`)
  Croce & Hein 2020, AutoAttack, arXiv:2003.01690 (FAB-T: 9 targets, 100 iterations, 1 restart)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxrobust import keys
from jaxrobust.attacks import _attack_keys
from jaxrobust.attacks import _checks
from jaxrobust.attacks import _geometry
from jaxrobust.attacks import _loop

_BISECTIONS = 48


def _bisect(fn, lo, hi, n: int = _BISECTIONS):
  """The smallest v in [lo, hi] with fn(v) true (fn monotone: false then true), per example."""

  def body(_, bounds):
    a, b = bounds
    m = 0.5 * (a + b)
    ok = fn(m)
    return jnp.where(ok, a, m), jnp.where(ok, m, b)

  return jax.lax.fori_loop(0, n, body, (lo, hi))[1]


def project_l2(w, c, lo, hi):
  """argmin ‖d‖₂ s.t. w·d = c and lo ≤ d ≤ hi (rows are examples; lo ≤ 0 ≤ hi).

  d = clip(λ·w, lo, hi), with λ solving g(λ) = w·clip(λw, lo, hi) = c; g is non-decreasing, so
  λ is found by bisection. When c is out of g's range, λ saturates at a box corner (the closest
  the box gets to the hyperplane).
  """
  aw = jnp.abs(w)
  big = jnp.where(aw > 0, jnp.maximum(-lo, hi) / jnp.maximum(aw, 1e-30), 0.0)
  span = jnp.max(big, axis=1, keepdims=True) * 2.0 + 1e-12
  g = lambda lam: jnp.sum(w * jnp.clip(lam * w, lo, hi), axis=1, keepdims=True)
  lam = _bisect(lambda lam: g(lam) >= c[:, None], -span, span)
  return jnp.clip(lam * w, lo, hi)


def project_linf(w, c, lo, hi):
  """argmin ‖d‖∞ s.t. w·d = c and lo ≤ d ≤ hi (rows are examples; lo ≤ 0 ≤ hi).

  Moving every coordinate by r toward sign(w)·sign(c) (as far as the box allows) changes w·d by
  h(r) = Σ|w_i|·min(r, room_i), non-decreasing in r; the smallest r with h(r) ≥ |c| is found by
  bisection, and d_i = ±min(r, room_i).
  """
  direction = jnp.sign(w) * jnp.where(c >= 0, 1.0, -1.0)[:, None]
  room = jnp.where(direction > 0, hi, -lo)
  room = jnp.where(w != 0, room, 0.0)
  aw = jnp.abs(w)
  target = jnp.abs(c)[:, None]
  h = lambda r: jnp.sum(aw * jnp.minimum(r, room), axis=1, keepdims=True)
  top = jnp.max(room, axis=1, keepdims=True)
  r = _bisect(lambda r: h(r) >= target, jnp.zeros_like(top), top)
  return direction * jnp.minimum(r, room)


def _norm(d, norm):
  return jnp.max(jnp.abs(d), axis=1) if norm == 'linf' else jnp.sqrt(jnp.sum(d * d, axis=1))


def _target_margin(logits, labels):
  """f_t − f_y for labels (y, t) in the two columns: negative while y wins."""
  pick = lambda col: jnp.take_along_axis(logits, labels[:, col : col + 1], -1)[:, 0]
  return pick(1) - pick(0)


@functools.partial(jax.jit, static_argnames=('num_steps', 'norm', 'unroll', 'microbatch', 'random_start'))
def _fab_impl(
  logits_fn,
  key,
  x,
  y,
  target,
  eps,
  lo,
  hi,
  alpha_max,
  eta,
  beta,
  *,
  num_steps,
  norm,
  unroll,
  microbatch,
  random_start,
):
  b = x.shape[0]
  flat = lambda v: v.reshape(b, -1)
  lo_x = jnp.broadcast_to(_geometry.bcast(lo, x), x.shape)
  hi_x = jnp.broadcast_to(_geometry.bcast(hi, x), x.shape)
  noise_key, model_key = _attack_keys.split_attack_key(key, b)
  labels = jnp.stack([y, target], -1)
  project = project_linf if norm == 'linf' else project_l2
  rolled = unroll < num_steps
  chunk = _loop.resolve_microbatch(microbatch, b, rolled=rolled)
  ex = lambda v: v.reshape((-1,) + (1,) * (x.ndim - 1))

  x1 = x
  if random_start:  # the reference's restart: half of ε in a random direction
    if norm == 'linf':
      t = _attack_keys.sample_like(
        noise_key, x, lambda k, s: jax.random.uniform(k, s, minval=-1.0, maxval=1.0)
      )
    else:
      t = _attack_keys.sample_like(noise_key, x, jax.random.normal)
    x1 = jnp.clip(x + ex(jnp.minimum(eps, 1e10) * 0.5 / (_norm(flat(t), norm) + 1e-12)) * t, lo_x, hi_x)

  def body(i, carry):
    x1, adv, best, bad = carry
    k, k_check = keys.step_model_keys(model_key, i)
    df, logits, g = _loop.loss_and_grad(logits_fn, _target_margin, x1, labels, k, 1, chunk, rolled)
    bad = bad | _checks.nonfinite(logits)
    w = flat(g)
    d1 = project(w, -df, flat(lo_x - x1), flat(hi_x - x1))
    d0 = project(w, -df + jnp.sum(w * flat(x1 - x), 1), flat(lo_x - x), flat(hi_x - x))
    a1 = jnp.maximum(_norm(d1, norm), 1e-8)
    a0 = jnp.maximum(_norm(d0, norm), 1e-8)
    alpha = jnp.clip(a1 / (a1 + a0), 0.0, alpha_max)[:, None]
    step = (flat(x1) + eta * d1) * (1 - alpha) + (flat(x) + eta * d0) * alpha
    x1 = jnp.clip(step.reshape(x.shape), lo_x, hi_x)
    logits_new = logits_fn(x1, k_check)
    bad = bad | _checks.nonfinite(logits_new)
    is_adv = jnp.argmax(logits_new, -1) != y
    dist = _norm(flat(x1 - x), norm)
    better = is_adv & (dist < best)
    adv = jnp.where(ex(better), x1, adv)
    best = jnp.where(better, dist, best)
    x1 = jnp.where(ex(is_adv), x + (x1 - x) * beta, x1)
    return x1, adv, best, bad

  init = (x1, x, jnp.full((b,), jnp.inf, x.dtype), jnp.zeros((b,), bool))
  _, adv, best, bad = _loop.fori(num_steps, body, init, unroll)
  return jax.lax.stop_gradient(adv), best, bad


def fab_targeted(
  logits_fn: _checks.LogitsFn,
  key,
  x,
  y,
  *,
  epsilon=None,
  norm: str = 'linf',
  num_steps: int = 100,
  num_targets: int = 9,
  restarts: int = 1,
  alpha_max: float = 0.1,
  eta: float = 1.05,
  beta: float = 0.9,
  bounds=(0.0, 1.0),
  unroll=None,
  microbatch: int | None = None,
  return_distance: bool = False,
):
  """FAB-T (targeted Fast Adaptive Boundary), L∞ or L2.

  Args:
    logits_fn, key, x, y: as in `pgd`; y are the true labels. A single key is split into
      per-example keys, so results do not depend on which examples are still being attacked.
    epsilon: the budget: an example is done once an adversarial point within ε is found, and the
      output keeps x where none was found (AutoAttack's use). None: minimum-norm mode, every
      target runs on every example and the smallest adversarial point is kept.
    norm: 'linf' or 'l2'.
    num_steps: iterations per target and restart (100).
    num_targets: target classes, by clean logit after the top one (9).
    restarts: runs per target; runs after the first start from a random point at half of ε.
    alpha_max, eta, beta: the reference's 0.1, 1.05 and 0.9.
    bounds: (lo, hi).
    unroll, microbatch: as in `pgd`.
    return_distance: also return the norm of each example's best perturbation (inf if none).

  Returns:
    x_adv (and the distances with `return_distance`).
  """
  name = 'fab_targeted'
  _checks.check_norm(name, norm)
  minimum_norm = epsilon is None
  _checks.check_range(name, 'eta', eta, 1.0, float('inf'))
  _checks.check_range(name, 'beta', beta, 0.0, 1.0)
  _checks.check_inputs(
    logits_fn,
    x,
    y,
    name=name,
    key=key,
    bounds=bounds,
    values={'epsilon': None if minimum_norm else epsilon, 'alpha_max': alpha_max, 'eta': eta, 'beta': beta},
    counts={'num_steps': num_steps, 'num_targets': num_targets, 'restarts': restarts},
    min_classes=num_targets + 1,
  )
  f = _loop.as_pytree_fn(logits_fn)
  b = x.shape[0]
  example_keys, order, misclassified = _geometry.target_setup(f, key, x, y)
  eps = jnp.asarray(jnp.inf if minimum_norm else epsilon, x.dtype)
  best = jnp.where(misclassified, 0.0, jnp.inf).astype(x.dtype)
  x_adv = x
  static = dict(
    num_steps=num_steps, norm=norm, unroll=_loop.resolve_unroll(unroll, num_steps), microbatch=microbatch
  )
  for k in range(num_targets):
    target = order[:, -(k + 2)]
    for r in range(restarts):
      keys_kr = _attack_keys.fold_keys(_attack_keys.fold_keys(example_keys, k), r)
      done = misclassified | (best <= _geometry.bcast(eps, best)) if not minimum_norm else misclassified
      run = lambda idx: _fab_impl(
        f,
        keys_kr[idx],
        x[idx],
        y[idx],
        target[idx],
        _loop.take(eps, idx, b),
        _loop.take(bounds[0], idx, b),
        _loop.take(bounds[1], idx, b),
        alpha_max,
        eta,
        beta,
        random_start=r > 0,
        **static,
      )
      adv_k, dist_k, bad = _loop.on_subset(run, ~done, b)
      _checks.check_logits_finite(name, bad)
      better = ~done & (dist_k < best)
      x_adv = jnp.where(better.reshape((-1,) + (1,) * (x.ndim - 1)), adv_k, x_adv)
      best = jnp.where(better, dist_k, best)
  if not minimum_norm:  # only perturbations within the budget count
    within = best <= _geometry.bcast(eps, best)
    x_adv = jnp.where(within.reshape((-1,) + (1,) * (x.ndim - 1)), x_adv, x)
  x_adv = jax.lax.stop_gradient(x_adv)
  return (x_adv, best) if return_distance else x_adv
