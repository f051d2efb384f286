"""Shared pieces of every attack: types, input checks, keys, projections, loops, gradients.

The contract: `attack(logits_fn, key, x, y, **hyper) -> x_adv`, with `logits_fn(x, key) -> logits`
and x in [lo, hi] ([0, 1] by default). ε, step size and bounds may be scalars or per-example arrays.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrobust import keys

LogitsFn = Callable[[jax.Array, jax.Array], jax.Array]
Attack = Callable[..., jax.Array]
Bounds = tuple[Any, Any]


# --------------------------------------------------------------------------------------- checks
def concrete(v) -> np.ndarray | None:
  """The value as numpy when it is concrete, None while tracing (checks then run at trace time
  on shapes only)."""
  if isinstance(v, jax.core.Tracer):
    return None
  try:
    return np.asarray(v)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError, TypeError):
    return None


def _output_shape(logits_fn, x):
  return jax.eval_shape(logits_fn, jax.ShapeDtypeStruct(x.shape, x.dtype), jax.random.key(0)).shape


@functools.lru_cache(maxsize=8)
def _output_shape_cached(logits_fn, shape, dtype):
  return _output_shape(logits_fn, jax.ShapeDtypeStruct(shape, dtype))


def logits_shape(logits_fn, x) -> tuple[int, ...]:
  """The shape of `logits_fn`'s output on inputs shaped like x (abstract evaluation, cached)."""
  try:
    return tuple(_output_shape_cached(logits_fn, tuple(x.shape), jnp.dtype(x.dtype)))
  except TypeError:  # unhashable logits_fn
    return tuple(_output_shape(logits_fn, x))


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


def target_setup(logits_fn, key, x, y):
  """What the targeted attacks of AutoAttack start from: per-example keys, the classes ordered by
  clean logit (ascending, so order[:, -2] is the runner-up), and the examples already misclassified.
  """
  b = x.shape[0]
  example_keys = per_example_keys(key, b)
  _, model_key = split_attack_key(example_keys, b)
  clean = logits_fn(x, model_key)
  return example_keys, jnp.argsort(clean, -1), jnp.argmax(clean, -1) != y


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


# ------------------------------------------------------------------------------ array helpers
def bcast(v, x) -> jax.Array:
  """A scalar, per-example (B,) or x-shaped value, broadcastable against x."""
  v = jnp.asarray(v, x.dtype)
  if v.ndim == 0 or v.shape == x.shape:
    return v
  return v.reshape((x.shape[0],) + (1,) * (x.ndim - 1))


def per_example_norm(v, norm: str) -> jax.Array:
  """‖v_i‖ per example, shape (B,)."""
  flat = v.reshape(v.shape[0], -1)
  if norm == 'linf':
    return jnp.max(jnp.abs(flat), axis=1)
  if norm == 'l2':
    return jnp.sqrt(jnp.sum(flat * flat, axis=1))
  raise ValueError(f'unknown norm {norm!r}; use linf or l2')


def project(delta, epsilon, norm: str) -> jax.Array:
  """Projects δ onto the ε-ball of `norm` (ε broadcast against δ)."""
  if norm == 'linf':
    return jnp.clip(delta, -epsilon, epsilon)
  n = per_example_norm(delta, 'l2').reshape((-1,) + (1,) * (delta.ndim - 1))
  factor = jnp.minimum(1.0, epsilon / jnp.maximum(n, 1e-12))
  return delta * factor


def project_and_clip(x_adv, x, epsilon, norm, lo, hi):
  """Back into the ε-ball around x, then into the box [lo, hi]. The box clip never leaves the
  ball: the ball is convex, contains x, and the box clip moves each coordinate toward x."""
  return jnp.clip(x + project(x_adv - x, epsilon, norm), lo, hi)


def normalize_step(g, norm: str) -> jax.Array:
  """Steepest-ascent direction of unit `norm`: sign(g) for L∞, g/‖g‖₂ for L2."""
  if norm == 'linf':
    return jnp.sign(g)
  n = per_example_norm(g, 'l2').reshape((-1,) + (1,) * (g.ndim - 1))
  return g / jnp.maximum(n, 1e-12)


# ------------------------------------------------------------------------------------ keys
def is_key_batch(key, batch: int) -> bool:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.ndim == 1 and key.shape[0] == batch
  return key.ndim == 2


def as_typed(key):
  return key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)


