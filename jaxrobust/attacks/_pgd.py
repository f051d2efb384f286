"""FGSM/FGM and projected gradient descent (L∞ and L2) with restarts, schedules, losses and EOT.

References:
  Goodfellow et al. 2015, "Explaining and Harnessing Adversarial Examples", arXiv:1412.6572
  Madry et al. 2018, "Towards Deep Learning Models Resistant to Adversarial Attacks", arXiv:1706.06083
  Carlini & Wagner 2017 (margin loss, CW-L∞ as PGD on it), arXiv:1608.04644
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
from jaxrobust.attacks._losses import get_loss, min_classes


def _schedule_factor(schedule, t, n):
  if schedule is None or schedule == 'constant':
    return 1.0
  if schedule == 'cosine':
    return 0.5 * (1.0 + jnp.cos(jnp.pi * t / n))
  if schedule == 'linear':
    return 1.0 - t / n
  if callable(schedule):
    return schedule(t, n)
  raise ValueError(f"unknown step schedule {schedule!r}; use 'constant', 'cosine', 'linear' or a callable")


@functools.partial(
  jax.jit,
  static_argnames=(
    'num_steps',
    'norm',
    'loss',
    'random_init',
    'restarts',
    'targeted',
    'eot_samples',
    'unroll',
    'step_schedule',
    'microbatch',
  ),
)
def _pgd_impl(
  logits_fn,
  key,
  x,
  y,
  epsilon,
  step_size,
  lo,
  hi,
  kappa,
  *,
  num_steps,
  norm,
  loss,
  random_init,
  restarts,
  targeted,
  eot_samples,
  unroll,
  step_schedule,
  microbatch,
):
  eps = _geometry.bcast(epsilon, x)
  alpha = _geometry.bcast(step_size, x)
  lo, hi = _geometry.bcast(lo, x), _geometry.bcast(hi, x)
  loss_fn = get_loss(loss, targeted=targeted, kappa=kappa)
  noise_key, model_key = _attack_keys.split_attack_key(key, x.shape[0])
  rolled = unroll < num_steps
  chunk = _loop.resolve_microbatch(microbatch, x.shape[0], eot_samples=eot_samples, rolled=rolled)

  def one_restart(r):
    k_noise = _attack_keys.fold_keys(noise_key, r) if restarts > 1 else noise_key
    x0 = jnp.clip(x + _geometry.random_start(k_noise, x, eps, norm, random_init), lo, hi)

    def step(t, carry):
      xa, bad = carry
      k = jax.random.fold_in(jax.random.fold_in(model_key, r), t)
      _, logits, g = _loop.loss_and_grad(logits_fn, loss_fn, xa, y, k, eot_samples, chunk, rolled)
      a = alpha * _schedule_factor(step_schedule, t, num_steps)
      xa = _geometry.project_and_clip(xa + a * _geometry.normalize_step(g, norm), x, eps, norm, lo, hi)
      return xa, bad | _checks.nonfinite(logits)

    return _loop.fori(num_steps, step, (x0, jnp.zeros(x.shape[:1], bool)), unroll)

  if restarts == 1:
    x_adv, bad = one_restart(0)
    return jax.lax.stop_gradient(x_adv), bad
  candidates, bad = jax.vmap(one_restart)(jnp.arange(restarts))  # (R, B, ...)
  # Keep, per example, the most damaging restart: successful first, then the highest loss.
  k_eval = jax.random.fold_in(model_key, keys.TAG_RESTART_SELECTION)
  per, logits, _ = jax.vmap(lambda xa: _loop.loss_and_grad(logits_fn, loss_fn, xa, y, k_eval))(candidates)
  score = jnp.where(jax.vmap(lambda lg: _geometry.success(lg, y, targeted))(logits), jnp.inf, per)
  best = jnp.argmax(score, axis=0)  # (B,)
  x_adv = jnp.take_along_axis(candidates, best.reshape((1, -1) + (1,) * (x.ndim - 1)), axis=0)[0]
  return jax.lax.stop_gradient(x_adv), jnp.any(bad, 0) | jnp.any(jax.vmap(_checks.nonfinite)(logits), 0)


def pgd(
  logits_fn: _checks.LogitsFn,
  key,
  x,
  y,
  *,
  epsilon,
  step_size=None,
  num_steps: int = 10,
  norm: str = 'linf',
  loss='ce',
  kappa: float = 0.0,
  random_init: str | None = 'uniform',
  restarts: int = 1,
  targeted: bool = False,
  bounds=(0.0, 1.0),
  step_schedule=None,
  eot_samples: int = 1,
  unroll=None,
  microbatch: int | None = None,
) -> jax.Array:
  """Projected gradient ascent on `loss` inside the ε-ball of `norm`, clipped to `bounds`.

  L∞: x_{t+1} = clip Π_ε(x_t + α_t·sign ∇ₓL); L2: x_{t+1} = clip Π_ε(x_t + α_t·∇ₓL/‖∇ₓL‖₂).

  Args:
    logits_fn: `logits_fn(x, key) -> logits`; a `jax.tree_util.Partial` carries its parameters
      as jit arguments.
    key: a PRNG key, or one key per example (shape (B,)) for batch-independent random starts.
    x: inputs (B, ...), inside `bounds`.
    y: int labels (B,), or target classes if `targeted`.
    epsilon: radius, scalar or per-example (B,).
    step_size: α, scalar or (B,); default 2.5·ε/num_steps.
    num_steps: iterations (≥ 1).
    norm: 'linf' or 'l2'.
    loss: 'ce', 'margin' (CW, with `kappa`; PGD on it is CW-L∞), 'dlr', or a callable
      `(logits, y) -> (B,)` to maximise.
    random_init: 'uniform' (in the ball), 'normal' (x + 0.001·N(0,1), TRADES) or None.
    restarts: independent random starts run under vmap; per example the most damaging is kept.
    targeted: move toward the class y instead of away from it.
    bounds: (lo, hi), scalars or per-example arrays.
    step_schedule: None/'constant', 'cosine', 'linear', or `f(t, num_steps) -> factor`.
    eot_samples: average the gradient over this many keys (EOT), for stochastic models.
    unroll: loop unroll factor; default full on CPU up to 20 single-draw steps, rolled with EOT
      and on GPU/TPU (`attacks.default_unroll`).
    microbatch: compute gradients in straight-line chunks of this many examples (faster convs
      on CPU; the same results for a deterministic model); None or 0 = the whole batch.

  Returns:
    x_adv with ‖x_adv − x‖ ≤ ε and lo ≤ x_adv ≤ hi, passed through stop_gradient.

  Raises:
    ValueError: for bad input, naming the argument (see `check_inputs`), unknown norm, loss or
      init names, a loss that needs more classes than the model has.
    FloatingPointError: when `logits_fn` returns non-finite logits during the attack (checked
      when called outside a `jit`; see docs/evaluation.md on checks).

  References:
    Madry et al. 2018, arXiv:1706.06083
  """
  return _run_pgd(
    'pgd',
    logits_fn,
    key,
    x,
    y,
    epsilon=epsilon,
    step_size=step_size,
    num_steps=num_steps,
    norm=norm,
    loss=loss,
    kappa=kappa,
    random_init=random_init,
    restarts=restarts,
    targeted=targeted,
    bounds=bounds,
    step_schedule=step_schedule,
    eot_samples=eot_samples,
    unroll=unroll,
    microbatch=microbatch,
  )


def _run_pgd(
  name,
  logits_fn,
  key,
  x,
  y,
  *,
  epsilon,
  step_size,
  num_steps,
  norm,
  loss,
  kappa,
  random_init,
  restarts,
  targeted,
  bounds,
  step_schedule,
  eot_samples,
  unroll,
  microbatch,
):
  """Checks the arguments under the caller's `name`, runs the compiled program, checks its logits."""
  _checks.check_norm(name, norm)
  get_loss(loss)  # validates the name
  _checks.check_inputs(
    logits_fn,
    x,
    y,
    name=name,
    key=key,
    bounds=bounds,
    values={'epsilon': epsilon, 'step_size': step_size, 'kappa': kappa},
    counts={'num_steps': num_steps, 'restarts': restarts, 'eot_samples': eot_samples},
    min_classes=min_classes(loss, targeted),
  )
  if microbatch is not None:
    _checks.check_count(name, 'microbatch', microbatch, minimum=0)
  if step_size is None:
    step_size = 2.5 * jnp.asarray(epsilon) / num_steps
  x_adv, bad = _pgd_impl(
    _loop.as_pytree_fn(logits_fn),
    key,
    x,
    y,
    epsilon,
    step_size,
    bounds[0],
    bounds[1],
    kappa,
    num_steps=num_steps,
    norm=norm,
    loss=loss,
    random_init=random_init,
    restarts=restarts,
    targeted=targeted,
    eot_samples=eot_samples,
    unroll=_loop.resolve_unroll(unroll, num_steps, eot_samples),
    step_schedule=step_schedule,
    microbatch=microbatch,
  )
  _checks.check_logits_finite(name, bad)
  return x_adv


