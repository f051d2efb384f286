"""models.conv: JAX's own values and derivatives, and input gradients that stay library
convolutions inside a compiled loop."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust.models import conv as module
from jaxrobust.models.conv import Conv, conv, plain_conv

GEOMETRIES = [
  ((9, 8), (3, 3), (1, 1), 'SAME'),
  ((9, 8), (3, 3), (2, 2), 'SAME'),
  ((7, 7), (3, 3), (2, 2), 'SAME'),
  ((8, 8), (1, 1), (2, 2), 'VALID'),
  ((9, 9), (3, 3), (2, 2), 'VALID'),
  ((10, 9), (3, 3), (1, 2), ((1, 0), (2, 1))),
  ((6, 6), (5, 3), (3, 1), ((0, 2), (1, 1))),
]


def _loss(f):
  return lambda x, w: jnp.sum(jnp.sin(f(x, w)))


@pytest.mark.parametrize('spatial,window,strides,padding', GEOMETRIES)
def test_values_and_both_gradients_equal_jax_derivative(spatial, window, strides, padding):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (2, *spatial, 4))
  w = jax.random.normal(kw, (*window, 4, 5))
  ours = lambda x, w: conv(x, w, strides, padding)
  ref = lambda x, w: plain_conv(x, w, strides, padding)
  np.testing.assert_allclose(ours(x, w), ref(x, w), atol=1e-5)
  for g, r in zip(jax.grad(_loss(ours), (0, 1))(x, w), jax.grad(_loss(ref), (0, 1))(x, w)):
    assert g.shape == r.shape
    np.testing.assert_allclose(g, r, atol=1e-4)


def test_second_order_and_vmapped_gradients_equal_jax():
  """A gradient penalty differentiates the input gradient again; an EOT vmap batches it."""
  x = jax.random.normal(jax.random.key(0), (3, 2, 8, 8, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4))

  def penalty(f):
    gx = lambda x, w: jax.grad(_loss(f))(x, w)
    return lambda x, w: jnp.sum(gx(x, w) ** 2)

  ours = lambda x, w: conv(x, w, 2, 'SAME')
  ref = lambda x, w: plain_conv(x, w, (2, 2), 'SAME')
  for g, r in zip(jax.grad(penalty(ours), (0, 1))(x[0], w), jax.grad(penalty(ref), (0, 1))(x[0], w)):
    np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-3)
  mapped = lambda f: jax.vmap(jax.grad(_loss(f)), (0, None))
  np.testing.assert_allclose(mapped(ours)(x, w), mapped(ref)(x, w), atol=1e-4)


def _input_gradient_loop_hlo(f, steps=3):
  """The compiled program of `steps` input-gradient steps in a rolled loop, as an attack runs."""
  x = jax.random.normal(jax.random.key(0), (4, 12, 12, 3))
  w = jax.random.normal(jax.random.key(1), (3, 3, 3, 8))

  def attack(x, w):
    step = lambda _, x: x + 0.01 * jnp.sign(jax.grad(lambda x: _loss(f)(x, w))(x))
    return jax.lax.fori_loop(0, steps, step, x)

  return jax.jit(attack).lower(x, w).compile().as_text()


def test_inside_a_loop_the_input_gradient_keeps_the_usual_kernel_layout():
  """XLA's CPU backend runs a convolution with a kernel read as (H, W, O, I) as a naive loop nest
  inside a `while` body; JAX's derivative produces one (the problem), `conv` does not."""
  assert '01oi' in _input_gradient_loop_hlo(lambda x, w: plain_conv(x, w, (1, 1), 'SAME'))
  assert '01oi' not in _input_gradient_loop_hlo(lambda x, w: conv(x, w))


def test_off_the_cpu_conv_is_the_plain_convolution(monkeypatch):
  monkeypatch.setattr(module.jax, 'default_backend', lambda: 'gpu')
  hlo = _input_gradient_loop_hlo(lambda x, w: conv(x, w))
  assert (
    'custom_vjp'
    not in jax.make_jaxpr(lambda x, w: conv(x, w))(
      jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1))
    ).pretty_print()
  )
  assert '01oi' in hlo