def split_attack_key(key, batch: int):
  """(noise keys, model key) from a single key or from per-example keys.

  With per-example keys (shape (B,)), each example's random start depends on its key only, so an
  example attacked alone equals the same example attacked inside a batch. The model key (for
  stochastic `logits_fn`) then comes from the first example's key.
  """
  key = as_typed(key)
  if is_key_batch(key, batch):
    noise = jax.vmap(lambda k: jax.random.fold_in(k, keys.TAG_EXAMPLE_NOISE))(key)
    return noise, jax.random.fold_in(key[0], keys.TAG_EXAMPLE_MODEL)
  k_noise, k_model = jax.random.split(key)
  return k_noise, k_model


def per_example_keys(key, batch: int):
  """One key per example: the given per-example keys, or fold_in(key, i) for example i."""
  key = as_typed(key)
  if is_key_batch(key, batch):
    return key
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batch))


def take(v, idx, batch: int):
  """`v[idx]` for a per-example array (leading size `batch`), else v (a scalar or shared value)."""
  if jnp.ndim(v) > 0 and jnp.shape(v)[0] == batch:
    return jnp.asarray(v)[idx]
  return v


def on_subset(fn, active, batch: int):
  """`fn(idx)` on the examples where `active`, scattered back into a batch of results.

  `fn(idx)` returns a pytree of per-example arrays for the examples `idx`. With a concrete mask,
  only the active examples are computed, padded to the next power of two (so that few programs
  are compiled); inactive rows of the result are zeros. Inside a caller's `jit` the whole batch
  is computed (`idx` = all examples).
  """
  mask = concrete(active)
  if mask is None:
    return fn(jnp.arange(batch))
  idx = np.flatnonzero(mask)
  if idx.size == 0:
    full = jax.eval_shape(fn, jnp.arange(1))
    return jax.tree.map(lambda s: jnp.zeros((batch,) + s.shape[1:], s.dtype), full)
  size = min(batch, 1 << int(np.ceil(np.log2(idx.size))))
  padded = np.concatenate([idx, np.full(size - idx.size, idx[-1])])
  out = fn(jnp.asarray(padded))
  return jax.tree.map(lambda a: jnp.zeros((batch,) + a.shape[1:], a.dtype).at[idx].set(a[: idx.size]), out)


def fold_keys(key, data):
  """fold_in for one key or, element-wise, for a batch of keys."""
  if key.ndim == 0:
    return jax.random.fold_in(key, data)
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)


def sample_like(key, x, sampler):
  """Draws `sampler(key, shape)` for the batch: from one key, or per example from a key batch."""
  if key.ndim == 1:
    return jax.vmap(lambda k: sampler(k, x.shape[1:]))(key).astype(x.dtype)
  return sampler(key, x.shape).astype(x.dtype)


def random_start(key, x, epsilon, norm: str, kind: str | None):
  """δ₀ in the ε-ball: 'uniform' (uniform in the L∞ cube / L2 ball), 'normal' (0.001·N(0,1),
  the TRADES start, projected), or None (δ₀ = 0)."""
  if kind is None or kind == 'none':
    return jnp.zeros_like(x)
  if kind == 'normal':
    return project(0.001 * sample_like(key, x, jax.random.normal), epsilon, norm)
  if kind != 'uniform':
    raise ValueError(f"unknown random_init {kind!r}; use 'uniform', 'normal' or None")
  if norm == 'linf':
    return epsilon * sample_like(key, x, lambda k, s: jax.random.uniform(k, s, minval=-1.0, maxval=1.0))
  # L2: uniform in the ball = uniform direction × radius ε·U^(1/d).
  d = int(np.prod(x.shape[1:]))
  g = sample_like(key, x, jax.random.normal)
  k_r = fold_keys(key, 1)
  u = (
    jax.vmap(lambda k: jax.random.uniform(k, ()))(k_r)
    if key.ndim == 1
    else jax.random.uniform(k_r, (x.shape[0],))
  ).astype(x.dtype)
  r = (u.reshape((-1,) + (1,) * (x.ndim - 1))) ** (1.0 / d)
  return epsilon * r * normalize_step(g, 'l2')


# ------------------------------------------------------------------------------ loops, grads
# The unroll factor that `set_default_unroll` put in place of the default (None: the default).
_UNROLL_OVERRIDE: list[int | None] = [None]
# Longest attack loop emitted as straight-line code on the CPU (compile time grows with it).
STRAIGHT_LINE_STEPS = 20


