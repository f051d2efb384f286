"""Data-parallel training steps, the defenses' objectives, and multi-host lockstep."""
import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrobust import models as M
from jaxrobust import train
from jaxrobust.train import objectives
from tests.parallel_config import tiny_parallel_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _leaves(tree):
  return [np.asarray(l) for l in jax.tree.leaves(tree)]


@pytest.fixture(scope='module')
def single_device_run(tmp_path_factory):
  c = tiny_parallel_config()
  c.train.parallel = 'none'
  return train.train_and_evaluate(c, str(tmp_path_factory.mktemp('single')), progress=False)


@pytest.mark.parametrize('mode', ['shard_map', 'pmap'])
def test_data_parallel_step_equals_single_device(single_device_run, tmp_path, mode):
  assert jax.device_count() == 4
  c = tiny_parallel_config()
  c.train.parallel = mode
  r = train.train_and_evaluate(c, str(tmp_path), progress=False)
  for a, b in zip(_leaves(single_device_run['state'].params), _leaves(r['state'].params)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  for a, b in zip(_leaves(single_device_run['state'].batch_stats), _leaves(r['state'].batch_stats)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)   # BatchNorm statistics synced (pmean)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_train_in_lockstep_like_one(single_device_run, tmp_path):
  port = _free_port()
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS='')
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', 'multihost_worker.py'), str(p), '2',
                             str(port), str(tmp_path / 'work'), str(tmp_path / f'p{p}.npz')],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
           for p in range(2)]
  for p in procs:
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out.decode()[-3000:]
  runs = [np.load(tmp_path / f'p{p}.npz') for p in range(2)]
  assert int(runs[0]['processes']) == 2 and int(runs[0]['devices']) == 4
  params = [[r[f'arr_{i}'] for i in range(len(r.files) - 2)] for r in runs]
  for a, b in zip(*params):
    np.testing.assert_array_equal(a, b)                     # lockstep: identical on both hosts
  for a, b in zip(params[0], _leaves(single_device_run['state'].params)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)  # = one process on the global batch
  # Only process 0 wrote metrics.
  assert sum(1 for _ in open(tmp_path / 'work' / 'metrics.jsonl')) == 2


def test_mixed_policy_frequencies_and_determinism():
  n = 8000
  keys = jax.random.split(jax.random.key(0), n)
  branches = np.asarray(jax.vmap(lambda k: objectives.mixed_policy_branch(k, ['pgd', 'fgsm', 'cw', 'noise']))(keys))
  p = np.array([4, 1, 1, 1, 1]) / 8
  freq = np.bincount(branches, minlength=5) / n
  assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n)), freq
  k = jax.random.key(42)
  assert int(objectives.mixed_policy_branch(k, ['a', 'b'])) == int(objectives.mixed_policy_branch(k, ['a', 'b']))


def test_pni_noise_scale_gets_gradient_and_no_weight_decay():
  m = M.create_model('small_cnn_pni', num_classes=10)
  x = jax.random.uniform(jax.random.key(0), (4, 28, 28, 1))
  y = jnp.arange(4)
  v = m.init({'params': jax.random.key(0), 'stochastic': jax.random.key(1)}, x)

  def loss(p):
    logits = m.apply({'params': p}, x, rngs={'stochastic': jax.random.key(2)})
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  g = jax.grad(loss)(v['params'])
  scales = {k: float(g[k]['noise_scale']) for k in g}
  assert all(np.isfinite(s) and s != 0.0 for s in scales.values()), scales
  # Noise is on at test time: two keys give two outputs; one key gives one.
  a = m.apply(v, x, rngs={'stochastic': jax.random.key(3)})
  assert not np.array_equal(a, m.apply(v, x, rngs={'stochastic': jax.random.key(4)}))
  # Weight decay: with a zero gradient only decayed parameters move.
  tx = train.make_optimizer('sgd', optax.constant_schedule(0.1), weight_decay=0.5, momentum=0.0)
  zeros = jax.tree.map(jnp.zeros_like, v['params'])
  upd, _ = tx.update(zeros, tx.init(v['params']), v['params'])
  for layer in upd:
    assert float(upd[layer]['noise_scale']) == 0.0
    assert float(jnp.abs(upd[layer]['kernel']).max()) > 0.0