def fgsm(
  logits_fn: _checks.LogitsFn,
  key,
  x,
  y,
  *,
  epsilon,
  loss='ce',
  targeted: bool = False,
  bounds=(0.0, 1.0),
  eot_samples: int = 1,
  norm: str = 'linf',
  microbatch: int | None = None,
) -> jax.Array:
  """Fast Gradient Sign Method: x + ε·sign ∇ₓL, clipped (one PGD step of size ε, no start).

  With norm='l2' this is FGM: x + ε·∇ₓL/‖∇ₓL‖₂.

  References:
    Goodfellow et al. 2015, arXiv:1412.6572
  """
  return _run_pgd(
    'fgsm' if norm == 'linf' else 'fgm',
    logits_fn,
    key,
    x,
    y,
    epsilon=epsilon,
    step_size=epsilon,
    num_steps=1,
    norm=norm,
    loss=loss,
    kappa=0.0,
    random_init=None,
    restarts=1,
    targeted=targeted,
    bounds=bounds,
    step_schedule=None,
    eot_samples=eot_samples,
    unroll=None,
    microbatch=microbatch,
  )


def fgm(logits_fn: _checks.LogitsFn, key, x, y, *, epsilon, **kwargs) -> jax.Array:
  """Fast Gradient Method (L2): x + ε·∇ₓL/‖∇ₓL‖₂, clipped. See `fgsm`."""
  return fgsm(logits_fn, key, x, y, epsilon=epsilon, norm='l2', **kwargs)
