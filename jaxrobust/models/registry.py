"""Every model by name, registered explicitly; and a model wrapped as an attack's `logits_fn`."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax

from jaxrobust.counts import is_count
from jaxrobust.models.common import forward
from jaxrobust.models.small_cnn import SmallCNN
from jaxrobust.models.stochastic_models import lwta_network, pni_network
from jaxrobust.models.traits import DETERMINISTIC, LWTA_NETWORK, NOISY, ModelTraits, declare
from jaxrobust.models.wide_resnet import WRN16_4, WRN34_1, WRN34_5, WRN34_10, WRN_TINY

# Each entry: (constructor, traits). The traits are declared here, once, for evaluation to read.
_REGISTRY: dict[str, tuple[Callable[..., Any], ModelTraits]] = {
  # deterministic networks
  'small_cnn': (SmallCNN, DETERMINISTIC),
  'wrn34_1': (WRN34_1, DETERMINISTIC),
  'wrn34_5': (WRN34_5, DETERMINISTIC),
  'wrn34_10': (WRN34_10, DETERMINISTIC),
  'wrn16_4': (WRN16_4, DETERMINISTIC),
  'wrn_tiny': (WRN_TINY, DETERMINISTIC),  # tests
  # stochastic LWTA activations
  'small_cnn_lwta': (functools.partial(lwta_network, SmallCNN), LWTA_NETWORK),
  'wrn34_1_lwta': (functools.partial(lwta_network, WRN34_1), LWTA_NETWORK),
  'wrn34_5_lwta': (functools.partial(lwta_network, WRN34_5), LWTA_NETWORK),
  'wrn34_10_lwta': (functools.partial(lwta_network, WRN34_10), LWTA_NETWORK),
  'wrn16_4_lwta': (functools.partial(lwta_network, WRN16_4), LWTA_NETWORK),
  'wrn_tiny_lwta': (functools.partial(lwta_network, WRN_TINY), LWTA_NETWORK),
  # LWTA with IBP layers (the small CNN's hidden dense layer too)
  'small_cnn_ibp': (functools.partial(lwta_network, SmallCNN, ibp=True, ibp_dense=True), LWTA_NETWORK),
  'wrn34_1_ibp': (functools.partial(lwta_network, WRN34_1, ibp=True), LWTA_NETWORK),
  'wrn34_5_ibp': (functools.partial(lwta_network, WRN34_5, ibp=True), LWTA_NETWORK),
  'wrn34_10_ibp': (functools.partial(lwta_network, WRN34_10, ibp=True), LWTA_NETWORK),
  'wrn16_4_ibp': (functools.partial(lwta_network, WRN16_4, ibp=True), LWTA_NETWORK),
  'wrn_tiny_ibp': (functools.partial(lwta_network, WRN_TINY, ibp=True), LWTA_NETWORK),
  # parametric noise injection (the small CNN's separate head too)
  'small_cnn_pni': (functools.partial(pni_network, SmallCNN, noisy_head=True), NOISY),
  'wrn34_1_pni': (functools.partial(pni_network, WRN34_1, noisy_head=False), NOISY),
  'wrn16_4_pni': (functools.partial(pni_network, WRN16_4, noisy_head=False), NOISY),
  'wrn_tiny_pni': (functools.partial(pni_network, WRN_TINY, noisy_head=False), NOISY),
}


def model_names() -> list[str]:
  return sorted(_REGISTRY)


# The counts a model is built from, checked where every model is made: a zero or negative count
# would otherwise build a network with no classes or no channels, and fail (or not) far away.
_MIN_COUNTS = {'num_classes': 2, 'width': 1, 'widen': 1, 'base_width': 1}


def create_model(name: str, **kwargs):
  """Instantiates the model registered as `name` with the given fields, carrying the traits
  declared for it (`models/traits.py`).

  Raises:
    ValueError: for an unknown name, listing the known ones, or a count below its minimum
      (`num_classes` < 2, `width`, `widen` or `base_width` < 1).
  """
  if name not in _REGISTRY:
    raise ValueError(f'unknown model {name!r}; known models: {", ".join(model_names())}')
  for field, low in _MIN_COUNTS.items():
    v = kwargs.get(field, low)
    if not is_count(v, low):
      raise ValueError(f'create_model({name!r}): {field} must be an integer >= {low}, got {v!r}')
  build, traits = _REGISTRY[name]
  return declare(build(**kwargs), traits)


@dataclasses.dataclass(frozen=True)
class _ModelLogits:
  """Hashable `(variables, x, key) -> logits` for a model; equal models share compiled code."""

  model: Any

  def __call__(self, variables, x, key):
    return forward(self.model.apply, variables, x, key)

  @property
  def stochastic(self) -> bool | None:
    """The model's declared `stochastic` trait (None when it declares none), read by libraries
    that take a plain `logits_fn` and must know whether its key matters (certify/smoothing.py)."""
    traits = getattr(type(self.model), 'traits', None)
    return traits.stochastic if isinstance(traits, ModelTraits) else None


def make_logits_fn(model, variables) -> jax.tree_util.Partial:
  """Returns `logits_fn(x, key) -> logits`, the pure closure that attacks take.

  It is a `jax.tree_util.Partial` whose leaves are the variables, so it can be passed to jitted
  code as an argument: parameters are not baked into compiled programs as constants (slower on
  the CPU, docs/performance.md) and new parameters of the same shapes do not recompile. The model
  runs in eval mode (BatchNorm running statistics). The key feeds every stochastic layer through
  the `stochastic` rng collection; deterministic models ignore it.
  """
  return jax.tree_util.Partial(_ModelLogits(model), variables)
