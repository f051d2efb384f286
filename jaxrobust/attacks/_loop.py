"""How an attack loop is compiled: unroll factors (straight-line or rolled), gradient chunks,
subsets of a batch, and the loss gradient through `logits_fn`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxrobust import backend
from jaxrobust.attacks._checks import concrete


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
  if backend.cpu_paths() and num_steps <= STRAIGHT_LINE_STEPS and eot_samples <= 1:
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
    if not rolled or eot_samples > 1 or not backend.cpu_paths():
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


def as_pytree_fn(logits_fn):
  """Makes `logits_fn` a pytree so that it can be a jit argument: a `jax.tree_util.Partial`
  carries its parameters as leaves (no constants baked into the program, no retrace for new
  parameters); a plain function becomes a leafless Partial, keyed on its identity."""
  if isinstance(logits_fn, jax.tree_util.Partial):
    return logits_fn
  return jax.tree_util.Partial(logits_fn)
