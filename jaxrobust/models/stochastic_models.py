"""The stochastic models. LWTA: WRN-34 with every ReLU replaced by LWTA (the authors' model), a WRN with IBP
convolution layers, and LWTA / IBP versions of the small CNN. PNI: every conv and dense layer
(the WRN stem and head included) with parametric noise. Plus single-pass and Monte-Carlo
prediction.

References:
  Panousis et al. 2022, "Stochastic Local Winner-Takes-All Networks Enable Profound Adversarial
  Robustness", arXiv:2112.02671
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxrobust.models import registry
from jaxrobust.models.common import STOCHASTIC
from jaxrobust.models.ibp import LWTAConv, LWTADense
from jaxrobust.models.lwta import LWTA
from jaxrobust.models.pni import PNIConv, PNIDense
from jaxrobust.models.small_cnn import SmallCNN
from jaxrobust.models.wide_resnet import WideResNet

_LWTA_KEYS = ('U', 'temperature', 'learn_temperature', 'eval_temperature', 'lwta_mode')


def _split_lwta_kwargs(kwargs):
  lw = {k: kwargs.pop(k) for k in _LWTA_KEYS if k in kwargs}
  if 'lwta_mode' in lw:
    lw['mode'] = lw.pop('lwta_mode')
  return lw


def _lwta_factory(base, ibp: bool = False, **fixed):
  def build(**kwargs):
    lw = _split_lwta_kwargs(kwargs)
    u = lw.get('U', 2)
    bayesian = kwargs.pop('bayesian', False)
    extra = {}
    if ibp:
      extra['conv'] = functools.partial(LWTAConv, U=u, bayesian=bayesian)
      if base is SmallCNN:
        extra['dense'] = functools.partial(LWTADense, U=u, bayesian=bayesian)
    return base(act=functools.partial(LWTA, **lw), **fixed, **extra, **kwargs)
  return build


def with_lwta_mode(model: nn.Module, mode: str) -> nn.Module:
  """The same model (same parameters) with every LWTA layer in `mode` ('argmax' gives the
  deterministic surrogate for transfer attacks; 'hard' the straight-through sampler)."""
  act = model.act
  if not (isinstance(act, functools.partial) and act.func is LWTA):
    raise ValueError('with_lwta_mode: the model has no LWTA activation')
  return model.clone(act=functools.partial(LWTA, **{**act.keywords, 'mode': mode}))


for _name, _base, _fixed in [('wrn34_1', WideResNet, dict(depth=34, widen=1)),
                             ('wrn34_5', WideResNet, dict(depth=34, widen=5)),
                             ('wrn34_10', WideResNet, dict(depth=34, widen=10)),
                             ('wrn16_4', WideResNet, dict(depth=16, widen=4)),
                             ('wrn_tiny', WideResNet, dict(depth=10, widen=1)),
                             ('small_cnn', SmallCNN, {})]:
  registry.register_model(f'{_name}_lwta', _lwta_factory(_base, **_fixed))
  registry.register_model(f'{_name}_ibp', _lwta_factory(_base, ibp=True, **_fixed))


def _pni_factory(base, **fixed):
  def build(channelwise: bool = False, **kwargs):
    conv = functools.partial(PNIConv, channelwise=channelwise)
    dense = functools.partial(PNIDense, channelwise=channelwise)
    extra = {'dense': dense, 'head': dense} if base is SmallCNN else {'dense': dense}
    return base(conv=conv, **extra, **fixed, **kwargs)
  return build


for _name, _base, _fixed in [('wrn34_1', WideResNet, dict(depth=34, widen=1)),
                             ('wrn16_4', WideResNet, dict(depth=16, widen=4)),
                             ('wrn_tiny', WideResNet, dict(depth=10, widen=1)),
                             ('small_cnn', SmallCNN, {})]:
  registry.register_model(f'{_name}_pni', _pni_factory(_base, **_fixed))


@functools.partial(jax.jit, static_argnames=('model',))
def predict_single(model, variables, x, key):
  """Softmax of one stochastic forward pass (as the study evaluates)."""
  return jax.nn.softmax(model.apply(variables, x, train=False, rngs={STOCHASTIC: key}), -1)


@functools.partial(jax.jit, static_argnames=('model', 'num_samples'))
def predict_mc(model, variables, x, key, num_samples: int = 8):
  """Monte-Carlo prediction: the softmax averaged over `num_samples` keys (vmap over keys)."""
  keys = jax.random.split(key, num_samples)
  probs = jax.vmap(lambda k: jax.nn.softmax(model.apply(variables, x, train=False,
                                                        rngs={STOCHASTIC: k}), -1))(keys)
  return jnp.mean(probs, 0)
