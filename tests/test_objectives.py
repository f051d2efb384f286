"""The defenses' objectives: closed forms, policy statistics, and every defense training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrobust import models as M
from jaxrobust import train
from jaxrobust.train import objectives, optim
from jaxrobust.train.metrics import read_jsonl
from tests.conftest import leaves


def test_mixed_policy_frequencies_and_determinism():
  n = 8000
  keys = jax.random.split(jax.random.key(0), n)
  branches = np.asarray(
    jax.vmap(lambda k: objectives.mixed_policy_branch(k, ['pgd', 'fgsm', 'cw', 'noise']))(keys)
  )
  p = np.array([4, 1, 1, 1, 1]) / 8
  freq = np.bincount(branches, minlength=5) / n
  assert np.all(np.abs(freq - p) <= 4 * np.sqrt(p * (1 - p) / n)), freq
  k = jax.random.key(42)
  assert int(objectives.mixed_policy_branch(k, ['a', 'b'])) == int(
    objectives.mixed_policy_branch(k, ['a', 'b'])
  )


@pytest.mark.long
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
  tx = optim.make_optimizer('sgd', optax.constant_schedule(0.1), weight_decay=0.5, momentum=0.0)
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
  assert float(objectives.softmax_cross_entropy(logits, y, k, eps)) == pytest.approx(expected, rel=1e-6)


MIXED = {
  'pgd': dict(name='pgd', epsilon=0.1, num_steps=2),
  'fgsm': dict(name='fgsm', epsilon=0.1),
  'cw': dict(name='cw_l2', max_iterations=3, binary_search_steps=1, initial_const=1.0),
  'noise': dict(name='uniform', epsilon=0.1),
}


@pytest.mark.parametrize(
  'objective,model,extra',
  [
    ('pgd_at', 'small_cnn', {}),
    ('mixed', 'small_cnn', {'mixed_attacks': MIXED}),
    ('pni', 'small_cnn_pni', {}),
    ('lwta_elbo', 'small_cnn_lwta', {'kl_beta': 1.0}),
    ('trades', 'small_cnn', {}),
    ('gaussian_noise', 'small_cnn', {'noise_sigma': 0.25}),
    ('label_smoothing', 'small_cnn', {'label_smoothing': 0.1}),
  ],
)
@pytest.mark.long
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
  rows = read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert all(np.isfinite(row['train_loss']) for row in rows if 'train_loss' in row)
  assert r['test_accuracy'] > 0.5


def test_unknown_objective_is_named(synthetic_config, tmp_path):
  synthetic_config.train.objective = 'fast_at'
  with pytest.raises(train.ConfigError, match="config.train.objective: unknown objective 'fast_at'"):
    train.train_and_evaluate(synthetic_config, str(tmp_path / 'a'), progress=False)
  assert not (tmp_path / 'a').exists()


@pytest.mark.long
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
    rows = read_jsonl(str(tmp_path / dispatch / 'metrics.jsonl'))
    runs[dispatch] = ([row['train_branch'] for row in rows if 'train_branch' in row], r['state'].params)
  assert runs['host'][0] == runs['switch'][0] and len(set(runs['host'][0])) >= 3, runs['host'][0]
  for a, b in zip(leaves(runs['host'][1]), leaves(runs['switch'][1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_unknown_branch_dispatch_is_named(synthetic_config, tmp_path):
  synthetic_config.train.objective = 'mixed'
  synthetic_config.train.mixed_attacks = MIXED
  synthetic_config.train.branch_dispatch = 'python'
  with pytest.raises(train.ConfigError, match="config.train.branch_dispatch: unknown dispatch 'python'"):
    train.train_and_evaluate(synthetic_config, str(tmp_path), progress=False)


def test_mixed_objective_draws_its_branch_from_one_key_schedule():
  """The objective's own choose_branch, fed the step's objective key, is the branch lax.switch
  takes inside the step (the metrics report it)."""
  model = M.create_model('small_cnn', num_classes=4)
  obj = objectives.mixed_objective(model.apply, 4, MIXED)
  assert obj.num_branches == 5 and obj.choose_branch is not None
  x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))
  y = jnp.arange(8) % 4
  v = model.init(jax.random.key(1), x)
  ex = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(8))
  loss_fn = jax.jit(lambda p, k: obj.loss_fn(p, {}, x, y, k, example_keys=ex)[1][1]['branch'])
  seen = set()
  for s in range(8):
    k = jax.random.key(10 + s)
    seen.add(int(loss_fn(v['params'], k)))
    assert int(loss_fn(v['params'], k)) == int(obj.choose_branch(k))
  assert len(seen) >= 2
  assert objectives.clean_objective(model.apply, 4).num_branches == 1


def test_trades_runs_clean_and_adversarial_batches_as_two_batchnorm_passes():
  """With BatchNorm, TRADES normalises x and x_adv each with its own statistics (two train-mode
  passes, as its reference): the clean logits equal a train-mode pass on x alone."""
  model = M.create_model('wrn_tiny', num_classes=4)
  x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3))
  y = jnp.arange(8) % 4
  v = model.init(jax.random.key(1), x)
  spec = dict(name='pgd', epsilon=0.1, step_size=0.05, num_steps=1)
  obj = objectives.trades_objective(model.apply, 4, spec, beta=0.0)  # β = 0: loss = CE(f(x))
  ex = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(8))
  loss, (bs, _) = obj.loss_fn(v['params'], v['batch_stats'], x, y, jax.random.key(4), example_keys=ex)
  logits, upd = model.apply(v, x, train=True, mutable=['batch_stats'])
  assert float(loss) == pytest.approx(float(objectives.softmax_cross_entropy(logits, y, 4)), rel=1e-5)
  # The running statistics saw two batches (clean, then adversarial), not one pooled batch.
  assert not np.allclose(leaves(bs)[0], leaves(upd['batch_stats'])[0])


def test_elbo_adds_the_scaled_kl():
  assert float(objectives.elbo_loss(jnp.array(1.0), jnp.array(600.0), 60_000, beta=2.0)) == pytest.approx(
    1.02
  )


def test_lwta_kl_term_enters_the_loss_only_with_its_beta():
  """β = 0 (the LWTA authors' loss) trains on cross-entropy alone but still reports the KL; β = 1
  adds exactly ΣKL/N_train (the ELBO); other adversarial objectives report no KL."""
  model = M.create_model('small_cnn_lwta', num_classes=4)
  x = jax.random.uniform(jax.random.key(0), (8, 8, 8, 1))
  y = jnp.arange(8) % 4
  params = model.init({'params': jax.random.key(1), M.STOCHASTIC: jax.random.key(2)}, x)['params']
  attack = dict(name='pgd', epsilon=0.1, step_size=0.05, num_steps=2)
  ekeys = jax.random.split(jax.random.key(3), 8)

  def run(kl_beta):
    obj = objectives.adversarial_objective(model.apply, 4, attack, kl_beta=kl_beta, num_train=1000)
    return obj.loss_fn(params, {}, x, y, jax.random.key(4), example_keys=ekeys)

  (ce, (_, m_none)), (l0, (_, m0)), (l1, (_, m1)) = run(None), run(0.0), run(1.0)
  assert 'kl' not in m_none and float(m0['kl']) > 0
  assert float(l0) == float(ce)
  np.testing.assert_allclose(float(l1), float(ce) + float(m1['kl']) / 1000, rtol=1e-6)
