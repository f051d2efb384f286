"""Build a model from its name in the config, and wrap it as an attack's `logits_fn`."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from jaxrobust.models import small_cnn, wide_resnet
from jaxrobust.models.common import STOCHASTIC

_REGISTRY: dict[str, Callable[..., Any]] = {
    'small_cnn': small_cnn.SmallCNN,
    'wrn34_1': wide_resnet.WRN34_1,
    'wrn34_10': wide_resnet.WRN34_10,
    'wrn16_4': wide_resnet.WRN16_4,
    'wrn_tiny': wide_resnet.WRN_TINY,
}


def register_model(name: str, constructor: Callable[..., Any]) -> None:
  """Adds a model constructor (a Linen class or partial) under `name`."""
  _REGISTRY[name] = constructor


def model_names() -> list[str]:
  return sorted(_REGISTRY)


def create_model(name: str, **kwargs):
  """Instantiates the model registered as `name` with the given fields.

  Raises:
    ValueError: for an unknown name, listing the known ones.
  """
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; known models: {", ".join(model_names())}')
  return _REGISTRY[name](**kwargs)


@dataclasses.dataclass(frozen=True)
class _ModelLogits:
  """Hashable `(variables, x, key) -> logits` for a model; equal models share compiled code."""
  model: Any
  train: bool = False

  def __call__(self, variables, x, key):
    return self.model.apply(variables, x, train=self.train, rngs={STOCHASTIC: key})


def make_logits_fn(model, variables, *, train: bool = False) -> jax.tree_util.Partial:
  """Returns `logits_fn(x, key) -> logits`, the pure closure that attacks take.

  It is a `jax.tree_util.Partial` whose leaves are the variables, so it can be passed to jitted
  code as an argument: parameters are not baked into compiled programs as constants (slower on
  CPU, perf-cpu.md) and new parameters of the same shapes do not recompile. BatchNorm uses
  running statistics (train=False). The key feeds every stochastic layer through the
  `stochastic` rng collection; deterministic models ignore it.
  """
  return jax.tree_util.Partial(_ModelLogits(model, train), variables)