def set_default_unroll(unroll: int | None) -> None:
  """Sets the unroll factor of every attack loop called without `unroll=` (None restores the
  default of `default_unroll`). It changes the compiled programs, not the results beyond float
  reassociation; 1 favours compile time over run time (test suites of tiny models).

  Raises:
    ValueError: for anything but None or an integer ≥ 1.
  """
  if unroll is not None and (isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1):
    raise ValueError(f'set_default_unroll: unroll must be None or an integer >= 1, got {unroll!r}')
  _UNROLL_OVERRIDE[0] = unroll


def default_unroll(num_steps: int, eot_samples: int = 1) -> int:
  """Unroll factor for attack loops: on XLA's CPU backend straight-line code up to
  `STRAIGHT_LINE_STEPS` steps of a single-draw attack and a rolled loop otherwise; rolled (1) on
  GPU/TPU; or the factor that `set_default_unroll` set.

  Straight-line steps are for models built on plain `nn.Conv`, whose input gradients XLA's CPU
  backend runs as naive loop nests inside a loop (docs/performance.md, items 1 and 10).
  jaxrobust's own models (`models.Conv`) run as fast rolled, and a partial unroll helps no model,
  so long attacks stay rolled and compile in seconds. An EOT attack stays rolled at any length:
  each step holds its draws' gradients, and straight-line EOT loops compile many times slower
  (docs/performance.md, item 11).
  """
  if _UNROLL_OVERRIDE[0] is not None:
    return max(1, min(num_steps, _UNROLL_OVERRIDE[0]))
  if jax.default_backend() == 'cpu' and num_steps <= STRAIGHT_LINE_STEPS and eot_samples <= 1:
    return num_steps
  return 1


def resolve_unroll(unroll, num_steps: int, eot_samples: int = 1) -> int:
  if unroll is None:
    return default_unroll(num_steps, eot_samples)
  if unroll is True:
    return num_steps
  return max(1, int(unroll))


def fori(n: int, body, init, unroll: int):
  """lax.fori_loop with the unroll factor; a loop whose length equals the factor is emitted
  straight-line (no while op), which XLA's CPU backend needs for fast conv gradients."""
  if unroll >= n:
    carry = init
    for i in range(n):
      carry = body(i, carry)
    return carry
  return lax.fori_loop(0, n, body, init, unroll=unroll)


# Examples per gradient chunk when an attack loop is rolled on the CPU, chosen by measurement on
# the small CNN and WRN-16-4 (docs/performance.md, item 6).
AUTO_MICROBATCH = 64


def resolve_microbatch(microbatch, batch: int, *, eot_samples: int = 1, rolled: bool = False) -> int | None:
  """The chunk size of a gradient over `batch` examples, or None for the whole batch.

  `microbatch` None (the default) chooses: on XLA's CPU backend, inside a rolled attack loop and
  without EOT, chunks of AUTO_MICROBATCH examples, whose activations stay in cache
  (docs/performance.md item 6); the whole batch elsewhere.
  Straight-line loops keep the whole batch by default, since there each chunk would be a copy of
  the gradient per step in the compiled program; EOT gradients keep it too, since chunks of them
  help some models and slow others (PNI's kernels are drawn per chunk; `benchmarks/eot.py
  --chunks`). 0 is the whole batch; k > 0 chunks
  of k.
  """
  if microbatch is None:
    if not rolled or eot_samples > 1 or jax.default_backend() != 'cpu':
      return None
    microbatch = AUTO_MICROBATCH
  return microbatch if 0 < microbatch < batch else None


def _map_chunks(fn, x, y, key, size: int):
  """fn(x_chunk, y_chunk, key_chunk) over chunks of `size` examples under `lax.map` (one copy of
  fn in the program); the last chunk is padded with copies of the last example, dropped after.
  Chunk c draws with fold_in(key, c·size), as the straight-line chunks do."""
  b = x.shape[0]
  n = -(-b // size)
  pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], n * size - b, 0)]) if n * size > b else a
  chunks = lambda a: pad(a).reshape((n, size) + a.shape[1:])
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n) * size)
  out = lax.map(lambda a: fn(*a), (chunks(x), chunks(y), keys))
  return tuple(o.reshape((n * size,) + o.shape[2:])[:b] for o in out)


