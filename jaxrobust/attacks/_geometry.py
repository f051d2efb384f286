"""The threat model's geometry: per-example norms, projections onto the ε-ball and the input box,
normalised steps, random starts, targets and success.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.attacks._attack_keys import fold_keys, per_example_keys, sample_like, split_attack_key


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


def target_setup(logits_fn, key, x, y):
  """What the targeted attacks of AutoAttack start from: per-example keys, the classes ordered by
  clean logit (ascending, so order[:, -2] is the runner-up), and the examples already misclassified.
  """
  b = x.shape[0]
  example_keys = per_example_keys(key, b)
  _, model_key = split_attack_key(example_keys, b)
  clean = logits_fn(x, model_key)
  return example_keys, jnp.argsort(clean, -1), jnp.argmax(clean, -1) != y


def success(logits, y, targeted: bool):
  """Per-example attack success: misclassified (untargeted) or predicted as the target."""
  pred = jnp.argmax(logits, -1)
  return pred == y if targeted else pred != y
