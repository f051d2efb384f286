"""The adaptive suite's attacks on what a stochastic model samples: the expected-probability
model (`attacks.mean_probability`), straight-through and re-tempered LWTA winners
(`models.with_lwta_mode`), and which model gets which (`suites.sampling_attacks`, by traits)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import attacks as A
from jaxrobust.evaluation import EvalSpec, build_evaluation
from jaxrobust.evaluation import suites
from jaxrobust.models import with_lwta_mode
from jaxrobust.models.traits import DETERMINISTIC, LWTA_NETWORK, NOISY
from jaxrobust.models.lwta import LWTA

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _two_draws(x, key):
  """Two classes, true class 0, margin m_k(x) of one of two equally likely draws: draw 1 is
  already broken (m = −10 + x), draw 2 is right at x = 0 and broken beyond x = 0.6 (m = 0.3 − x/2)."""
  first = jax.random.bernoulli(key, 0.5, (x.shape[0],))
  m = jnp.where(first, -10.0 + x[:, 0], 0.3 - 0.5 * x[:, 0])
  return jnp.stack([m, jnp.zeros_like(m)], -1)


def test_mean_probability_is_the_log_of_the_averaged_softmax():
  x = jax.random.uniform(jax.random.key(0), (5, 1))
  key = jax.random.key(1)
  g = A.mean_probability(_two_draws, 7)
  by_hand = jnp.log(
    jnp.mean(jax.vmap(lambda k: jax.nn.softmax(_two_draws(x, k)))(jax.random.split(key, 7)), 0)
  )
  np.testing.assert_allclose(g(x, key), by_hand, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jnp.exp(g(x, key)).sum(-1), 1.0, rtol=1e-6)
  # On a deterministic model it is the model's log-softmax, whatever the draws.
  det = lambda x, k: jnp.concatenate([x, -x], -1)  # noqa: E731
  np.testing.assert_allclose(A.mean_probability(det, 3)(x, key), jax.nn.log_softmax(det(x, key)), atol=1e-6)
  for bad in (0, 2.0, True):
    with pytest.raises(ValueError, match='samples'):
      A.mean_probability(det, bad)


def test_two_wrappers_of_the_same_size_share_one_compiled_attack():
  calls = []

  def apply(w, x, key):
    calls.append(1)  # runs once per trace
    return x @ w

  attack = jax.jit(lambda f, k, x, y: A.pgd(f, k, x, y, epsilon=0.1, num_steps=2))
  x, y = jnp.full((2, 3), 0.5), jnp.array([0, 1])
  for seed in (0, 1):
    w = jax.random.normal(jax.random.key(seed), (3, 2))
    attack(A.mean_probability(jax.tree_util.Partial(apply, w), 4), jax.random.key(2), x, y)
  assert attack._cache_size() == 1


def test_the_expected_probability_breaks_a_point_that_eot_leaves_standing():
  """In closed form: EOT's averaged per-draw loss is led by the draw that is already broken
  (its gradient pushes x down, where draw 2 stays right), the expected probability by the draw
  that still decides (x goes to 1, where both draws are broken)."""
  x, y = jnp.zeros((1, 1)), jnp.zeros(1, jnp.int32)
  common = dict(epsilon=1.0, step_size=0.25, num_steps=8, random_init=None)
  key = jax.random.key(0)
  eot = A.pgd(_two_draws, key, x, y, eot_samples=16, **common)
  expected = A.pgd(A.mean_probability(_two_draws, 16), key, x, y, **common)
  assert float(eot[0, 0]) == 0.0
  assert float(expected[0, 0]) == pytest.approx(1.0)
  # Both draws' margins at the two points: draw 2 is right only at EOT's.
  assert 0.3 - 0.5 * float(eot[0, 0]) > 0 > 0.3 - 0.5 * float(expected[0, 0])


def test_straight_through_winners_are_one_hot_forward_and_relaxed_at_the_given_temperature_backward():
  """One LWTA pair: out₁ = h₁·ξ₁. 'hard' gives ξ₁ = [z ≥ 0] exactly (z = h₁ − h₂ + L), and
  ∂out₁/∂h₁ = ξ₁ + h₁·s(1 − s)/T with s = σ(z/T), the relaxed winner at T, which 'relaxed' at
  the same T and key shows (s = out₁/h₁)."""
  h = jnp.array([[0.7, 0.4]])
  rngs = lambda: {'stochastic': jax.random.key(3)}  # noqa: E731
  for t in (0.67, 0.2):
    hard = LWTA(mode='hard', temperature=t, deterministic=False)
    relaxed = LWTA(mode='relaxed', temperature=t, deterministic=False)
    out = hard.apply({}, h, rngs=rngs())
    win = float(out[0, 0] != 0)
    s = float(relaxed.apply({}, h, rngs=rngs())[0, 0] / h[0, 0])
    # The loser is exactly 0 (s + (0 − s)); the winner keeps h to rounding (s + (1 − s)).
    assert (out[0] == 0).sum() == 1
    np.testing.assert_allclose(out[0], h[0] * jnp.array([win, 1 - win]), rtol=1e-6)
    grad = jax.grad(lambda h: hard.apply({}, h, rngs=rngs())[0, 0])(h)
    assert float(grad[0, 0]) == pytest.approx(win + 0.7 * s * (1 - s) / t, rel=1e-5)


def test_with_lwta_mode_replaces_a_learned_temperature_and_refuses_a_bad_one():
  from jaxrobust.models import create_model

  m = create_model('small_cnn_lwta', num_classes=4, width=1, learn_temperature=True)
  st = with_lwta_mode(m, 'hard', temperature=0.3)
  assert st.act.keywords['temperature'] == 0.3 and not st.act.keywords['learn_temperature']
  assert with_lwta_mode(m, 'eval', eval_temperature=0.1).act.keywords['eval_temperature'] == 0.1
  for bad in (dict(temperature=0.0), dict(eval_temperature=-1.0)):
    with pytest.raises(ValueError, match='temperature must be > 0'):
      with_lwta_mode(m, 'hard', **bad)


def test_each_stochastic_model_gets_the_sampling_attacks_its_traits_declare_with_eot_pgds_work():
  spec = EvalSpec(dataset='fashion_mnist', suite='adaptive', eot_samples=20, eot_microbatch=6)
  assert build_evaluation(spec, DETERMINISTIC).sampling == {}
  assert set(build_evaluation(spec, NOISY).sampling) == {'eot_expected_probability'}
  plan = build_evaluation(spec, LWTA_NETWORK)
  s = plan.sampling
  assert set(s) == {'eot_expected_probability', 'eot_straight_through', 'transfer_low_temperature'}
  eot = plan.attacks['eot_pgd']
  for name, a in s.items():
    draws = a.attack['eot_samples'] * (a.mean_probability or 1)
    same = {k: v for k, v in a.attack.items() if k != 'eot_samples'}
    assert same == {k: v for k, v in eot.items() if k != 'eot_samples'} and draws == 20, name
  assert s['eot_straight_through'].lwta_mode == 'hard'
  assert s['transfer_low_temperature'].lwta_mode == 'eval'
  assert s['transfer_low_temperature'].eval_temperature == suites.LOW_TEMPERATURE


def test_the_suites_temperatures_are_the_measured_strongest():
  """`suites.LOW_TEMPERATURE` and `STRAIGHT_THROUGH_TEMPERATURE` name the variants that
  experiments/sampling_attacks measured strongest on the published LWTA model."""
  with open(os.path.join(ROOT, 'results', 'sampling_attacks', 'fashion_mnist', 'lwta.json')) as fh:
    rec = json.load(fh)
  assert rec['strongest']['low_temperature']['temperature'] == suites.LOW_TEMPERATURE
  assert rec['strongest']['straight_through']['temperature'] == suites.STRAIGHT_THROUGH_TEMPERATURE


@pytest.mark.long
def test_a_listed_suites_sampling_attacks_keep_their_threats_ball_and_the_box():
  """Each attack on the sampling of a (tiny) LWTA network from a listed suite stays in its own
  threat's ball (L∞ ε for the plain names, the L2 ε for `*_l2`) and in [0, 1]."""
  from jaxrobust.evaluation.adaptive import sampling_attack
  from jaxrobust.models import create_model

  model = create_model('small_cnn_lwta', num_classes=4, width=1)
  variables = model.init(
    {'params': jax.random.key(0), 'stochastic': jax.random.key(1)}, jnp.zeros((1, 8, 8, 1))
  )
  plan = build_evaluation(
    EvalSpec(dataset='synthetic', suite='standard', eot_samples=2, steps_scale=0.1), LWTA_NETWORK
  )
  x = jax.random.uniform(jax.random.key(2), (3, 8, 8, 1))
  y = jnp.arange(3) % 4
  assert len(plan.sampling) == 6
  for name, sampling in plan.sampling.items():
    eps = sampling.attack['epsilon']
    assert eps == plan.attacks['eot_pgd_l2' if name.endswith('_l2') else 'eot_pgd']['epsilon'], name
    x_adv = sampling_attack(model, variables, sampling)(None, jax.random.key(3), x, y)
    d = np.asarray(x_adv - x).reshape(3, -1)
    norm = np.linalg.norm(d, axis=1) if name.endswith('_l2') else np.abs(d).max(axis=1)
    assert (norm <= eps * (1 + 1e-5)).all() and norm.max() > 0, (name, norm, eps)
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0, name
