"""Every attack returns its adversarial examples with the input's sharding: a batch split over 4
(simulated) CPU devices with a `NamedSharding` over a 'data' mesh comes back split the same way."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrobust import attacks as A

EPS = 0.1


def _apply(w, x, key):
  return x.reshape(x.shape[0], -1) @ w


@pytest.fixture(scope='module')
def sharded():
  assert len(jax.devices()) == 4
  mesh = Mesh(np.array(jax.devices()), ('data',))
  data = NamedSharding(mesh, P('data'))
  x = jax.device_put(jax.random.uniform(jax.random.key(0), (8, 6, 6, 1)), data)
  w = jax.random.normal(jax.random.key(1), (36, 5))
  f = jax.tree_util.Partial(_apply, w)
  y = jax.device_put(jnp.argmax(f(x, None), -1), data)
  return f, x, y, data


ATTACKS = {
  'fgsm': lambda f, k, x, y: A.fgsm(f, k, x, y, epsilon=EPS),
  'pgd': lambda f, k, x, y: A.pgd(f, k, x, y, epsilon=EPS, step_size=0.03, num_steps=3),
  'pgd_l2': lambda f, k, x, y: A.pgd(f, k, x, y, epsilon=0.5, step_size=0.2, num_steps=3, norm='l2'),
  'apgd': lambda f, k, x, y: A.apgd(f, k, x, y, epsilon=EPS, num_steps=4),
  'cw_l2': lambda f, k, x, y: A.cw_l2(f, k, x, y, max_iterations=3, binary_search_steps=1),
  'square': lambda f, k, x, y: A.square(f, k, x, y, epsilon=EPS, num_queries=20),
  'fab': lambda f, k, x, y: A.fab_targeted(f, k, x, y, epsilon=EPS, num_steps=3, num_targets=2),
  'noise': lambda f, k, x, y: A.uniform_noise(f, k, x, y, epsilon=EPS),
  'eot_pgd': lambda f, k, x, y: A.eot(A.pgd, 2)(f, k, x, y, epsilon=EPS, step_size=0.03, num_steps=2),
  'autoattack': lambda f, k, x, y: A.autoattack(f, k, x, y, epsilon=EPS, num_steps=3, num_queries=10)[0],
}


@pytest.mark.long
@pytest.mark.parametrize('name', sorted(ATTACKS))
def test_each_attack_keeps_the_inputs_sharding(name, sharded):
  f, x, y, data = sharded
  adv = ATTACKS[name](f, jax.random.key(2), x, y)
  assert adv.shape == x.shape
  assert adv.sharding.is_equivalent_to(data, x.ndim), (name, adv.sharding)


def test_over_epsilons_keeps_the_batch_axis_sharded(sharded):
  f, x, y, data = sharded
  advs = A.over_epsilons(
    A.pgd, f, jax.random.key(2), x, y, jnp.array([0.05, 0.1]), step_size=0.03, num_steps=2
  )
  assert advs.shape == (2, *x.shape)
  mesh = data.mesh
  assert advs.sharding.is_equivalent_to(NamedSharding(mesh, P(None, 'data')), advs.ndim), advs.sharding


def test_evaluation_entry_points_take_a_sharded_batch_where_it_is(sharded):
  """A batch on 4 devices is checked and scaled where it lies (its sharding kept) and gives the
  numbers a host batch gives."""
  from jaxrobust.evaluation import clean_accuracy, robust_accuracy, select_and_measure
  from jaxrobust.evaluation.accuracy import as_unit_float

  f, x, y, data = sharded
  assert as_unit_float(x).sharding == x.sharding
  pixels = jax.device_put((np.asarray(x) * 255).astype(np.uint8), data)
  assert as_unit_float(pixels).sharding.is_equivalent_to(data, x.ndim)
  key = jax.random.key(4)
  host_x, host_y = np.asarray(x), np.asarray(y)
  assert clean_accuracy(f, x, y, key=key, batch_size=4) == clean_accuracy(
    f, host_x, host_y, key=key, batch_size=4
  )
  spec = {'pgd': ATTACKS['pgd']}
  on_devices = robust_accuracy(f, x, y, spec, key=key, batch_size=4)
  on_host = robust_accuracy(f, host_x, host_y, spec, key=key, batch_size=4)
  assert on_devices.accuracy['pgd'] == on_host.accuracy['pgd']
  est = select_and_measure(f, {'clean': x}, host_y, key=key, selection_draws=1, measurement_draws=1)
  assert est.per_point.tolist() == [1.0] * 8  # y is the model's own prediction
  with pytest.raises(ValueError, match=r'images are floats in \[.*\]: give floats in \[0,1\]'):
    as_unit_float(x * 3.0)