def loss_and_grad(
  logits_fn,
  loss_fn,
  x,
  y,
  key,
  eot_samples: int = 1,
  microbatch: int | None = None,
  mapped: bool = False,
):
  """Per-example loss, logits and ∇ₓ of the summed loss (examples are independent in eval mode).

  With eot_samples = S > 1, the loss, gradient and logits are averaged over S keys drawn from
  `key` under vmap: Expectation over Transformation, ∇E[L] ≈ (1/S)Σ∇L(f_{k_s}(x)).

  With `microbatch` (a chunk size, see `resolve_microbatch`), the batch is processed in chunks of
  that size, each chunk's model key folded from `key`: the same per-example results for a
  deterministic model, faster on XLA's CPU backend (docs/performance.md, item 6). The chunks are
  straight-line code, or with `mapped` one `lax.map` (for rolled attack loops: one copy of the
  gradient in the program). `loss_fn` must then be per-example in (logits, y).

  References:
    Athalye et al. 2018, "Synthesizing Robust Adversarial Examples", arXiv:1707.07397
  """
  b = x.shape[0]
  if microbatch and microbatch < b and mapped:
    one = lambda xx, yy, kk: loss_and_grad(logits_fn, loss_fn, xx, yy, kk, eot_samples)
    return _map_chunks(one, x, y, key, microbatch)
  if microbatch and microbatch < b:
    parts = [
      loss_and_grad(
        logits_fn,
        loss_fn,
        x[i : i + microbatch],
        y[i : i + microbatch],
        jax.random.fold_in(key, i),
        eot_samples,
      )
      for i in range(0, b, microbatch)
    ]
    return tuple(jnp.concatenate(t) for t in zip(*parts))

  def total(xx, k):
    logits = logits_fn(xx, k)
    per = loss_fn(logits, y)
    return jnp.sum(per), (per, logits)

  grad_fn = jax.value_and_grad(total, has_aux=True)
  if eot_samples == 1:
    (_, (per, logits)), g = grad_fn(x, key)
    return per, logits, g
  (_, (per, logits)), g = jax.vmap(grad_fn, in_axes=(None, 0))(x, jax.random.split(key, eot_samples))
  return per.mean(0), logits.mean(0), g.mean(0)


def as_pytree_fn(logits_fn):
  """Makes `logits_fn` a pytree so that it can be a jit argument: a `jax.tree_util.Partial`
  carries its parameters as leaves (no constants baked into the program, no retrace for new
  parameters); a plain function becomes a leafless Partial, keyed on its identity."""
  if isinstance(logits_fn, jax.tree_util.Partial):
    return logits_fn
  return jax.tree_util.Partial(logits_fn)


def success(logits, y, targeted: bool):
  """Per-example attack success: misclassified (untargeted) or predicted as the target."""
  pred = jnp.argmax(logits, -1)
  return pred == y if targeted else pred != y


# ---------------------------------------------------------------------- over several devices
SHARD_AXIS = 'data'


@functools.lru_cache(maxsize=64)
def _sharded_program(attack, devices: tuple):
  from jax.sharding import Mesh, PartitionSpec as P

  mesh = Mesh(np.array(devices), (SHARD_AXIS,))
  d = P(SHARD_AXIS)
  mapped = jax.shard_map(
    lambda f, k, x, y: attack(f, k, x, y), mesh=mesh, in_specs=(P(), d, d, d), out_specs=d, check_vma=False
  )
  return jax.jit(mapped)


def attack_over_devices(attack, logits_fn, keys_, x, y, devices=None):
  """`attack(logits_fn, keys_, x, y)` with the batch split over `devices` (default: all), by
  `shard_map` over a 1-D 'data' mesh; the batch is padded to a multiple of the device count with
  copies of its last example, whose results are dropped.

  With one key per example (`keys_` of shape (B,)) and a deterministic model, every example's
  result is the one it gets on a single device: each example's start comes from its own key, and
  its computation does not depend on the other examples (the attacks' contract, tested). A
  randomised model draws its noise from each shard's first key, so shards draw differently.
  """
  devices = tuple(jax.devices() if devices is None else devices)
  if len(devices) == 1:
    return attack(logits_fn, keys_, x, y)
  n, k = x.shape[0], len(devices)
  pad = (-n) % k
  if pad:
    rep = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])  # noqa: E731
    keys_, x, y = rep(keys_), rep(x), rep(y)
  return _sharded_program(attack, devices)(logits_fn, keys_, x, y)[:n]
