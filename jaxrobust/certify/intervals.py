"""Interval bounds: every logit's range over an L∞ box around the input, for any JAX function.

`propagate_box(fn, box, *exact)` traces `fn` to a jaxpr and evaluates it on intervals: a value is
either exact (parameters, constants) or an `Interval(lower, upper)`. Affine operations with exact
weights (`conv_general_dilated`, `dot_general`, multiplication by an exact value) map the centre
through the operation and the radius through its absolute value; monotone operations (ReLU as
`max`, max pooling as `reduce_max`, `exp`, `tanh`, reshapes, sums) map each end; the rest of the
arithmetic has its textbook interval rule. Primitives whose interval rule this module does not
know are refused by name (`NotImplementedError`), never approximated. Nested programs (`jit`,
custom derivatives such as `models.Conv`'s) are evaluated inside. Because the rules act on
primitives, the bounds follow the model's own forward pass, normalisation included, and work
under `jit`, `grad` (certified training differentiates them) and `vmap`.

These are the interval bounds of Gowal et al.; the acronym "IBP" is not used here because the
package uses it for the Indian Buffet Process prior of LWTA.

References:
  Gowal et al. 2018, On the Effectiveness of Interval Bound Propagation for Training Verifiably
    Robust Models, arXiv:1810.12715
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jcore
import numpy as np

from jaxrobust.attacks._checks import concrete


class Interval(NamedTuple):
  """Elementwise lower and upper ends of the same shape."""

  lower: jax.Array
  upper: jax.Array


def _box(v) -> Interval:
  return v if isinstance(v, Interval) else Interval(v, v)


def _bind(eqn, *args):
  # jax ≥ 0.7 returns the parameters alone; earlier versions (subfunctions, parameters).
  bound = eqn.primitive.get_bind_params(eqn.params)
  subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
  with eqn.ctx.manager:
    return eqn.primitive.bind(*subfuns, *args, **params)


def _listed(eqn, out):
  return list(out) if eqn.primitive.multiple_results else [out]


# Each end maps through the operation (monotone nondecreasing in every interval argument; the
# other arguments, if any, exact).
_MONOTONE = {
  'reshape', 'broadcast_in_dim', 'transpose', 'squeeze', 'expand_dims', 'convert_element_type',
  'slice', 'dynamic_slice', 'concatenate', 'pad', 'reduce_sum', 'reduce_max', 'reduce_min', 'max',
  'min', 'add', 'add_any', 'copy', 'copy_p', 'rev', 'reduce_window_max', 'reduce_window_min',
  'reduce_window_sum', 'cumsum', 'cummax', 'cummin', 'exp', 'exp2', 'log', 'log1p', 'expm1',
  'tanh', 'logistic', 'sqrt', 'cbrt', 'erf', 'atan', 'asinh', 'floor', 'ceil', 'round', 'sign',
  'reduce_precision', 'gather', 'dynamic_update_slice', 'select_n',
}  # fmt: skip
_NESTED = {
  'jit',
  'pjit',
  'closed_call',
  'core_call',
  'custom_jvp_call',
  'custom_vjp_call',
  'remat',
  'checkpoint',
}
_BILINEAR = {'dot_general', 'conv_general_dilated'}


def _products(a: Interval, b: Interval, op) -> Interval:
  ends = [op(p, q) for p in (a.lower, a.upper) for q in (b.lower, b.upper)]
  return Interval(
    jnp.minimum(jnp.minimum(ends[0], ends[1]), jnp.minimum(ends[2], ends[3])),
    jnp.maximum(jnp.maximum(ends[0], ends[1]), jnp.maximum(ends[2], ends[3])),
  )


def _square(a: Interval) -> Interval:
  lo2, hi2 = a.lower * a.lower, a.upper * a.upper
  straddles = (a.lower < 0) & (a.upper > 0)
  return Interval(jnp.where(straddles, 0.0, jnp.minimum(lo2, hi2)), jnp.maximum(lo2, hi2))


def _rule(eqn, ins: list) -> list:
  """The interval outputs of one equation some of whose inputs are intervals."""
  name = eqn.primitive.name
  if name in _NESTED:
    inner = eqn.params.get('call_jaxpr') or eqn.params.get('jaxpr')
    return _evaluate(inner.jaxpr, inner.consts, ins)
  if name == 'optimization_barrier':
    return ins
  if name in _MONOTONE:
    if name == 'select_n' and isinstance(ins[0], Interval):
      raise NotImplementedError(
        'interval bounds: select_n with a bounded predicate (a comparison of bounded values)'
      )
    if name in ('gather', 'dynamic_slice') and any(isinstance(i, Interval) for i in ins[1:]):
      raise NotImplementedError(f'interval bounds: {name} with bounded indices')
    lo = [i.lower if isinstance(i, Interval) else i for i in ins]
    hi = [i.upper if isinstance(i, Interval) else i for i in ins]
    return [Interval(a, b) for a, b in zip(_listed(eqn, _bind(eqn, *lo)), _listed(eqn, _bind(eqn, *hi)))]
  if name == 'neg':
    (a,) = ins
    return [Interval(-a.upper, -a.lower)]
  if name == 'sub':
    a, b = (_box(i) for i in ins)
    return [Interval(a.lower - b.upper, a.upper - b.lower)]
  if name == 'mul':
    return [_products(_box(ins[0]), _box(ins[1]), lax.mul)]
  if name == 'div':
    # The ends of a quotient are among the four end quotients only when the divisor keeps one
    # sign; a divisor whose range holds 0 makes the quotient unbounded (1/x on [−1, 1] reaches
    # every real), so its bound is (−∞, ∞), which `verified` counts as not verified.
    a, b = _box(ins[0]), _box(ins[1])
    q = _products(a, b, lax.div)
    holds_zero = (b.lower <= 0) & (b.upper >= 0)
    inf = jnp.asarray(jnp.inf, q.lower.dtype)
    return [Interval(jnp.where(holds_zero, -inf, q.lower), jnp.where(holds_zero, inf, q.upper))]
  if name in _BILINEAR:
    a, b = ins
    if isinstance(a, Interval) and isinstance(b, Interval):
      raise NotImplementedError(f'interval bounds: {name} of two bounded operands')
    if isinstance(a, Interval):
      c, r = (a.upper + a.lower) / 2, (a.upper - a.lower) / 2
      mid, rad = _bind(eqn, c, b), _bind(eqn, r, jnp.abs(b))
    else:
      c, r = (b.upper + b.lower) / 2, (b.upper - b.lower) / 2
      mid, rad = _bind(eqn, a, c), _bind(eqn, jnp.abs(a), r)
    return [Interval(mid - rad, mid + rad)]
  if name == 'integer_pow':
    (a,) = ins
    k = eqn.params['y']
    if k > 0 and k % 2 == 1:  # odd positive powers increase; negative ones jump at 0 (refused)
      return [Interval(_bind(eqn, a.lower), _bind(eqn, a.upper))]
    if k == 2:
      return [_square(a)]
  if name == 'square':
    return [_square(ins[0])]
  if name == 'abs':
    (a,) = ins
    return [_abs(a)]
  if name == 'rsqrt':
    (a,) = ins
    return [Interval(lax.rsqrt(a.upper), lax.rsqrt(a.lower))]
  raise NotImplementedError(f'interval bounds: no interval rule for the primitive {name!r}')


def _abs(a: Interval) -> Interval:
  straddles = (a.lower < 0) & (a.upper > 0)
  lo = jnp.where(straddles, 0.0, jnp.minimum(jnp.abs(a.lower), jnp.abs(a.upper)))
  return Interval(lo, jnp.maximum(jnp.abs(a.lower), jnp.abs(a.upper)))


def _evaluate(jaxpr, consts, args) -> list:
  env: dict = {}

  def read(v):
    return v.val if isinstance(v, jcore.Literal) else env[v]

  for v, c in zip(jaxpr.constvars, consts):
    env[v] = c
  for v, a in zip(jaxpr.invars, args):
    env[v] = a
  for eqn in jaxpr.eqns:
    ins = [read(v) for v in eqn.invars]
    if any(isinstance(i, Interval) for i in ins):
      outs = _rule(eqn, ins)
    else:
      outs = _listed(eqn, _bind(eqn, *ins))
    for v, o in zip(eqn.outvars, outs):
      env[v] = o
  return [read(v) for v in jaxpr.outvars]


def propagate_box(fn: Callable, box: Interval, *exact: Any):
  """Bounds of `fn(*exact, x)` over every x with box.lower ≤ x ≤ box.upper.

  Args:
    fn: a JAX function of exact arguments (pytrees: parameters, constants) and one array x.
    box: the input's elementwise range.
    *exact: the exact arguments, passed before x.

  Returns:
    The output pytree of `fn` with each array leaf an `Interval` (an exact leaf, one that does not
    depend on x, as a degenerate interval).

  Raises:
    NotImplementedError: `fn` uses a primitive without an interval rule (named), or one whose
      rule needs an exact operand where both are bounded.
  """
  lower, upper = jnp.asarray(box.lower), jnp.asarray(box.upper)
  if lower.shape != upper.shape:
    raise ValueError(f'box: lower {lower.shape} and upper {upper.shape} differ in shape')
  spec = lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a))
  closed, out_shape = jax.make_jaxpr(lambda e, x: fn(*e, x), return_shape=True)(
    jax.tree.map(spec, exact), spec(lower)
  )
  args = jax.tree.leaves(exact) + [Interval(lower, upper)]
  outs = _evaluate(closed.jaxpr, closed.consts, args)
  return jax.tree.unflatten(jax.tree.structure(out_shape), [_box(o) for o in outs])


def _check_domain(bounds):
  lo, hi = bounds
  ends = [concrete(v) for v in (lo, hi)]
  if all(e is not None for e in ends) and not (np.isfinite(ends).all() and ends[0] <= ends[1]):
    raise ValueError(f'bounds must be finite with lower ≤ upper, got {bounds!r}')
  return lo, hi


def linf_box(x, epsilon, bounds=(0.0, 1.0)) -> Interval:
  """The L∞ ball of radius ε around x, intersected with the input domain `bounds`.

  Raises:
    ValueError: for a concrete ε that is negative or not finite (the box would be inverted).
  """
  eps = concrete(epsilon)
  if eps is not None and not (np.isfinite(eps).all() and (eps >= 0).all()):
    raise ValueError(f'epsilon must be finite and ≥ 0, got {epsilon!r}')
  lo, hi = _check_domain(bounds)
  return Interval(jnp.clip(x - epsilon, lo, hi), jnp.clip(x + epsilon, lo, hi))


def interval_bounds(apply_fn: Callable, variables, x, epsilon, *, bounds=(0.0, 1.0)) -> Interval:
  """Lower and upper logits of `apply_fn(variables, x')` over ‖x' − x‖∞ ≤ ε inside `bounds`.

  Args:
    apply_fn: `apply_fn(variables, x) -> logits`, a deterministic model's forward (a Flax
      module's `apply` in inference mode: BatchNorm's running statistics are then exact values).
    variables: the model's variables.
    x: inputs (B, ...) in `bounds`.
    epsilon: the L∞ radius, scalar or broadcastable to x (≥ 0).
    bounds: the input domain the box is clipped to.

  Returns:
    `Interval(lower, upper)`, each (B, num_classes).

  Raises:
    ValueError: x outside `bounds` or not finite, non-finite `bounds` or ε, or variables that
      hold NaN or infinite values (their bounds would be NaN, and NaN is never verified: an
      accuracy of 0 from a broken model).
  """
  for leaf in jax.tree.leaves(variables):
    c = concrete(leaf)
    if c is not None and np.issubdtype(np.asarray(c).dtype, np.floating) and not np.isfinite(c).all():
      raise ValueError('interval bounds: variables hold non-finite values')
  _check_domain(bounds)
  if not np.shape(x) or np.shape(x)[0] == 0:
    raise ValueError(f'interval bounds: x must be a non-empty batch (B, ...), got shape {np.shape(x)}')
  cx = concrete(x)
  if cx is not None:
    # A box clipped to the domain would not contain a point outside it: the bound would be unsound.
    if not np.isfinite(cx).all():
      raise ValueError('interval bounds: x holds non-finite values')
    lo, hi = bounds
    if cx.min() < lo or cx.max() > hi:
      raise ValueError(f'interval bounds: x must lie in bounds [{lo}, {hi}], got [{cx.min()}, {cx.max()}]')
  return propagate_box(apply_fn, linf_box(jnp.asarray(x), epsilon, bounds), variables)


def _check_labels(bounds: Interval, y) -> None:
  batch, classes = bounds.lower.shape[0], bounds.lower.shape[-1]
  y = jnp.asarray(y)
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise TypeError(f'interval bounds: y must hold integer labels, got dtype {y.dtype}')
  if y.shape != (batch,):
    raise ValueError(f'interval bounds: y must have shape ({batch},), got {y.shape}')
  cy = concrete(y)
  if cy is not None and batch and (cy.min() < 0 or cy.max() >= classes):
    raise ValueError(f'interval bounds: y must be labels in [0, {classes}), got [{cy.min()}, {cy.max()}]')


def worst_case_logits(bounds: Interval, y) -> jax.Array:
  """The logits that the box can make worst for label y: the true class at its lower end, every
  other class at its upper end. Its cross-entropy is the certified-training loss; its argmax is y
  only if every point of the box is classified y."""
  onehot = jax.nn.one_hot(y, bounds.lower.shape[-1], dtype=bool)
  return jnp.where(onehot, bounds.lower, bounds.upper)


def verified(bounds: Interval, y) -> jax.Array:
  """Per example: True when the lower bound of the true logit exceeds the upper bound of every
  other logit, so no input in the box is misclassified."""
  _check_labels(bounds, y)
  for end in bounds:
    c = concrete(end)
    if c is not None and np.isnan(c).any():
      raise ValueError('interval bounds: NaN bounds (a NaN in the model or its inputs) verify nothing')
  z = worst_case_logits(bounds, y)
  true = jnp.take_along_axis(z, jnp.asarray(y)[:, None], -1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, z.shape[-1], dtype=bool), -jnp.inf, z)
  return true > others.max(-1)


def verified_accuracy(apply_fn: Callable, variables, x, y, epsilon, *, bounds=(0.0, 1.0)) -> jax.Array:
  """The share of examples verified robust at L∞ radius ε (a lower bound on robust accuracy)."""
  return verified(interval_bounds(apply_fn, variables, x, epsilon, bounds=bounds), y).mean()
