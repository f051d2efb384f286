import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import models


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _wrn_param_count(depth, k, num_classes=10, in_ch=3):
  """Parameters of the TRADES pre-activation WRN, counted from its definition (methods.md §7)."""
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


def test_wrn34_1_is_about_047m_parameters():
  assert _wrn_param_count(34, 1) == 466_714  # "about 0.47M" in the reference code


def test_small_cnn_shapes_and_count():
  m = models.create_model('small_cnn', num_classes=10)
  v = m.init(jax.random.key(0), jnp.zeros((3, 28, 28, 1)))
  expected = (9 * 32 + 32) + (9 * 32 * 64 + 64) + (7 * 7 * 64 * 128 + 128) + (128 * 10 + 10)
  assert _count(v['params']) == expected
  assert m.apply(v, jnp.zeros((3, 28, 28, 1))).shape == (3, 10)


def test_normalization_is_inside_the_model():
  m = models.Normalize(mean=(0.5,), std=(0.25,))
  np.testing.assert_allclose(m.apply({}, jnp.array([[[[1.0]]]])), 2.0)


def test_max_pool_matches_reduce_window():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  import flax.linen as nn
  np.testing.assert_array_equal(models.max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))


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
