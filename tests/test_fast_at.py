"""Fast adversarial training: FGSM with a random start, free adversarial training, and the
catastrophic-overfitting guard."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrobust import attacks as A
from jaxrobust import keys, train
from jaxrobust.models import create_model
from jaxrobust.train.guard import OverfitGuard
from jaxrobust.train.objectives import Objective, fgsm_rs_attack, free_delta_update, free_objective
from jaxrobust.train.state import create_train_state
from jaxrobust.train.step import make_train_step
from tests.conftest import trees_equal


def test_fgsm_rs_lands_on_the_gradient_side_inside_the_ball():
  """On a linear model the CE gradient's sign is fixed per pixel (w_other − w_y summed over the
  softmax), so with α = 1.25ε every pixel that [0, 1] does not clip ends between 0.25ε and ε on
  that side: δ₀ ∈ [−ε, ε] plus 1.25ε·s, projected to [−ε, ε]."""
  eps = 0.1
  w = jax.random.normal(jax.random.key(0), (16, 2))
  f = lambda x, key: x.reshape(x.shape[0], -1) @ w  # noqa: E731
  x = jax.random.uniform(jax.random.key(1), (64, 4, 4, 1), minval=0.2, maxval=0.8)  # never clipped
  y = jnp.zeros(64, jnp.int32)
  x_adv = A.build_attack(fgsm_rs_attack(eps))(f, jax.random.key(2), x, y)
  d = np.asarray(x_adv - x).reshape(64, -1)
  s = np.sign(np.asarray(w[:, 1] - w[:, 0]))  # ∇ₓ CE for label 0 is (p₁)(w₁ − w₀): its sign
  assert np.abs(d).max() <= eps + 1e-6
  assert np.all(d * s >= 0.25 * eps - 1e-6)


def test_free_delta_update_stays_in_the_ball():
  upd = free_delta_update(0.1)
  delta = jnp.zeros((5, 3))
  for i in range(20):
    g = jax.random.normal(jax.random.key(i), (5, 3)) * 10.0 ** (i % 5)
    delta = upd(delta, g)
    assert float(jnp.abs(delta).max()) <= 0.1 + 1e-7
  # one step from 0 is ε·sign(g) exactly
  g = jnp.array([[1.0, -2.0, 0.5]])
  np.testing.assert_allclose(upd(jnp.zeros((1, 3)), g), [[0.1, -0.1, 0.1]])


def test_free_at_replays_each_batch_m_times_with_the_perturbation_carried_over():
  """One step makes m optimizer updates from m gradient evaluations, each at the perturbation the
  previous replay left, always inside the ε-ball; the first replay sees the clean batch."""
  m, eps = 3, 0.05
  model = create_model('small_cnn', num_classes=4, width=1)
  state = create_train_state(model, jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32), optax.sgd(0.1))
  batch = {
    'image': np.asarray(jax.random.randint(jax.random.key(1), (6, 8, 8, 1), 0, 256), np.uint8),
    'label': np.arange(6) % 4,
  }
  inner = free_objective(model.apply, 4, epsilon=eps, replays=m)
  calls, seen = [], []

  def counting_loss(*args, delta, **kw):
    calls.append(1)  # once per traced gradient evaluation
    jax.debug.callback(lambda v: seen.append(float(v)), jnp.abs(delta).max())
    return inner.loss_fn(*args, delta=delta, **kw)

  objective = Objective(counting_loss, replays=m, update_delta=inner.update_delta)
  new, _ = jax.jit(make_train_step(objective))(state, batch, jax.random.key(2))
  jax.block_until_ready(new)
  assert len(calls) == m
  assert int(new.step) == m
  assert seen[0] == 0.0 and seen[1] == pytest.approx(eps) and max(seen) <= eps + 1e-7


def test_free_at_and_fgsm_rs_train(synthetic_config, tmp_path):
  for objective in ('free_at', 'fgsm_rs'):
    c = synthetic_config.copy_and_resolve_references()
    c.train.objective = objective
    c.train.free_replays = 2
    c.train.attack = dict(name='pgd', epsilon=0.05, step_size=0.02, num_steps=2)
    out = train.train_and_evaluate(c, str(tmp_path / objective), progress=False)
    assert out['test_accuracy'] > 0.5
    if objective == 'free_at':
      assert int(out['state'].step) == 2 * c.train.num_steps  # m updates per batch


def test_guard_stops_on_a_collapse_and_returns_the_best_epoch(synthetic_config, tmp_path, monkeypatch):
  """A collapse forced on the guard (its accuracy reads 0.5, 0.6, then 0.1): training stops after
  the third epoch, the run's result and final checkpoint are the second epoch's state, and a
  resumed run trains no further."""
  c = synthetic_config
  c.train.num_steps = 0
  c.train.num_epochs = 6
  c.train.batch_size = 64
  c.train.guard = dict(holdout=64, drop=0.2, attack=dict(name='fgsm', epsilon=0.05))
  readings = iter([0.5, 0.6, 0.1, 0.9, 0.9, 0.9])
  trees = {}
  real_check = OverfitGuard.check

  def forced(self, epoch, variables):
    return next(readings)

  def spy(self, epoch, step, tree, variables):
    trees[epoch] = tree
    return real_check(self, epoch, step, tree, variables)

  monkeypatch.setattr(OverfitGuard, 'accuracy', forced)
  monkeypatch.setattr(OverfitGuard, 'check', spy)
  out = train.train_and_evaluate(c, str(tmp_path), progress=False)
  spe = (256 - 64) // 64
  assert out['steps'] == 3 * spe
  assert trees_equal(out['state'].params, trees[2]['params'])
  assert not trees_equal(trees[2]['params'], trees[3]['params'])
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert [r['guard_robust_accuracy'] for r in rows if 'guard_robust_accuracy' in r] == [0.5, 0.6, 0.1]
  restored, _, step = train.Checkpointer(os.path.join(tmp_path, 'checkpoints')).restore_latest_intact(
    jax.tree.map(np.asarray, out['state'].to_checkpoint())
  )
  assert step == 3 * spe and trees_equal(restored['params'], trees[2]['params'])
  again = train.train_and_evaluate(c, str(tmp_path), progress=False)
  assert again['steps'] == 3 * spe and trees_equal(again['state'].params, trees[2]['params'])


def test_guard_holds_its_examples_out_of_training(synthetic_config):
  from jaxrobust.train import build_experiment

  synthetic_config.train.guard = dict(holdout=64, drop=0.2, attack=dict(name='fgsm', epsilon=0.05))
  exp = build_experiment(synthetic_config)
  assert exp.dataset.num_train == 256 - 64 and len(exp.guard.images) == 64
  full = build_experiment(_no_guard(synthetic_config))
  np.testing.assert_array_equal(exp.guard.images, full.dataset.train_images[-64:])
  assert keys.TAG_GUARD != keys.TAG_FINAL_EVAL


def _no_guard(c):
  c = c.copy_and_resolve_references()
  c.train.guard.holdout = 0
  return c


def test_runs_stored_before_the_new_fields_still_load_and_resume(synthetic_config, tmp_path):
  """config.json written before `fgsm_rs_alpha`, `free_replays` and `guard` existed: the fields
  take their defaults (which train what was trained then), so loading and resuming work."""
  from jaxrobust.train.restore import load_trained

  synthetic_config.train.num_steps = 4
  train.train_and_evaluate(synthetic_config, str(tmp_path), progress=False)
  path = tmp_path / 'config.json'
  stored = json.loads(path.read_text())
  for field in ('fgsm_rs_alpha', 'free_replays', 'guard'):
    del stored['train'][field]
  path.write_text(json.dumps(stored))
  load_trained(str(tmp_path))
  synthetic_config.train.num_steps = 8
  assert train.train_and_evaluate(synthetic_config, str(tmp_path), progress=False)['steps'] == 8
