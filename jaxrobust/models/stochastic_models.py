"""The stochastic variants of our networks, and single-pass and Monte-Carlo prediction.

LWTA: a network with every activation replaced by stochastic LWTA (the authors' WRN-34), optionally
with IBP layers (`LWTAConv`, and `LWTADense` for the small CNN's hidden dense layer). PNI: every
conv and dense layer with parametric noise (the WRN stem and head included). `models/registry.py`
names each variant explicitly.

References:
  Panousis et al. 2022, "Stochastic Local Winner-Takes-All Networks Enable Profound Adversarial
  Robustness", arXiv:2112.02671
  He, Rakin & Fan 2019, "Parametric Noise Injection", arXiv:1811.09310
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrobust.counts import is_count
from jaxrobust.models.common import forward
from jaxrobust.models.ibp import LWTAConv, LWTADense
from jaxrobust.models.lwta import LWTA
from jaxrobust.models.pni import PNIConv, PNIDense
from jaxrobust.models.traits import model_traits


def lwta_network(
  base,
  *,
  ibp: bool = False,
  ibp_dense: bool = False,
  U: int = 2,
  temperature: float = 0.67,
  learn_temperature: bool = False,
  eval_temperature: float = 0.01,
  lwta_mode: str = 'auto',
  bayesian: bool = False,
  **kwargs,
) -> nn.Module:
  """`base` (a SmallCNN or WideResNet constructor) with LWTA activations.

  Args:
    base: the network constructor; it must take `act` (and `conv`, `dense` with `ibp`).
    ibp: use IBP convolutions (`LWTAConv`) in place of nn.Conv.
    ibp_dense: also replace the hidden dense layer by `LWTADense` (the small CNN).
    U, temperature, learn_temperature, eval_temperature, lwta_mode: the `LWTA` fields.
    bayesian: Gaussian weight posteriors in the IBP layers.
    **kwargs: the base network's own fields.
  """
  act = functools.partial(
    LWTA,
    U=U,
    temperature=temperature,
    learn_temperature=learn_temperature,
    eval_temperature=eval_temperature,
    mode=lwta_mode,
  )
  layers: dict[str, Any] = {}
  if ibp:
    layers['conv'] = functools.partial(LWTAConv, U=U, bayesian=bayesian)
  if ibp_dense:
    layers['dense'] = functools.partial(LWTADense, U=U, bayesian=bayesian)
  return base(act=act, **layers, **kwargs)


def pni_network(base, *, noisy_head: bool, channelwise: bool = False, **kwargs) -> nn.Module:
  """`base` with parametric noise in every conv and dense layer.

  Args:
    base: the network constructor (takes `conv`, `dense`, and `head` when `noisy_head`).
    noisy_head: the network has a separate `head` field (the small CNN) to make noisy too.
    channelwise: one noise scale per output channel instead of one per layer.
  """
  conv = functools.partial(PNIConv, channelwise=channelwise)
  dense = functools.partial(PNIDense, channelwise=channelwise)
  layers = {'conv': conv, 'dense': dense, **({'head': dense} if noisy_head else {})}
  return base(**layers, **kwargs)


def with_lwta_mode(
  model: nn.Module,
  mode: str = 'auto',
  *,
  eval_temperature: float | None = None,
  temperature: float | None = None,
) -> nn.Module:
  """The same model (same parameters) with every LWTA layer in `mode` (e.g. 'hard', the
  straight-through sampler; 'mean', the mean field) and, if given, another temperature at test
  time (`eval_temperature`) or for the relaxed and straight-through modes (`temperature`, which
  replaces a learned one). For the noise-free surrogate use `model.clone(deterministic=True)`.

  Raises:
    ValueError: for a model not declared an LWTA network, or a temperature that is not > 0.
  """
  if not model_traits(model).lwta:
    raise ValueError(f'with_lwta_mode: {type(model).__name__} is not declared an LWTA network')
  fields = {**model.act.keywords, 'mode': mode}
  for name, t in (('eval_temperature', eval_temperature), ('temperature', temperature)):
    if t is not None:
      if not t > 0:
        raise ValueError(f'with_lwta_mode: {name} must be > 0, got {t}')
      fields[name] = float(t)
  if temperature is not None:
    fields['learn_temperature'] = False
  return model.clone(act=functools.partial(LWTA, **fields))


@functools.partial(jax.jit, static_argnames=('model',))
def predict_single(model, variables, x, key):
  """Softmax of one stochastic forward pass (as the study evaluates)."""
  return jax.nn.softmax(forward(model.apply, variables, x, key), -1)


@functools.partial(jax.jit, static_argnames=('model', 'num_samples'))
def predict_mc(model, variables, x, key, num_samples: int = 8):
  """Monte-Carlo prediction: the softmax averaged over `num_samples` keys (vmap over keys).

  Raises:
    ValueError: if num_samples is not an integer >= 1 (the mean of no draws is NaN).
  """
  if not is_count(num_samples, 1):
    raise ValueError(f'predict_mc: num_samples must be an integer >= 1, got {num_samples!r}')
  keys = jax.random.split(key, num_samples)
  probs = jax.vmap(lambda k: jax.nn.softmax(forward(model.apply, variables, x, k), -1))(keys)
  return jnp.mean(probs, 0)
