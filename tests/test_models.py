import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import models


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _wrn_param_count(depth, k, num_classes=10, in_ch=3):
  """Parameters of the TRADES pre-activation WRN, counted from its definition (docs/methods.md)."""
  n = (depth - 4) // 6
  widths = [16, 16 * k, 32 * k, 64 * k]
  total = 3 * 3 * in_ch * 16  # stem, no bias
  cin = 16
  for g in range(3):
    for _ in range(n):
      cout = widths[g + 1]
      total += 2 * cin + 9 * cin * cout + 2 * cout + 9 * cout * cout  # bn1, conv1, bn2, conv2
      if cin != cout:
        total += cin * cout  # 1×1 shortcut, no bias
      cin = cout
  return total + 2 * cin + cin * num_classes + num_classes  # final bn, fc


@pytest.mark.parametrize('name,depth,k', [('wrn34_1', 34, 1), ('wrn34_10', 34, 10), ('wrn16_4', 16, 4)])
def test_wrn_parameter_counts_and_shapes(name, depth, k):
  m = models.create_model(name, num_classes=10)
  shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), jnp.zeros((2, 32, 32, 3))))
  assert _count(shapes['params']) == _wrn_param_count(depth, k)
  out = jax.eval_shape(lambda v: m.apply(v, jnp.zeros((2, 32, 32, 3))), shapes)
  assert out.shape == (2, 10)


def test_small_cnn_shapes_and_count():
  m = models.create_model('small_cnn', num_classes=10)
  v = m.init(jax.random.key(0), jnp.zeros((3, 28, 28, 1)))
  expected = (9 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 128 + 128) + (128 * 10 + 10)
  assert _count(v['params']) == expected
  assert m.apply(v, jnp.zeros((3, 28, 28, 1))).shape == (3, 10)


def test_normalization_is_inside_the_model():
  """A model with mean/std on pixels equals the same weights on pre-normalised pixels."""
  x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  inside = models.create_model('small_cnn', num_classes=10, mean=(0.3,), std=(0.5,))
  plain = models.create_model('small_cnn', num_classes=10)
  v = inside.init(jax.random.key(1), x)
  np.testing.assert_allclose(inside.apply(v, x), plain.apply(v, (x - 0.3) / 0.5), rtol=1e-5, atol=1e-5)


def test_max_pool_matches_reduce_window():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  import flax.linen as nn
  from jaxrobust.models.common import max_pool_2x2

  np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


def test_registry_rejects_unknown_name():
  with pytest.raises(ValueError, match="unknown model 'resnet9'.*small_cnn"):
    models.create_model('resnet9')


def test_wrn_eval_mode_uses_running_stats_and_logits_fn_is_pure():
  m = models.create_model('wrn_tiny', num_classes=4)
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  v = m.init(jax.random.key(1), x)
  f = models.make_logits_fn(m, v)
  a = f(x, jax.random.key(0))
  b = f(x[:1], jax.random.key(5))
  np.testing.assert_allclose(a[:1], b, rtol=1e-5, atol=1e-5)  # eval BN: no batch dependence


def test_registry_names_every_variant_explicitly():
  names = models.model_names()
  for base in ('small_cnn', 'wrn34_1', 'wrn16_4', 'wrn_tiny'):
    for suffix in ('', '_lwta', '_ibp', '_pni'):
      assert base + suffix in names
  # The small CNN's noisy variant makes its head noisy too; the WRN's has no separate head.
  cnn = models.create_model('small_cnn_pni')
  wrn = models.create_model('wrn_tiny_pni')
  assert cnn.head.func is models.PNIDense and wrn.dense.func is models.PNIDense
  assert models.create_model('small_cnn_ibp').dense.func is models.LWTADense
  assert models.create_model('wrn_tiny_ibp').dense is not models.LWTADense


@pytest.mark.long
@pytest.mark.parametrize(
  'name', ['small_cnn_lwta', 'small_cnn_pni', 'small_cnn_ibp', 'wrn_tiny_lwta', 'wrn_tiny_pni']
)
def test_deterministic_twin_is_noise_free_and_keeps_the_parameters(name):
  """model.clone(deterministic=True): the same variables, no noise (any key gives the same
  logits), and the stochastic model's outputs scatter around it."""
  shape = (4, 8, 8, 1) if 'cnn' in name else (4, 8, 8, 3)
  m = models.create_model(name, num_classes=4)
  x = jax.random.uniform(jax.random.key(0), shape)
  v = m.init({'params': jax.random.key(1), 'stochastic': jax.random.key(2)}, x)
  det = m.clone(deterministic=True)
  a = det.apply(v, x)  # no key needed
  np.testing.assert_array_equal(a, det.apply(v, x, rngs={'stochastic': jax.random.key(5)}))
  if 'ibp' not in name:  # IBP layers are deterministic in eval mode already; LWTA and PNI are not
    b = m.apply(v, x, rngs={'stochastic': jax.random.key(5)})
    assert not np.allclose(a, b)


