"""Your model as an attack's `logits_fn`, compiled once: parameters as arguments.

An attack compiles the model into its program. What it compiles against is the `logits_fn`'s
*structure*: a `jax.tree_util.Partial(apply, params)` is a pytree whose leaves are the
parameters and whose structure is `apply` (compared by equality) plus the parameters' shapes and
dtypes. A second call with other parameters of the same shapes (a new checkpoint, a training
step, a sweep) reuses the compiled attack. A plain function or a `lambda x, key: model(x)` is a
pytree with no leaves, compared by identity, so every new closure compiles the whole attack
again, and its parameters are baked into the program as constants.

The adapters below build that `Partial` for four libraries, with an `apply` that compares equal
for models of the same architecture:

- `from_linen(module, variables)`: a Flax Linen module (`jaxrobust.models.make_logits_fn` is the
  same for the library's own models, which also carry their declared traits);
- `from_nnx(model)`: a Flax NNX module, split into its graph (static) and state (the leaves);
- `from_equinox(model)`: an Equinox module, partitioned into arrays (the leaves) and the rest;
- `from_haiku(transformed, params)`: a Haiku `transform`ed function and its parameters.

With `stochastic=True` the attack's `key` drives the model's randomness (Linen: the named rng
collections; NNX and Equinox: a `key` keyword of the model's call; Haiku: `apply`'s rng).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax


def _partial(fn: Callable, params: Any) -> jax.tree_util.Partial:
  return jax.tree_util.Partial(fn, params)


@dataclasses.dataclass(frozen=True)
class _Linen:
  module: Any
  rng_collections: tuple[str, ...]
  apply_kwargs: tuple[tuple[str, Any], ...]

  def __call__(self, variables, x, key):
    rngs = {name: jax.random.fold_in(key, i) for i, name in enumerate(self.rng_collections)}
    return self.module.apply(variables, x, rngs=rngs or None, **dict(self.apply_kwargs))


def from_linen(
  module, variables, *, rng_collections: tuple[str, ...] = (), **apply_kwargs
) -> jax.tree_util.Partial:
  """`logits_fn(x, key)` of a Linen module: `module.apply(variables, x, **apply_kwargs)`.

  Args:
    module: the (unbound) Linen module.
    variables: its variables ({'params': ..., 'batch_stats': ...}): the leaves.
    rng_collections: the rng collections the attack's key feeds (e.g. ('dropout',)); each gets
      its own key folded from it.
    **apply_kwargs: hashable keyword arguments of `apply` (e.g. `train=False`).
  """
  return _partial(_Linen(module, tuple(rng_collections), tuple(sorted(apply_kwargs.items()))), variables)


@dataclasses.dataclass(frozen=True)
class _NNX:
  graphdef: Any
  stochastic: bool

  def __call__(self, state, x, key):
    from flax import nnx

    model = nnx.merge(self.graphdef, state)
    return model(x, key=key) if self.stochastic else model(x)


def from_nnx(model, *, stochastic: bool = False) -> jax.tree_util.Partial:
  """`logits_fn(x, key)` of a Flax NNX module: `model(x)`, or `model(x, key=key)` when
  `stochastic` (the module draws its randomness from that key, e.g. `nnx.Dropout(...)(h,
  rngs=nnx.Rngs(dropout=key))`). The module's graph is static; its state is the leaves."""
  from flax import nnx

  graphdef, state = nnx.split(model)
  return _partial(_NNX(graphdef, stochastic), state)


@dataclasses.dataclass(frozen=True)
class _Equinox:
  static: Any
  per_example: bool
  stochastic: bool

  def __call__(self, arrays, x, key):
    import equinox as eqx

    model = eqx.combine(arrays, self.static)
    if not self.per_example:
      return model(x, key=key) if self.stochastic else model(x)
    if self.stochastic:
      return jax.vmap(lambda xi, k: model(xi, key=k))(x, jax.random.split(key, x.shape[0]))
    return jax.vmap(model)(x)


def from_equinox(model, *, per_example: bool = True, stochastic: bool = False) -> jax.tree_util.Partial:
  """`logits_fn(x, key)` of an Equinox module, its arrays as the leaves.

  Args:
    per_example: the module takes one example (Equinox's convention) and is vmapped over the
      batch; False for a module that takes the batch.
    stochastic: call it with `key=` (per example: split from the attack's key).
  """
  import equinox as eqx

  arrays, static = eqx.partition(model, eqx.is_array)
  return _partial(_Equinox(static, per_example, stochastic), arrays)


@dataclasses.dataclass(frozen=True)
class _Haiku:
  apply: Callable
  stochastic: bool

  def __call__(self, params, x, key):
    return self.apply(params, key if self.stochastic else None, x)


def from_haiku(transformed, params, *, stochastic: bool = False) -> jax.tree_util.Partial:
  """`logits_fn(x, key)` of a Haiku `hk.transform`ed function: `apply(params, rng, x)`, with the
  attack's key as `rng` when `stochastic` (None otherwise). Keep one `transformed` for all
  parameter sets: its `apply` is what compiled attacks compare."""
  return _partial(_Haiku(transformed.apply, stochastic), params)
