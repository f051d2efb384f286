"""Carlini–Wagner L2: tanh change of variables, margin loss with κ, Adam, binary search over c.

Follows the reference implementation (carlini/nn_robust_attacks `l2_attack.py`):
Adam and the modifier are reset at every binary-search step, the search aborts early when the
loss stalls, and the minimum-L2 successful example is kept per point. Unlike torchattacks, the
true class is masked with −∞, and unlike cleverhans' torch port, Adam is reset.

References:
  Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks", arXiv:1608.04644
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxrobust import keys
from jaxrobust.attacks import _attack_keys
from jaxrobust.attacks import _checks
from jaxrobust.attacks import _geometry
from jaxrobust.attacks import _loop
from jaxrobust.attacks._losses import margin

# x is mapped into the tanh box slightly shrunk, so arctanh stays finite at the box edges.
TANH_SHRINK = 0.999999
# The search's upper bound on c starts "not found" at NO_UPPER; below FOUND_UPPER a success has
# been seen, and c bisects between the bounds instead of growing tenfold (the reference's 1e10/1e9).
NO_UPPER = 1e10
FOUND_UPPER = 1e9


def _succeeded(logits, y, kappa, targeted):
  """Carlini's `compare`: the prediction after shifting the y logit by κ against the attack."""
  shift = jax.nn.one_hot(y, logits.shape[-1], dtype=logits.dtype) * kappa
  pred = jnp.argmax(logits - shift if targeted else logits + shift, -1)
  return pred == y if targeted else pred != y