@pytest.mark.parametrize(
  'kwargs',
  [
    dict(features=6, kernel_size=(3, 3)),
    dict(features=6, kernel_size=(3, 3), strides=2, padding='VALID'),
    dict(features=6, kernel_size=(3, 3), kernel_dilation=2),  # dilated: the lax function
    dict(features=6, kernel_size=(3, 3), feature_group_count=2),  # grouped: the lax function
  ],
)
def test_conv_module_is_nn_conv_with_the_same_parameters_values_and_gradients(kwargs):
  x = jax.random.normal(jax.random.key(0), (2, 9, 9, 4))
  ours, ref = Conv(**kwargs), nn.Conv(**kwargs)
  v = ref.init(jax.random.key(1), x)
  assert jax.tree.structure(ours.init(jax.random.key(1), x)) == jax.tree.structure(v)
  np.testing.assert_allclose(ours.apply(v, x), ref.apply(v, x), atol=1e-5)
  grad = lambda m: jax.grad(lambda v, x: jnp.sum(jnp.sin(m.apply(v, x))), (0, 1))(v, x)
  for g, r in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(ref))):
    np.testing.assert_allclose(g, r, atol=1e-4)


@pytest.mark.long
@pytest.mark.parametrize('name', ['small_cnn', 'wrn_tiny', 'small_cnn_pni', 'small_cnn_ibp'])
def test_no_model_leaves_a_naive_convolution_in_an_attack_loop(name):
  """Every convolution of the models, plain, noisy (PNI) or gated (IBP), keeps its input
  gradient a library convolution in a rolled attack loop."""
  from jaxrobust.models import create_model, make_logits_fn

  model = create_model(name, num_classes=10)
  shape = (1, 28, 28, 1) if name.startswith('small') else (1, 32, 32, 3)
  variables = model.init({'params': jax.random.key(0), 'stochastic': jax.random.key(2)}, jnp.zeros(shape))
  f = make_logits_fn(model, variables)
  x, key = jnp.full((2,) + shape[1:], 0.5), jax.random.key(1)

  def attack(x):
    grad = jax.grad(lambda x, k: jnp.sum(jax.nn.log_softmax(f(x, k))[:, 0]))
    return jax.lax.fori_loop(0, 2, lambda i, x: x + 0.01 * jnp.sign(grad(x, jax.random.fold_in(key, i))), x)

  assert '01oi' not in jax.jit(attack).lower(x).compile().as_text()


FORWARD_MODE = [
  'small_cnn',
  'small_cnn_lwta',
  'wrn_tiny',
]  # every family of layers (LWTA is the same module in a WRN)
# Drawn per-lane kernels (PNI, IBP) convolve through `lane_conv`, whose derivative is still a
# custom VJP: forward mode does not go through them yet.
LANE_CONV = ['small_cnn_pni', 'small_cnn_ibp', 'wrn_tiny_pni', 'wrn_tiny_ibp']


def _smooth_loss(name):
  from jaxrobust.models import create_model, forward

  shape = (2, 28, 28, 1) if name.startswith('small') else (2, 32, 32, 3)
  model = create_model(name, num_classes=10)
  x = jax.random.uniform(jax.random.key(0), shape)
  variables = model.init({'params': jax.random.key(1), 'stochastic': jax.random.key(2)}, x)
  key = jax.random.key(3)  # one fixed draw: a deterministic function of x
  return lambda z: jax.nn.logsumexp(forward(model.apply, variables, z, key)).sum(), x


@pytest.mark.long
@pytest.mark.parametrize(
  'name', FORWARD_MODE + [pytest.param(n, marks=pytest.mark.xfail(strict=True)) for n in LANE_CONV]
)
def test_forward_mode_goes_through_the_model(name):
  """jax.jvp and a forward-over-reverse Hessian-vector product against central finite
  differences, and jacfwd against jacrev (models.Conv's derivative is a custom JVP)."""
  f, x = _smooth_loss(name)
  v = jax.random.normal(jax.random.key(4), x.shape)
  h = 1e-2
  _, t = jax.jvp(f, (x,), (v,))
  np.testing.assert_allclose(t, jnp.vdot(jax.grad(f)(x), v), rtol=1e-4)
  if not name.endswith('_lwta'):  # LWTA's test-time winners (T = 0.01) are too sharp for differences
    np.testing.assert_allclose(t, (f(x + h * v) - f(x - h * v)) / (2 * h), rtol=2e-2, atol=2e-3)
  # Hessian-vector products: forward-over-reverse against reverse-over-reverse (finite differences
  # of a ReLU network's gradient jump at its kinks, so they cannot check this one).
  hvp = jax.jvp(jax.grad(f), (x,), (v,))[1]
  hvp_rev = jax.grad(lambda z: jnp.vdot(jax.grad(f)(z), v))(x)
  np.testing.assert_allclose(hvp, hvp_rev, rtol=1e-3, atol=1e-5 * float(jnp.abs(hvp_rev).max()))
  assert float(jnp.abs(hvp).max()) > 0
  patch = lambda p: f(x.at[:1, :4, :4].set(p))
  np.testing.assert_allclose(
    jax.jacfwd(patch)(x[:1, :4, :4]), jax.jacrev(patch)(x[:1, :4, :4]), rtol=1e-4, atol=1e-6
  )
