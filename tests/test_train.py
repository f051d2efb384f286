import os

import jax
import numpy as np
import pytest

from jaxrobust import train
from jaxrobust.train import optim


def _params(out):
  return jax.tree.leaves(jax.tree.map(np.asarray, out['state'].params))


def _equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_same_seed_gives_bit_identical_parameters(synthetic_config, tmp_path):
  a = train.train_and_evaluate(synthetic_config, str(tmp_path / 'a'), progress=False)
  b = train.train_and_evaluate(synthetic_config, str(tmp_path / 'b'), progress=False)
  synthetic_config.seed = 1
  c = train.train_and_evaluate(synthetic_config, str(tmp_path / 'c'), progress=False)
  assert _equal(_params(a), _params(b))
  assert not _equal(_params(a), _params(c))


def test_training_learns_and_writes_metrics(synthetic_config, tmp_path):
  synthetic_config.train.num_steps = 40
  out = train.train_and_evaluate(synthetic_config, str(tmp_path), progress=False)
  assert out['test_accuracy'] > 0.9
  rows = train.read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert rows[-1]['test_accuracy'] == out['test_accuracy']
  assert rows[0]['train_loss'] > rows[-2]['train_loss']
  assert os.path.exists(tmp_path / 'config.json')


def test_killed_run_resumes_bit_identically(synthetic_config, tmp_path):
  full = train.train_and_evaluate(synthetic_config, str(tmp_path / 'full'), progress=False)
  synthetic_config.train.stop_at_step = 4  # "killed" right after the step-4 checkpoint
  part = train.train_and_evaluate(synthetic_config, str(tmp_path / 'resume'), progress=False)
  assert part['steps'] == 4
  synthetic_config.train.stop_at_step = 0
  resumed = train.train_and_evaluate(synthetic_config, str(tmp_path / 'resume'), progress=False)
  assert resumed['steps'] == 8
  assert _equal(_params(full), _params(resumed))
  # The first run's config (with stop_at_step=4) was kept beside the new one, not overwritten.
  assert '"stop_at_step": 4' in open(tmp_path / 'resume' / 'config.json.1').read()


def test_checkpoint_restore_gives_saved_step_and_state(synthetic_config, tmp_path):
  out = train.train_and_evaluate(synthetic_config, str(tmp_path), progress=False)
  ck = train.Checkpointer(str(tmp_path / 'checkpoints'))
  assert ck.latest_step() == 8
  tree, meta = ck.restore(out['state'].to_checkpoint())
  assert int(tree['step']) == 8 and meta['step'] == 8
  assert type(tree['opt_state']) is type(out['state'].opt_state)  # optax NamedTuples survive
  assert _equal(jax.tree.leaves(jax.tree.map(np.asarray, tree)),
                jax.tree.leaves(jax.tree.map(np.asarray, out['state'].to_checkpoint())))


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(synthetic_config, tmp_path):
  synthetic_config.train.num_steps = 4
  train.train_and_evaluate(synthetic_config, str(tmp_path), progress=False)
  synthetic_config.train.num_steps = 12
  synthetic_config.train.schedule = 'step'
  synthetic_config.train.boundaries_epochs = (0.6,)   # lr ×1e30 from step 4.8 on
  synthetic_config.train.schedule_factor = 1e30
  with pytest.raises(train.NonFiniteLossError, match='last good checkpoint'):
    train.train_and_evaluate(synthetic_config, str(tmp_path), progress=False)
  ck = train.Checkpointer(str(tmp_path / 'checkpoints'))
  step = ck.latest_step()
  assert step is not None and step <= 8
  tree, _ = ck.restore(_template(synthetic_config))
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(tree['params']))


def _template(config):
  ds = train.load_data(config)
  model = train.build_model(config, ds)
  spe = ds.num_train // config.train.batch_size
  from jaxrobust.train.loop import build_optimizer
  tx = build_optimizer(config, spe, 12)
  return train.create_train_state(model, jax.random.key(0), np.zeros((1,) + ds.image_shape, np.float32),
                                  tx).to_checkpoint()


def test_decay_mask_excludes_noise_scale():
  params = {'conv': {'kernel': 1.0, 'noise_scale': 2.0}, 'dense': {'bias': 3.0}}
  assert optim.decay_mask(params) == {'conv': {'kernel': True, 'noise_scale': False},
                                      'dense': {'bias': True}}


def test_schedules():
  s = optim.make_schedule('halving', 0.1, 1000, 10, halving_start_epoch=75)
  assert float(s(74 * 10 - 1)) == pytest.approx(0.1)       # epoch 74 (1-based)
  assert float(s(74 * 10)) == pytest.approx(0.05)          # epoch 75
  assert float(s(99 * 10)) == pytest.approx(0.1 * 0.5 ** 26)  # epoch 100: the released checkpoint's lr
  c = optim.make_schedule('cosine', 0.1, 100, 10)
  assert float(c(0)) == pytest.approx(0.1) and float(c(100)) == pytest.approx(0.0, abs=1e-9)
  st = optim.make_schedule('step', 0.1, 100, 10, boundaries_epochs=(2, 4))
  assert [float(st(i)) for i in (19, 20, 40)] == pytest.approx([0.1, 0.01, 0.001])
  with pytest.raises(ValueError, match='unknown schedule'):
    optim.make_schedule('linear', 0.1, 1, 1)
