"""Input checks of every attack: the contract's types, and errors that name the attack and the argument.

The contract: `attack(logits_fn, key, x, y, **hyper) -> x_adv`, with `logits_fn(x, key) -> logits`
and x in [lo, hi] ([0, 1] by default). ε, step size and bounds may be scalars or per-example arrays.
Values are checked on the device in one reduction (`_value_summary`) when the call is outside `jit`,
and on shapes only while tracing.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.attacks._geometry import bcast


LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]


Attack = Callable[..., jax.Array]


Bounds = tuple[Any, Any]


def concrete(v) -> np.ndarray | None:
  """The value as numpy when it is concrete, None while tracing (checks then run at trace time
  on shapes only)."""
  if isinstance(v, jax.core.Tracer):
    return None
  try:
    return np.asarray(v)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
    return None


def _call(logits_fn, x, key):
  return logits_fn(x, key)


# One jitted wrapper for every shape query: its trace cache (unlike `jax.eval_shape`'s, which
# traces anew on every call) serves every `logits_fn` of the same structure.
_CALL = jax.jit(_call)


def logits_shape(logits_fn, x) -> tuple[int, ...]:
  """The shape of `logits_fn`'s output on inputs shaped like x (abstract evaluation).

  The function travels as an argument of one module-level callable, so JAX's trace cache serves
  every `logits_fn` of the same structure (a `Partial` with new parameters of the same shapes)
  without tracing the model again; a plain function is its own structure."""
  fn = logits_fn if isinstance(logits_fn, jax.tree_util.Partial) else jax.tree_util.Partial(logits_fn)
  spec = jax.ShapeDtypeStruct(tuple(x.shape), jnp.dtype(x.dtype))
  return tuple(_CALL.eval_shape(fn, spec, jax.random.key(0)).shape)


def num_classes_of(logits_fn, x) -> int:
  """Classes of `logits_fn` on inputs shaped like x."""
  return int(logits_shape(logits_fn, x)[-1])


def check_count(name: str, arg: str, v, minimum: int = 1) -> None:
  """An integer count (steps, restarts, EOT samples) of at least `minimum`."""
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
    raise ValueError(f'{name}: {arg} must be an integer, got {v!r} ({type(v).__name__})')
  if v < minimum:
    raise ValueError(f'{name}: {arg} must be >= {minimum}, got {v}')


def check_key(name: str, key, batch: int) -> None:
  """One PRNG key, or one key per example."""
  if key is None or isinstance(key, (int, float, np.integer)) or not hasattr(key, 'dtype'):
    raise ValueError(
      f'{name}: key must be a PRNG key (jax.random.key(seed)) or one key per example, got {key!r}'
    )
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    ok = key.ndim == 0 or (key.ndim == 1 and key.shape[0] == batch)
  else:
    ok = key.dtype == jnp.uint32 and (key.shape == (2,) or (key.ndim == 2 and key.shape[0] == batch))
  if not ok:
    raise ValueError(
      f'{name}: key must be one PRNG key or {batch} per-example keys (one per example '
      f'of x), got a key array of shape {key.shape} and dtype {key.dtype}'
    )


def check_range(name: str, arg: str, v, lo: float, hi: float) -> None:
  """A concrete scalar hyperparameter within [lo, hi] (skipped for a tracer)."""
  if isinstance(v, bool) or not isinstance(v, (int, float, np.number, jax.Array, np.ndarray)):
    raise ValueError(f'{name}: {arg} must be a number in [{lo}, {hi}], got {v!r}')
  c = concrete(v)
  if c is not None and not (np.all(c >= lo) and np.all(c <= hi)):
    raise ValueError(f'{name}: {arg} must be in [{lo}, {hi}], got {v}')


def _check_value(name: str, arg: str, v, x, b: int) -> None:
  if isinstance(v, bool):
    raise ValueError(f'{name}: {arg} must be a number, not a bool, got {v!r}')
  if isinstance(v, str) or (hasattr(v, 'dtype') and not jnp.issubdtype(v.dtype, jnp.number)):
    raise ValueError(f'{name}: {arg} must be a number or an array of numbers, got {v!r}')
  shape = jnp.shape(v)
  if shape not in ((), (b,), tuple(x.shape)):
    raise ValueError(f'{name}: {arg} must be a scalar or have shape ({b},), got shape {shape}')
  c = concrete(v)
  if c is None:
    return
  if np.any(np.isnan(c)):
    raise ValueError(f'{name}: {arg} is NaN')
  if np.any(np.isinf(c)):
    raise ValueError(f'{name}: {arg} must be finite, got {c.max() if np.any(c > 0) else c.min()}')
  if np.any(c < 0):
    raise ValueError(f'{name}: {arg} must be >= 0, got {c.min()}')


_NO_KEY = object()


def check_inputs(
  logits_fn,
  x,
  y,
  *,
  name: str,
  key=_NO_KEY,
  values: dict | None = None,
  counts: dict | None = None,
  bounds=(0.0, 1.0),
  min_classes: int = 1,
) -> None:
  """Raises ValueError naming the argument for bad inputs.

  Always checked (shapes and types, also under a caller's `jit`): x is a floating batch of at
  least one example, y holds one integer label per example, `logits_fn` returns (batch, classes),
  the key is one key or one per example, counts are integers >= 1, values and bounds are scalars
  or per-example arrays. Checked only on concrete arguments (not inside a caller's `jit`, where
  they are tracers): values finite and >= 0, bounds not NaN with lo <= hi, x finite and inside
  its bounds, labels in [0, classes).

  Args:
    name: the attack's name, which starts every message.
    key: the attack's key (checked when passed, even as None).
    values: non-negative finite quantities by argument name (epsilon, step_size, sigma, ...).
    counts: integer counts by argument name (num_steps, max_iterations, ...).
    bounds: (lo, hi) of x.
    min_classes: the fewest classes the attack's loss can work with (DLR: 3; 4 targeted).
  """
  if not hasattr(x, 'dtype') or not hasattr(x, 'shape'):
    raise ValueError(f'{name}: x must be an array, got {type(x).__name__}')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(
      f'{name}: x must be a floating-point array in [lo, hi], got dtype {x.dtype} '
      f'(scale uint8 pixels to [0, 1] first)'
    )
  if x.ndim < 2:
    raise ValueError(f'{name}: x must be a batch of shape (batch, ...), got shape {x.shape}')
  b = x.shape[0]
  if b == 0:
    raise ValueError(f'{name}: x is an empty batch (shape {x.shape})')
  if not hasattr(y, 'shape') or y.shape != (b,):
    raise ValueError(
      f'{name}: y must have shape ({b},) to match x of shape {x.shape}, '
      f'got {getattr(y, "shape", type(y).__name__)}'
    )
  if not jnp.issubdtype(y.dtype, jnp.integer):
    raise ValueError(f'{name}: y must hold integer labels, got dtype {y.dtype}')
  if key is not _NO_KEY:
    check_key(name, key, b)
  for arg, v in (counts or {}).items():
    check_count(name, arg, v)
  for arg, v in (values or {}).items():
    if v is not None and not callable(v):
      _check_value(name, arg, v, x, b)
  if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
    raise ValueError(f'{name}: bounds must be a pair (lo, hi), got {bounds!r}')
  for arg, v in (('bounds[0]', bounds[0]), ('bounds[1]', bounds[1])):
    if jnp.shape(v) not in ((), (b,), tuple(x.shape)):
      raise ValueError(f'{name}: {arg} must be a scalar or have shape ({b},), got shape {jnp.shape(v)}')
  out = logits_shape(logits_fn, x)
  if len(out) != 2 or out[0] != b:
    raise ValueError(
      f'{name}: logits_fn must return logits of shape ({b}, classes) for x of shape '
      f'{x.shape}, got shape {out}'
    )
  k = int(out[-1])
  if k < min_classes:
    raise ValueError(f'{name}: the loss needs at least {min_classes} classes, the model has {k}')
  lo, hi = concrete(bounds[0]), concrete(bounds[1])
  for arg, c in (('bounds[0]', lo), ('bounds[1]', hi)):
    if c is not None and np.any(np.isnan(c)):
      raise ValueError(f'{name}: {arg} is NaN')
  if lo is not None and hi is not None and np.any(lo > hi):
    raise ValueError(f'{name}: bounds must satisfy lo <= hi, got {bounds}')
  if isinstance(x, jax.core.Tracer) or isinstance(y, jax.core.Tracer):
    return
  # The value checks reduce on the device where x lives and bring back eight numbers, not x.
  with_bounds = lo is not None and hi is not None
  with jax.ensure_compile_time_eval():  # concrete x, y inside a caller's trace: checked too
    s = np.asarray(
      _value_summary(x, y, jnp.asarray(lo if with_bounds else 0.0), jnp.asarray(hi if with_bounds else 0.0))
    )
  has_nan, has_inf, xmin, xmax, below, above, ymin, ymax = s
  if has_nan or has_inf:
    raise ValueError(f'{name}: x contains {"NaN" if has_nan else "inf"}')
  if with_bounds and (below or above):
    assert lo is not None and hi is not None
    raise ValueError(
      f'{name}: x has values outside its bounds [{np.min(lo)}, {np.max(hi)}]: min {xmin:.4g}, '
      f'max {xmax:.4g}. Attacks work in pixel space; normalise inside the model.'
    )
  if ymin < 0 or ymax >= k:
    raise ValueError(
      f'{name}: label out of range: y spans [{int(ymin)}, {int(ymax)}], the model has {k} classes'
    )


@jax.jit
def _value_summary(x, y, lo, hi) -> jax.Array:
  """(any NaN, any inf, min, max, any below lo, any above hi, min label, max label) of a batch,
  as one small array."""
  lo_b, hi_b = bcast(lo, x), bcast(hi, x)
  flags = [
    jnp.isnan(x).any(),
    jnp.isinf(x).any(),
    jnp.nanmin(x),
    jnp.nanmax(x),
    (x < lo_b - 1e-6).any(),
    (x > hi_b + 1e-6).any(),
    y.min(),
    y.max(),
  ]
  return jnp.stack([jnp.asarray(f, jnp.float32) for f in flags])


def check_norm(name: str, norm: str) -> None:
  """The attacks' norms: 'linf' or 'l2'."""
  if norm not in ('linf', 'l2'):
    raise ValueError(f"{name}: unknown norm {norm!r}; use 'linf' or 'l2'")


def check_logits_finite(name: str, bad) -> None:
  """Raises when the attack met non-finite logits (`bad`: per-example flags from the program);
  inside a caller's `jit` the flags are tracers and the check is skipped."""
  c = concrete(bad)
  if c is not None and np.any(c):
    raise FloatingPointError(
      f'{name}: logits_fn returned non-finite logits (NaN or inf) for {int(np.sum(c))} of '
      f'{c.size} examples during the attack; the model is broken, its accuracy would be meaningless'
    )


def nonfinite(logits) -> jax.Array:
  """Per-example flag: any logit NaN or infinite."""
  return ~jnp.all(jnp.isfinite(logits), axis=-1)