def test_label_smoothing_matches_closed_form():
  logits = jnp.array([[2.0, -1.0, 0.5, 0.0], [0.1, 0.2, 0.3, 3.0]])
  y = jnp.array([0, 2])
  eps, k = 0.1, 4
  logp = np.asarray(jax.nn.log_softmax(logits))
  expected = np.mean([-(1 - eps) * logp[i, y[i]] - eps / k * logp[i].sum() for i in range(2)])
  assert float(train.cross_entropy(logits, y, k, eps)) == pytest.approx(expected, rel=1e-6)


MIXED = {'pgd': dict(name='pgd', epsilon=0.1, num_steps=2), 'fgsm': dict(name='fgsm', epsilon=0.1),
         'cw': dict(name='cw_l2', max_iterations=3, binary_search_steps=1, initial_const=1.0),
         'noise': dict(name='uniform', epsilon=0.1)}


@pytest.mark.parametrize('objective,model,extra', [
    ('pgd_at', 'small_cnn', {}), ('mixed', 'small_cnn', {'mixed_attacks': MIXED}),
    ('pni', 'small_cnn_pni', {}), ('lwta_elbo', 'small_cnn_lwta', {'kl_beta': 1.0}),
    ('trades', 'small_cnn', {}), ('gaussian_noise', 'small_cnn', {}), ('label_smoothing', 'small_cnn', {})])
def test_every_defense_trains(synthetic_config, tmp_path, objective, model, extra):
  c = synthetic_config
  c.model.name = model
  c.train.objective = objective
  # microbatch=16 < the batch of 32: the chunked-gradient path runs inside every objective.
  c.train.attack = dict(name='pgd', epsilon=0.1, step_size=0.05, num_steps=2, microbatch=16)
  c.train.num_steps = 12
  for k, v in extra.items():
    c.train[k] = v
  r = train.train_and_evaluate(c, str(tmp_path), progress=False)
  rows = train.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert all(np.isfinite(row['train_loss']) for row in rows if 'train_loss' in row)
  assert r['test_accuracy'] > 0.5


def test_unknown_objective_and_parallel_mode_are_named(synthetic_config, tmp_path):
  synthetic_config.train.objective = 'fast_at'
  with pytest.raises(ValueError, match="unknown training objective 'fast_at'"):
    train.train_and_evaluate(synthetic_config, str(tmp_path / 'a'), progress=False)
  with pytest.raises(ValueError, match="unknown parallel mode 'dp'"):
    train.make_parallel_step(lambda ax: None, 'dp')


@pytest.mark.parametrize('host_mode', ['none', 'shard_map'])
def test_mixed_training_host_dispatch_equals_switch(synthetic_config, tmp_path, host_mode):
  # The host draws each step's branch from the same key that lax.switch uses in the program, so
  # both dispatches run the same branch sequence and reach the same parameters.
  runs = {}
  for dispatch, mode in (('switch', 'none'), ('host', host_mode)):
    c = synthetic_config.copy_and_resolve_references()
    c.train.objective = 'mixed'
    c.train.mixed_attacks = MIXED
    c.train.num_steps = 10
    c.train.log_every = 1
    c.train.parallel = mode
    c.train.branch_dispatch = dispatch
    r = train.train_and_evaluate(c, str(tmp_path / dispatch), progress=False)
    rows = train.read_jsonl(str(tmp_path / dispatch / 'metrics.jsonl'))
    runs[dispatch] = ([row['train_branch'] for row in rows if 'train_branch' in row], r['state'].params)
  assert runs['host'][0] == runs['switch'][0] and len(set(runs['host'][0])) >= 3, runs['host'][0]
  for a, b in zip(_leaves(runs['host'][1]), _leaves(runs['switch'][1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_unknown_branch_dispatch_is_named(synthetic_config, tmp_path):
  synthetic_config.train.objective = 'mixed'
  synthetic_config.train.mixed_attacks = MIXED
  synthetic_config.train.branch_dispatch = 'python'
  with pytest.raises(ValueError, match="unknown branch dispatch 'python'"):
    train.train_and_evaluate(synthetic_config, str(tmp_path), progress=False)
