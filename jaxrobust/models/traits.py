"""What a model is, declared where it is registered, read (never probed) by evaluation.

Whether a network draws noise in its forward pass decides how it is evaluated (one draw or many,
EOT attacks, a deterministic surrogate for transfer), and whether it has LWTA activations decides
which surrogates it has. Evaluation reads these facts from the model's declaration instead of
finding them out (running it twice, inspecting its fields): a model is stochastic because its
registry entry says so. `models/registry.py` declares every registered network; the published
checkpoint readers declare theirs; a model built by hand is declared with `declare`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import flax.linen as nn


class ModelTraits(NamedTuple):
  """A model's declared nature.

  Attributes:
    stochastic: its forward pass draws from the `stochastic` rng collection (LWTA winners, PNI
      weight noise, IBP gates); it has a `deterministic` field that turns every draw off.
    lwta: it has LWTA activations, so it also has a mean-field surrogate
      (`with_lwta_mode(model, 'mean')`).
  """

  stochastic: bool
  lwta: bool = False


DETERMINISTIC = ModelTraits(stochastic=False)
NOISY = ModelTraits(stochastic=True)  # stochastic layers without LWTA (PNI)
LWTA_NETWORK = ModelTraits(stochastic=True, lwta=True)


@functools.cache
def _declared_class(cls: type, traits: ModelTraits) -> type:
  # A subclass of the same name and fields: parameters, checkpoints and compiled code are those
  # of `cls`; only the class attribute `traits` is added.
  return type(cls.__name__, (cls,), {'traits': traits, '_undeclared': cls, '__module__': cls.__module__})


def declare(model: nn.Module, traits: ModelTraits) -> nn.Module:
  """The same model (same fields, same parameters) carrying `traits`.

  Args:
    model: an unbound Linen module.
    traits: what it is.

  Raises:
    TypeError: `traits` is not a `ModelTraits`.
  """
  if not isinstance(traits, ModelTraits):
    raise TypeError(f'declare: traits must be a ModelTraits, got {type(traits).__name__}')
  cls: type = getattr(type(model), '_undeclared', type(model))
  fields = {
    f.name: getattr(model, f.name)
    for f in dataclasses.fields(model)
    if f.init and f.name not in ('parent', 'name')
  }
  return _declared_class(cls, traits)(**fields)


def model_traits(model) -> ModelTraits:
  """The traits declared for `model` (by `create_model`, a checkpoint reader, or `declare`).

  Raises:
    ValueError: the model carries no declaration, naming the two ways to give it one.
  """
  traits = getattr(type(model), 'traits', None)
  if not isinstance(traits, ModelTraits):
    raise ValueError(
      f'model {type(model).__name__} declares no traits (is it stochastic?): build it with '
      f'jaxrobust.models.create_model(name), or declare them with '
      f'jaxrobust.models.declare(model, ModelTraits(stochastic=..., lwta=...))'
    )
  return traits