@functools.partial(
  jax.jit, static_argnames=('max_iterations', 'binary_search_steps', 'targeted', 'abort_early', 'unroll')
)
def _cw_impl(
  logits_fn,
  key,
  x,
  y,
  initial_const,
  kappa,
  learning_rate,
  lo,
  hi,
  epsilon,
  *,
  max_iterations,
  binary_search_steps,
  targeted,
  abort_early,
  unroll,
):
  b = x.shape[0]
  lo, hi = _geometry.bcast(lo, x), _geometry.bcast(hi, x)
  span = hi - lo
  w0 = jnp.arctanh(((x - lo) / jnp.where(span > 0, span, 1.0) * 2 - 1) * TANH_SHRINK)
  to_x = lambda w: lo + span * (jnp.tanh(w) + 1) / 2
  _, model_key = _attack_keys.split_attack_key(key, b)
  opt = optax.adam(learning_rate)
  chunk = max(max_iterations // 10, 1)
  n_chunks = -(-max_iterations // chunk)
  red = tuple(range(1, x.ndim))

  def objective(w, c, k):
    xa = to_x(w)
    l2 = jnp.sum((xa - x) ** 2, axis=red)
    logits = logits_fn(xa, k)
    per = l2 - c * margin(logits, y, targeted=targeted, kappa=kappa)  # −margin = max(gap+κ, 0)
    return jnp.sum(per), (per, l2, logits, xa)

  grad_fn = jax.value_and_grad(objective, has_aux=True)

  def binary_step(s, outer):
    lower, upper, c, best_l2, best_x, bad = outer

    def step(i, carry):
      w, opt_state, step_l2, step_ok, best_l2, best_x, prev, bad, active = carry
      k = keys.search_step_model_key(model_key, s, i)
      (_, (per, l2, logits, xa)), g = grad_fn(w, c, k)
      bad = bad | _checks.nonfinite(logits)
      ok = _succeeded(logits, y, kappa, targeted)
      step_better = ok & (l2 < step_l2)
      step_l2, step_ok = jnp.where(step_better, l2, step_l2), step_ok | ok
      better = ok & (l2 < best_l2) & active
      best_l2 = jnp.where(better, l2, best_l2)
      best_x = jnp.where(better.reshape((-1,) + (1,) * (x.ndim - 1)), xa, best_x)
      if abort_early:
        # As the reference: the batch's summed objective decides, every tenth of the budget. A
        # per-example test froze examples just after they crossed the boundary, where their own
        # objective briefly rises, far from their minimum.
        check = i % chunk == 0
        total = jnp.sum(per)
        active = active & ~(check & (total > prev * 0.9999))
        prev = jnp.where(check, total, prev)
      upd, opt_state = opt.update(g, opt_state)
      w = jnp.where(active.reshape((-1,) + (1,) * (x.ndim - 1)), w + upd, w)
      return w, opt_state, step_l2, step_ok, best_l2, best_x, prev, bad, active

    def run_chunk(state):
      j, carry = state
      carry = _loop.fori(chunk, lambda i, cr: step(j * chunk + i, cr), carry, unroll)
      return j + 1, carry

    carry = (
      w0,
      opt.init(w0),
      jnp.full((b,), jnp.inf),
      jnp.zeros((b,), bool),
      best_l2,
      best_x,
      jnp.asarray(jnp.inf, x.dtype),
      bad,
      jnp.ones((b,), bool),
    )
    if unroll >= max_iterations:
      # Straight-line steps (XLA CPU: no loop around conv gradients); aborted examples are masked.
      carry = _loop.fori(max_iterations, step, carry, unroll)
    else:
      # Chunks of unrolled steps; the while loop stops once every example has aborted.
      _, carry = lax.while_loop(lambda st: (st[0] < n_chunks) & jnp.any(st[1][-1]), run_chunk, (0, carry))
    _, _, _, step_ok, best_l2, best_x, _, bad, _ = carry
    upper = jnp.where(step_ok, jnp.minimum(upper, c), upper)
    lower = jnp.where(step_ok, lower, jnp.maximum(lower, c))
    c = jnp.where(upper < FOUND_UPPER, (lower + upper) / 2, jnp.where(step_ok, c, c * 10))
    return lower, upper, c, best_l2, best_x, bad

  c0 = jnp.broadcast_to(jnp.asarray(initial_const, x.dtype), (b,))
  init = (
    jnp.zeros((b,), x.dtype),
    jnp.full((b,), NO_UPPER, x.dtype),
    c0,
    jnp.full((b,), jnp.inf, x.dtype),
    x,
    jnp.zeros((b,), bool),
  )
  straight = unroll >= max_iterations and binary_search_steps == 1
  _, _, _, best_l2, best_x, bad = _loop.fori(
    binary_search_steps, binary_step, init, binary_search_steps if straight else 1
  )
  # An L2 budget: points whose smallest adversarial example is farther than ε stay unperturbed.
  eps = jnp.broadcast_to(jnp.asarray(epsilon, x.dtype), (b,))
  keep = (jnp.sqrt(best_l2) <= eps).reshape((-1,) + (1,) * (x.ndim - 1))
  return lax.stop_gradient(jnp.where(keep, best_x, x)), bad


def cw_l2(
  logits_fn: _checks.LogitsFn,
  key,
  x,
  y,
  *,
  kappa: float = 0.0,
  initial_const: float = 1e-3,
  learning_rate: float = 1e-2,
  max_iterations: int = 10_000,
  binary_search_steps: int = 9,
  abort_early: bool = True,
  targeted: bool = False,
  bounds=(0.0, 1.0),
  epsilon=jnp.inf,
  unroll=None,
) -> jax.Array:
  """Carlini–Wagner L2: minimise ‖x′−x‖₂² + c·max(Z_y − max_{i≠y} Z_i + κ, 0), x′ = tanh-box(w).

  Args:
    logits_fn: `logits_fn(x, key) -> logits`.
    key: PRNG key (feeds stochastic models only; the attack itself is deterministic).
    x, y: inputs in `bounds` and labels (targets if `targeted`).
    kappa: confidence κ: success needs a logit margin of at least κ.
    initial_const: c₀ of the binary search (per-example search afterwards).
    learning_rate: Adam step size.
    max_iterations: Adam steps per binary-search step.
    binary_search_steps: outer steps over c; Adam and the modifier are reset at each.
    abort_early: stop the inner loop when the batch's summed objective has not dropped by 0.01% over a
      tenth of the budget.
    targeted: reach class y instead of leaving it.
    bounds: (lo, hi) box of the tanh change of variables.
    epsilon: optional L2 budget: examples whose best success is farther stay unperturbed, so
      accuracy on the output is accuracy at ‖δ‖₂ ≤ ε.
    unroll: unroll factor of the inner loop (`attacks.default_unroll`: straight-line up to 20
      steps on the CPU, else rolled). A loop that is not straight-line runs in chunks of a tenth
      of the budget inside a while loop that stops once every example has aborted.

  Returns:
    The minimum-L2 successful example per point, or x where none was found.

  Raises:
    ValueError: for bad input, naming the argument.
    FloatingPointError: when `logits_fn` returns non-finite logits during the attack.
  """
  _checks.check_inputs(
    logits_fn,
    x,
    y,
    name='cw_l2',
    key=key,
    bounds=bounds,
    values={'learning_rate': learning_rate, 'initial_const': initial_const, 'kappa': kappa},
    counts={'max_iterations': max_iterations, 'binary_search_steps': binary_search_steps},
  )
  c = _checks.concrete(epsilon)  # an L2 budget: inf (the default) means none
  if isinstance(epsilon, (str, bool, np.bool_)) or (c is not None and (np.any(c < 0) or np.any(np.isnan(c)))):
    raise ValueError(f'cw_l2: epsilon must be a number >= 0 (inf: no budget), got {epsilon!r}')
  unroll = _loop.resolve_unroll(unroll, max_iterations)
  x_adv, bad = _cw_impl(
    _loop.as_pytree_fn(logits_fn),
    key,
    x,
    y,
    initial_const,
    kappa,
    learning_rate,
    bounds[0],
    bounds[1],
    epsilon,
    max_iterations=max_iterations,
    binary_search_steps=binary_search_steps,
    targeted=targeted,
    abort_early=abort_early,
    unroll=unroll,
  )
  _checks.check_logits_finite('cw_l2', bad)
  return x_adv
