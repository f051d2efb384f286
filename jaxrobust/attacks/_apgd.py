"""Auto-PGD (APGD-CE, APGD-DLR): step-size-free PGD with momentum and step-size halving.

The whole attack is one compiled program: checkpoints are fixed by the budget, so the halving
conditions are evaluated with masks, per example, inside the loop.

References:
  Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
  parameter-free attacks", arXiv:2003.01690 (fra31/auto-attack `autopgd_base.py`)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust import keys
from jaxrobust.attacks import _attack_keys
from jaxrobust.attacks import _checks
from jaxrobust.attacks import _geometry
from jaxrobust.attacks import _loop
from jaxrobust.attacks._losses import dlr_targeted_pair, get_loss, min_classes


def checkpoint_schedule(num_steps: int) -> np.ndarray:
  """Window length k at each iteration that ends a checkpoint window, 0 elsewhere.

  As auto-attack: the first window is ⌈0.22·N⌉ iterations; each next one shrinks by ⌈0.03·N⌉,
  down to ⌈0.06·N⌉.
  """
  k = max(int(0.22 * num_steps), 1)
  k_min = max(int(0.06 * num_steps), 1)
  decr = max(int(0.03 * num_steps), 1)
  out = np.zeros(num_steps, np.int32)
  counter = 0
  for i in range(num_steps):
    counter += 1
    if counter == k:
      out[i] = k
      k = max(k - decr, k_min)
      counter = 0
  return out


@functools.partial(
  jax.jit,
  static_argnames=('num_steps', 'norm', 'loss', 'targeted', 'eot_samples', 'unroll', 'rho', 'microbatch'),
)
def _apgd_impl(
  logits_fn,
  key,
  x,
  y,
  epsilon,
  lo,
  hi,
  target,
  *,
  num_steps,
  norm,
  loss,
  targeted,
  eot_samples,
  unroll,
  rho,
  microbatch,
):
  b = x.shape[0]
  eps, lo, hi = _geometry.bcast(epsilon, x), _geometry.bcast(lo, x), _geometry.bcast(hi, x)
  if target is None:
    loss_fn, labels = get_loss(loss, targeted=targeted), y
  else:  # AutoAttack's APGD-T: the targeted DLR between the true class and `target`
    loss_fn, labels = dlr_targeted_pair, jnp.stack([y, target], -1)
  noise_key, model_key = _attack_keys.split_attack_key(key, b)
  ex = lambda m: m.reshape((-1,) + (1,) * (x.ndim - 1))
  windows = jnp.asarray(checkpoint_schedule(num_steps))
  rolled = unroll < num_steps
  chunk = _loop.resolve_microbatch(microbatch, b, eot_samples=eot_samples, rolled=rolled)
  grad = lambda xx, k: _loop.loss_and_grad(logits_fn, loss_fn, xx, labels, k, eot_samples, chunk, rolled)

  x0 = jnp.clip(x + _geometry.random_start(noise_key, x, eps, norm, 'uniform'), lo, hi)
  l0, logits0, g0 = grad(x0, model_key)
  fooled0 = _geometry.success(logits0, y, targeted)
  hist = jnp.zeros((num_steps + 1, b), x.dtype).at[0].set(l0)  # hist[t+1] = loss after step t
  state = dict(
    x=x0,
    x_prev=x0,
    g=g0,
    step=2.0 * eps * jnp.ones_like(x),
    x_best=x0,
    g_best=g0,
    l_best=l0,
    x_adv=x0,
    fooled=fooled0,
    hist=hist,
    l_best_last=l0,
    reduced_last=jnp.ones((b,), bool),
    bad=_checks.nonfinite(logits0),
  )

  def body(i, s):
    a = jnp.where(i > 0, 0.75, 1.0)
    z = _geometry.project_and_clip(
      s['x'] + s['step'] * _geometry.normalize_step(s['g'], norm), x, eps, norm, lo, hi
    )
    x_new = _geometry.project_and_clip(
      s['x'] + a * (z - s['x']) + (1 - a) * (s['x'] - s['x_prev']), x, eps, norm, lo, hi
    )
    l, logits, g = grad(x_new, keys.step_model_key(model_key, i + 1))  # the start drew model_key itself
    fooled_now = _geometry.success(logits, y, targeted)
    x_adv = jnp.where(ex(fooled_now & ~s['fooled']), x_new, s['x_adv'])
    fooled = s['fooled'] | fooled_now
    better = l > s['l_best']
    x_best = jnp.where(ex(better), x_new, s['x_best'])
    g_best = jnp.where(ex(better), g, s['g_best'])
    l_best = jnp.where(better, l, s['l_best'])
    hist = s['hist'].at[i + 1].set(l)

    # Checkpoint: halve the step where fewer than ρ·k of the last k steps raised the loss, or
    # where the step was not halved last time and the best loss has not improved since.
    k = windows[i]
    t = jnp.arange(num_steps)
    in_window = (t > i - k) & (t <= i)
    increases = jnp.sum(jnp.where(in_window[:, None], hist[1:] > hist[:-1], False), axis=0)
    osc = increases <= k * rho
    no_impr = ~s['reduced_last'] & (s['l_best_last'] >= l_best)
    halve = (k > 0) & (osc | no_impr)
    at_ckpt = k > 0
    step = jnp.where(ex(halve), s['step'] / 2.0, s['step'])
    x_next = jnp.where(ex(halve), x_best, x_new)
    g_next = jnp.where(ex(halve), g_best, g)
    return dict(
      x=x_next,
      x_prev=s['x'],
      g=g_next,
      step=step,
      x_best=x_best,
      g_best=g_best,
      l_best=l_best,
      x_adv=x_adv,
      fooled=fooled,
      hist=hist,
      l_best_last=jnp.where(at_ckpt, l_best, s['l_best_last']),
      reduced_last=jnp.where(at_ckpt, osc | no_impr, s['reduced_last']),
      bad=s['bad'] | _checks.nonfinite(logits),
    )

  s = _loop.fori(num_steps, body, state, unroll)
  # A successful point is returned where it first succeeded; the others at their highest loss.
  x_out = jnp.where(ex(s['fooled']), s['x_adv'], s['x_best'])
  return jax.lax.stop_gradient(x_out), s['bad'], s['fooled']


def apgd(
  logits_fn: _checks.LogitsFn,
  key,
  x,
  y,
  *,
  epsilon,
  num_steps: int = 100,
  norm: str = 'linf',
  loss='ce',
  targeted: bool = False,
  bounds=(0.0, 1.0),
  eot_samples: int = 1,
  rho: float = 0.75,
  unroll=None,
  microbatch: int | None = None,
  return_x_unless_fooled: bool = False,
) -> jax.Array:
  """APGD: PGD with step size 2ε halved at checkpoints, momentum 0.75, and the best point kept.

  Args:
    logits_fn, key, x, y: as in `pgd` (key may be per example).
    epsilon: radius, scalar or (B,).
    num_steps: iterations (100 in AutoAttack).
    norm: 'linf' or 'l2'.
    loss: 'ce' (APGD-CE), 'dlr' (APGD-DLR), 'margin', or a callable.
    targeted: attack toward y.
    bounds: (lo, hi).
    eot_samples: EOT gradient samples (AutoAttack's `rand` version uses 20).
    rho: the oscillation threshold ρ of the step-size rule.
    unroll: unroll factor (default: full on CPU up to 20 single-draw steps; rolled with EOT).
    microbatch: gradient chunk size (see `pgd`).
    return_x_unless_fooled: return x itself for the points no iterate fooled (with EOT: the
      logits averaged over the draws), as the reference's `perturb` does; AutoAttack's rand
      version sets it, so a point the attack did not break is re-voted as itself.

  Returns:
    x_adv inside the ε-ball and bounds: the first successful iterate, else the highest-loss one
    (or x, with `return_x_unless_fooled`).

  Raises:
    ValueError: for bad input, naming the argument; DLR with fewer than 3 classes (4 targeted).
    FloatingPointError: when `logits_fn` returns non-finite logits during the attack.
  """
  _checks.check_norm('apgd', norm)
  get_loss(loss)
  _checks.check_range('apgd', 'rho', rho, 0.0, 1.0)
  _checks.check_inputs(
    logits_fn,
    x,
    y,
    name='apgd',
    key=key,
    bounds=bounds,
    values={'epsilon': epsilon},
    counts={'num_steps': num_steps, 'eot_samples': eot_samples},
    min_classes=min_classes(loss, targeted),
  )
  x_adv, bad, fooled = _apgd_impl(
    _loop.as_pytree_fn(logits_fn),
    key,
    x,
    y,
    epsilon,
    bounds[0],
    bounds[1],
    None,
    num_steps=num_steps,
    norm=norm,
    loss=loss,
    targeted=targeted,
    eot_samples=eot_samples,
    unroll=_loop.resolve_unroll(unroll, num_steps, eot_samples),
    rho=rho,
    microbatch=microbatch,
  )
  _checks.check_logits_finite('apgd', bad)
  if return_x_unless_fooled:
    return jnp.where(fooled.reshape((-1,) + (1,) * (x_adv.ndim - 1)), x_adv, jnp.asarray(x, x_adv.dtype))
  return x_adv


def apgd_targeted(
  logits_fn: _checks.LogitsFn,
  key,
  x,
  y,
  *,
  epsilon,
  num_steps: int = 100,
  num_targets: int = 9,
  norm: str = 'linf',
  bounds=(0.0, 1.0),
  eot_samples: int = 1,
  rho: float = 0.75,
  unroll=None,
  microbatch: int | None = None,
) -> jax.Array:
  """APGD-T: APGD on the targeted DLR loss against each of the `num_targets` classes with the
  highest clean logits after the top one, each run on the points that are still robust.

  The targeted DLR of AutoAttack uses the true class: −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2).
  Called with concrete arrays, each target runs only on the still-robust examples (padded to a
  power-of-two batch, so at most log₂(batch) programs are compiled); inside a caller's `jit`
  every target runs on the whole batch and only still-robust examples take its result. A single
  key is split into per-example keys (`fold_in(key, i)`), so results do not depend on which
  examples are still robust.

  Args:
    logits_fn, key, x, y: as in `apgd`; y are the true labels.
    epsilon: radius, scalar or (B,).
    num_steps: APGD iterations per target (100 in AutoAttack).
    num_targets: how many target classes (9 in AutoAttack; the model needs num_targets + 1).
    norm: 'linf' or 'l2'.
    bounds, eot_samples, rho, unroll, microbatch: as in `apgd`.

  Returns:
    x_adv: for each example the first target's successful point, or x where none succeeded.

  References:
    Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks", arXiv:2003.01690
  """
  name = 'apgd_targeted'
  _checks.check_norm(name, norm)
  _checks.check_range(name, 'rho', rho, 0.0, 1.0)
  _checks.check_inputs(
    logits_fn,
    x,
    y,
    name=name,
    key=key,
    bounds=bounds,
    values={'epsilon': epsilon},
    counts={'num_steps': num_steps, 'num_targets': num_targets, 'eot_samples': eot_samples},
    min_classes=max(4, num_targets + 1),
  )
  f = _loop.as_pytree_fn(logits_fn)
  b = x.shape[0]
  example_keys, order, fooled = _geometry.target_setup(f, key, x, y)  # misclassified points stay
  x_adv = x
  unroll = _loop.resolve_unroll(unroll, num_steps, eot_samples)
  static = dict(
    num_steps=num_steps,
    norm=norm,
    loss='dlr',
    targeted=False,
    eot_samples=eot_samples,
    unroll=unroll,
    rho=rho,
    microbatch=microbatch,
  )
  for k in range(num_targets):
    target = order[:, -(k + 2)]
    keys_k = _attack_keys.fold_keys(example_keys, k)
    run = lambda idx: _apgd_impl(
      f,
      keys_k[idx],
      x[idx],
      y[idx],
      _loop.take(epsilon, idx, b),
      _loop.take(bounds[0], idx, b),
      _loop.take(bounds[1], idx, b),
      target[idx],
      **static,
    )
    x_k, bad, fooled_k = _loop.on_subset(run, ~fooled, b)
    _checks.check_logits_finite(name, bad)
    new = ~fooled & fooled_k
    x_adv = jnp.where(new.reshape((-1,) + (1,) * (x.ndim - 1)), x_k, x_adv)
    fooled = fooled | new
  return jax.lax.stop_gradient(x_adv)