def test_stochastic_layers_follow_the_dropout_protocol():
  """`deterministic` as a field or a call argument (exactly one), and `rng_collection`."""
  x = jax.random.normal(jax.random.key(0), (4, 6))
  for layer in (models.LWTA(), models.PNIDense(6), models.LWTADense(6)):
    v = layer.init({'params': jax.random.key(1), 'stochastic': jax.random.key(2)}, x, deterministic=False)
    np.testing.assert_array_equal(
      layer.apply(v, x, deterministic=True), layer.clone(deterministic=True).apply(v, x)
    )
    with pytest.raises(ValueError, match='deterministic'):
      layer.clone(deterministic=True).apply(v, x, deterministic=True)
  noisy = models.PNIDense(6, rng_collection='noise')
  v = noisy.init({'params': jax.random.key(1), 'noise': jax.random.key(2)}, x, deterministic=False)
  with pytest.raises(ValueError, match='needs a PRNG key.*noise'):
    noisy.apply(v, x, deterministic=False, rngs={'stochastic': jax.random.key(3)})
  out = noisy.apply(v, x, deterministic=False, rngs={'noise': jax.random.key(3)})
  assert out.shape == (4, 6)


def test_torch_default_init_is_pytorchs_uniform():
  """Kernels and biases redrawn as U(−1/√fan_in, 1/√fan_in): inside the bound, and the kernel's
  variance within 4σ of bound²/3 (σ of the sample variance of a uniform: bound²·√(4/45/n))."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from jaxrobust.models import create_model
  from jaxrobust.models.init import torch_default_init

  model = create_model('small_cnn', num_classes=10)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))['params']
  new = torch_default_init(params, jax.random.key(1))
  for name in ('Conv_1', 'Dense_0'):
    k, b = np.asarray(new[name]['kernel']), np.asarray(new[name]['bias'])
    bound = 1 / np.sqrt(np.prod(k.shape[:-1]))
    assert np.abs(k).max() <= bound and np.abs(b).max() <= bound
    n = k.size
    assert abs(k.var() - bound**2 / 3) < 4 * bound**2 * np.sqrt(4 / 45 / n)
  assert not np.allclose(new['Dense_0']['bias'], 0)  # Flax's biases start at zero; torch's do not
  assert jax.tree.structure(new) == jax.tree.structure(params)


@pytest.mark.parametrize('name', [n for n in models.model_names() if n.startswith(('small_cnn', 'wrn_tiny'))])
def test_declared_traits_match_what_the_model_does(name):
  """The registry's declaration, checked against behaviour (the one place that runs a model twice
  to find out): stochastic ⇔ two keys give different logits; lwta ⇔ it has a mean-field twin."""
  shape = (4, 8, 8, 1) if 'cnn' in name else (4, 8, 8, 3)
  m = models.create_model(name, num_classes=4)
  traits = models.model_traits(m)
  x = jax.random.uniform(jax.random.key(0), shape)
  v = m.init({'params': jax.random.key(1), 'stochastic': jax.random.key(2)}, x)
  a, b = (m.apply(v, x, rngs={'stochastic': jax.random.key(k)}) for k in (5, 6))
  assert traits.stochastic == (not np.allclose(a, b)), (name, traits)
  assert traits.lwta == (getattr(m.act, 'func', None) is models.LWTA), (name, traits)
  # The declaration travels with the model through clones (surrogates, other LWTA modes).
  assert models.model_traits(m.clone(deterministic=True)) == traits
  if traits.lwta:
    assert models.model_traits(models.with_lwta_mode(m, 'mean')) == traits


def test_a_model_without_declared_traits_is_refused_by_name():
  bare = models.SmallCNN(num_classes=4)
  with pytest.raises(ValueError, match='SmallCNN declares no traits.*create_model'):
    models.model_traits(bare)
  with pytest.raises(ValueError, match='not declared an LWTA network'):
    models.with_lwta_mode(models.create_model('small_cnn_pni'), 'mean')
  declared = models.declare(bare, models.ModelTraits(stochastic=False))
  assert models.model_traits(declared) == models.ModelTraits(stochastic=False)
  x = jnp.ones((2, 8, 8, 1))
  v = bare.init(jax.random.key(0), x)
  np.testing.assert_array_equal(bare.apply(v, x), declared.apply(v, x))  # same parameters, same function
  with pytest.raises(TypeError, match='ModelTraits'):
    models.declare(bare, {'stochastic': True})


@pytest.mark.parametrize(
  'name,field,value',
  [
    ('small_cnn', 'num_classes', 0),
    ('small_cnn', 'num_classes', 1),
    ('small_cnn_lwta', 'width', 0),
    ('small_cnn', 'width', -2),
    ('small_cnn', 'num_classes', 10.0),
    ('wrn16_4', 'num_classes', True),
  ],
)
def test_a_count_below_its_minimum_is_named_when_the_model_is_made(name, field, value):
  """A network with no classes or no channels was built without a word; the error came (or not)
  far away, at the first forward pass."""
  with pytest.raises(ValueError, match=f'create_model.*{field} must be an integer >= '):
    models.create_model(name, **{field: value})


def test_a_wide_resnet_without_blocks_is_refused():
  """Depth 4 and -2 are 6n + 4 with n = 0 and n = -1: no residual block at all."""
  from jaxrobust.models.wide_resnet import WideResNet

  for depth in (4, -2, 15):
    with pytest.raises(ValueError, match='depth must be 6n\\+4 with n >= 1'):
      WideResNet(depth=depth, widen=1, num_classes=4).init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_monte_carlo_prediction_needs_a_draw():
  from jaxrobust.models import predict_mc

  model = models.create_model('small_cnn_lwta', num_classes=4, width=1)
  x = jnp.zeros((2, 8, 8, 1))
  variables = model.init({'params': jax.random.key(0), 'stochastic': jax.random.key(1)}, x)
  for bad in (0, -1, 2.0):
    with pytest.raises(ValueError, match='predict_mc: num_samples must be an integer >= 1'):
      predict_mc(model, variables, x, jax.random.key(2), num_samples=bad)
