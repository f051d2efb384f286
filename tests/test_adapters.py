"""Models of four libraries as attack targets: attacked by PGD and AutoAttack, and compiled once
for two parameter sets of the same shapes (the second call traces and compiles nothing), where a
fresh closure per call compiles again."""

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrobust import adapters
from jaxrobust import attacks as A

EPS = 0.1
SHAPE = (8, 8, 1)
_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration', '/jax/core/compile/backend_compile_duration')


@contextlib.contextmanager
def compilations():
  """Counts the traces and backend compilations that happen inside the block."""
  count = [0]

  def listener(event, duration, **kwargs):
    if event in _COMPILE_EVENTS:
      count[0] += 1

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield count
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


class LinenMLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Dense(16)(x.reshape(x.shape[0], -1)))
    return nn.Dense(4)(h)


class NoisyNNX(nnx.Module):
  """A stochastic NNX module: dropout whose mask comes from the attack's key."""

  def __init__(self, rngs):
    self.l1 = nnx.Linear(64, 16, rngs=rngs)
    self.drop = nnx.Dropout(0.25, deterministic=False)
    self.l2 = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x, key):
    h = nnx.relu(self.l1(x.reshape(x.shape[0], -1)))
    return self.l2(self.drop(h, rngs=nnx.Rngs(dropout=key)))


def _linen(seed):
  m = LinenMLP()
  return adapters.from_linen(m, m.init(jax.random.key(seed), jnp.zeros((1, *SHAPE))))


def _nnx(seed):
  return adapters.from_nnx(NoisyNNX(nnx.Rngs(seed)), stochastic=True)


def _equinox(seed):
  eqx = pytest.importorskip('equinox')
  model = eqx.nn.Sequential(
    [
      eqx.nn.Lambda(jnp.ravel),
      eqx.nn.Linear(64, 16, key=jax.random.key(seed)),
      eqx.nn.Lambda(jax.nn.relu),
      eqx.nn.Linear(16, 4, key=jax.random.key(seed + 100)),
    ]
  )
  return adapters.from_equinox(model)


_HAIKU = []


def _haiku(seed):
  hk = pytest.importorskip('haiku')
  if not _HAIKU:  # one transformed function for every parameter set
    _HAIKU.append(hk.transform(lambda x: hk.nets.MLP([16, 4])(x.reshape(x.shape[0], -1))))
  t = _HAIKU[0]
  return adapters.from_haiku(t, t.init(jax.random.key(seed), jnp.zeros((1, *SHAPE))))


BUILDERS = {'linen': _linen, 'nnx': _nnx, 'equinox': _equinox, 'haiku': _haiku}


@pytest.fixture(scope='module')
def data():
  x = jax.random.uniform(jax.random.key(0), (6, *SHAPE))
  y = jax.random.randint(jax.random.key(1), (6,), 0, 4)
  return x, y


@pytest.mark.long
@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_each_library_is_attacked_and_compiled_once_for_new_parameters(name, data):
  x, y = data
  f1, f2 = BUILDERS[name](1), BUILDERS[name](2)
  key = jax.random.key(3)
  pgd = lambda f: A.pgd(f, key, x, y, epsilon=EPS, step_size=0.03, num_steps=5)  # noqa: E731
  a1 = pgd(f1)
  with compilations() as count:
    a2 = pgd(f2)
  assert count[0] == 0, f'{name}: the second parameter set compiled {count[0]} programs'
  for adv in (a1, a2):
    assert float(jnp.abs(adv - x).max()) <= EPS + 1e-6 and float(adv.min()) >= 0 and float(adv.max()) <= 1
  # Other parameters, other logits: the attack really used the second set.
  assert not np.allclose(f1(x, key), f2(x, key))
  x_aa, report = A.autoattack(f1, key, x, y, epsilon=EPS, num_steps=5, num_queries=20)
  assert float(jnp.abs(x_aa - x).max()) <= EPS + 1e-6
  assert all(0.0 <= a <= 1.0 for a in report['robust_accuracy'].values()), report


def test_a_stochastic_nnx_module_draws_from_the_attacks_key(data):
  x, _ = data
  f = _nnx(1)
  a, b = f(x, jax.random.key(0)), f(x, jax.random.key(1))
  assert not np.allclose(a, b)  # other keys, other dropout masks
  np.testing.assert_array_equal(a, f(x, jax.random.key(0)))  # same key, same bits


def test_a_fresh_closure_per_call_compiles_again(data):
  """What the adapters avoid: `lambda x, key: apply(params, x)` is a new function every time."""
  x, y = data
  m = LinenMLP()
  params = [m.init(jax.random.key(s), jnp.zeros((1, *SHAPE))) for s in (1, 2)]
  key = jax.random.key(3)
  A.pgd(lambda z, k: m.apply(params[0], z), key, x, y, epsilon=EPS, step_size=0.03, num_steps=5)
  with compilations() as count:
    A.pgd(lambda z, k: m.apply(params[1], z), key, x, y, epsilon=EPS, step_size=0.03, num_steps=5)
  assert count[0] > 0
