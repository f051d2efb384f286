"""Flax Linen models: small CNN, pre-activation WideResNet, stochastic LWTA and PNI layers."""
from jaxrobust.models.common import STOCHASTIC, Normalize, ReLU, max_pool_2x2
from jaxrobust.models.registry import create_model, make_logits_fn, model_names, register_model
from jaxrobust.models.small_cnn import SmallCNN
from jaxrobust.models.wide_resnet import WRN16_4, WRN34_1, WRN34_10, WRN_TINY, WideResNet, WRNBlock
from jaxrobust.models.ibp import (LWTAConv, LWTADense, collect_kl, elbo_loss, kl_bernoulli,
                                  kl_gaussian_std_normal, kl_kumaraswamy_beta, kumaraswamy_mean,
                                  kumaraswamy_sample)
from jaxrobust.models.lwta import LWTA, binary_kl_uniform, categorical_kl_uniform
from jaxrobust.models.noise import gumbel_noise, logistic_noise, uniform_open
from jaxrobust.models.stochastic_models import predict_mc, predict_single, with_lwta_mode
from jaxrobust.models.pni import PNIConv, PNIDense
