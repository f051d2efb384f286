"""lane_conv: the plain convolution's values and gradients in every vmap configuration, and no
grouped convolution left in the compiled program of a per-lane kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust.models.conv import plain_conv as _plain
from jaxrobust.models.lane_conv import lane_conv

LANES = 3


def _loss(conv):
  return lambda x, w: jnp.sum(jnp.sin(conv(x, w)))


@pytest.mark.long
@pytest.mark.parametrize(
  'strides,padding', [((1, 1), 'SAME'), ((2, 2), 'SAME'), ((2, 2), 'VALID'), ((1, 1), ((1, 0), (2, 1)))]
)
@pytest.mark.parametrize('in_axes', [(0, 0), (None, 0), (0, None), (None, None)])
def test_lane_conv_equals_the_plain_convolution_and_its_gradients(strides, padding, in_axes):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (LANES, 2, 9, 8, 4))
  w = jax.random.normal(kw, (LANES, 3, 3, 4, 5))
  xs, ws = (x if in_axes[0] == 0 else x[0]), (w if in_axes[1] == 0 else w[0])
  ours = lambda x, w: lane_conv(x, w, strides, padding)
  ref = lambda x, w: _plain(x, w, strides, padding)
  if in_axes == (None, None):
    mapped = lambda f: f
  else:
    mapped = lambda f: jax.vmap(f, in_axes)
  np.testing.assert_allclose(mapped(ours)(xs, ws), mapped(ref)(xs, ws), atol=1e-5)
  got = mapped(jax.grad(_loss(ours), (0, 1)))(xs, ws)
  want = mapped(jax.grad(_loss(ref), (0, 1)))(xs, ws)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, atol=1e-4)


def test_per_lane_kernels_compile_without_grouped_convolutions():
  x = jax.random.normal(jax.random.key(0), (LANES, 2, 8, 8, 4))  # activations of a per-lane draw
  w = jax.random.normal(jax.random.key(1), (LANES, 3, 3, 4, 5))
  grad = lambda f: jax.vmap(jax.grad(_loss(f), (0, 1)))
  hlo = lambda f: jax.jit(grad(f)).lower(x, w).compile().as_text()
  assert 'feature_group_count' in hlo(lambda x, w: _plain(x, w, (1, 1), 'SAME'))  # the problem
  assert 'feature_group_count' not in hlo(lambda x, w: lane_conv(x, w))
  assert 'batch_group_count' not in hlo(lambda x, w: lane_conv(x, w))


def test_off_the_cpu_per_lane_kernels_stay_one_grouped_convolution(monkeypatch):
  """GPU/TPU run grouped convolutions well: there the rules batch the plain convolution, with the
  same values and gradients."""
  from jaxrobust.models import lane_conv as module

  monkeypatch.setattr(module, '_grouped_is_slow', lambda: False)
  x = jax.random.normal(jax.random.key(0), (LANES, 2, 8, 8, 4))
  w = jax.random.normal(jax.random.key(1), (LANES, 3, 3, 4, 5))
  grad = lambda f: jax.jit(jax.vmap(jax.grad(_loss(f), (0, 1))))
  ours, ref = grad(lambda x, w: lane_conv(x, w)), grad(lambda x, w: _plain(x, w, (1, 1), 'SAME'))
  for g, r in zip(ours(x, w), ref(x, w)):
    np.testing.assert_allclose(g, r, atol=1e-4)
  assert 'feature_group_count' in ours.lower(x, w).compile().as_text()


def test_nested_vmaps_with_a_kernel_per_lane_at_both_levels():
  """Draws inside draws (an outer vmap over keys around an EOT vmap): same values and gradients."""
  x = jax.random.normal(jax.random.key(0), (2, LANES, 2, 6, 6, 3))
  w = jax.random.normal(jax.random.key(1), (2, LANES, 3, 3, 3, 4))
  twice = lambda f: jax.vmap(jax.vmap(jax.grad(_loss(f), (0, 1))))
  got = twice(lambda x, w: lane_conv(x, w))(x, w)
  want = twice(lambda x, w: _plain(x, w, (1, 1), 'SAME'))(x, w)
  for g, r in zip(got, want):
    np.testing.assert_allclose(g, r, atol=1e-4)
