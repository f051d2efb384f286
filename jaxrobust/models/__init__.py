"""Flax Linen models: small CNN, pre-activation WideResNet, stochastic LWTA, IBP and PNI layers."""

from jaxrobust.models.common import KL_COLLECTION, STOCHASTIC, forward, model_variables, require_rng
from jaxrobust.models.ibp import (
  LWTAConv,
  LWTADense,
  collect_kl,
  kl_bernoulli,
  kl_gaussian_std_normal,
  kl_kumaraswamy_beta,
  kumaraswamy_mean,
  kumaraswamy_sample,
)
from jaxrobust.models.lwta import LWTA, binary_kl_uniform, categorical_kl_uniform
from jaxrobust.models.noise import gumbel_noise, logistic_noise, uniform_open
from jaxrobust.models.pni import PNIConv, PNIDense
from jaxrobust.models.registry import create_model, make_logits_fn, model_names
from jaxrobust.models.small_cnn import SmallCNN
from jaxrobust.models.stochastic_models import predict_mc, predict_single, with_lwta_mode
from jaxrobust.models.traits import ModelTraits, declare, model_traits
from jaxrobust.models.wide_resnet import WideResNet

__all__ = [
  'KL_COLLECTION',
  'LWTA',
  'LWTAConv',
  'LWTADense',
  'ModelTraits',
  'PNIConv',
  'PNIDense',
  'STOCHASTIC',
  'SmallCNN',
  'WideResNet',
  'binary_kl_uniform',
  'categorical_kl_uniform',
  'collect_kl',
  'create_model',
  'declare',
  'forward',
  'gumbel_noise',
  'kl_bernoulli',
  'kl_gaussian_std_normal',
  'kl_kumaraswamy_beta',
  'kumaraswamy_mean',
  'kumaraswamy_sample',
  'logistic_noise',
  'make_logits_fn',
  'model_traits',
  'model_names',
  'model_variables',
  'predict_mc',
  'predict_single',
  'require_rng',
  'uniform_open',
  'with_lwta_mode',
]
