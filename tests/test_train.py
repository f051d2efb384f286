"""The training loop, the step, checkpoints and the work directory: bit-identical reruns and
resumes, integrity of what is saved, one writer per work directory."""

import glob
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrobust import keys
from jaxrobust import train
from jaxrobust.train import optim
from jaxrobust.train.objectives import clean_objective
from jaxrobust.train.state import create_train_state
from jaxrobust.train.step import make_train_step
from tests.conftest import leaves, trees_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(config, workdir, **kw):
  return train.train_and_evaluate(config, str(workdir), progress=False, **kw)


def _steps(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, 'checkpoints', '[0-9]*')))


def test_same_seed_gives_bit_identical_parameters(synthetic_config, tmp_path):
  a = _run(synthetic_config, tmp_path / 'a')
  b = _run(synthetic_config, tmp_path / 'b')
  synthetic_config.seed = 1
  c = _run(synthetic_config, tmp_path / 'c')
  assert trees_equal(a['state'].params, b['state'].params)
  assert not trees_equal(a['state'].params, c['state'].params)


def test_training_learns_and_writes_metrics(synthetic_config, tmp_path):
  synthetic_config.train.num_steps = 40
  out = _run(synthetic_config, tmp_path)
  assert out['test_accuracy'] > 0.9
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert rows[-1]['test_accuracy'] == out['test_accuracy']
  assert rows[0]['train_loss'] > rows[-2]['train_loss']
  assert os.path.exists(tmp_path / 'config.json')


def test_train_step_is_one_sgd_step_on_the_objective():
  """One step of the per-device step, without the loop: the update equals SGD on the objective's
  gradient, the step counter advances, and the step's keys follow the key schedule."""
  from jaxrobust.models import create_model

  model = create_model('small_cnn', num_classes=4, width=1)
  tx = optax.sgd(0.1)
  state = create_train_state(model, jax.random.key(0), np.zeros((1, 8, 8, 1), np.float32), tx)
  batch = {
    'image': np.asarray(jax.random.randint(jax.random.key(1), (6, 8, 8, 1), 0, 256), np.uint8),
    'label': np.arange(6) % 4,
  }
  objective = clean_objective(model.apply, 4)
  new, metrics = jax.jit(make_train_step(objective))(state, batch, jax.random.key(2))
  x = jnp.asarray(batch['image'], jnp.float32) / 255
  k = keys.step_keys(jax.random.key(2), 0)

  def loss(p):
    return objective.loss_fn(p, {}, x, jnp.asarray(batch['label']), k.objective, example_keys=None)[0]

  g = jax.jit(jax.grad(loss))(state.params)
  expected = jax.tree.map(lambda p, gg: p - 0.1 * gg, state.params, g)
  for a, b in zip(leaves(new.params), leaves(expected)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert int(new.step) == 1
  assert float(metrics['loss']) == pytest.approx(float(jax.jit(loss)(state.params)), rel=1e-5)
  assert float(metrics['grad_norm']) == pytest.approx(float(optax.tree.norm(g)), rel=1e-5)


def test_killed_run_resumes_bit_identically(synthetic_config, tmp_path):
  full = _run(synthetic_config, tmp_path / 'full')
  synthetic_config.train.stop_at_step = 4  # "killed" right after the step-4 checkpoint
  part = _run(synthetic_config, tmp_path / 'resume')
  assert part['steps'] == 4
  synthetic_config.train.stop_at_step = 0
  resumed = _run(synthetic_config, tmp_path / 'resume')
  assert resumed['steps'] == 8
  assert trees_equal(full['state'].params, resumed['state'].params)
  # The first run's config (with stop_at_step=4) was kept beside the new one, not overwritten.
  assert '"stop_at_step": 4' in open(tmp_path / 'resume' / 'config.json.1').read()
  # No step is logged twice after the resume.
  steps = [
    json.loads(line)['step'] for line in open(tmp_path / 'resume' / 'metrics.jsonl') if 'train_loss' in line
  ]
  assert steps == [4, 8]
  # Each process's final record says which steps its wall time covers.
  ends = [json.loads(line) for line in open(tmp_path / 'resume' / 'metrics.jsonl') if 'train_time_s' in line]
  assert [(e['step'], e['trained_from_step']) for e in ends] == [(4, 0), (8, 4)]
  assert resumed['trained_from_step'] == 4 and full['trained_from_step'] == 0


def test_metrics_logged_after_the_resumed_checkpoint_are_not_duplicated(synthetic_config, tmp_path):
  synthetic_config.train.log_every = 1
  synthetic_config.train.num_steps = 8
  _run(synthetic_config, tmp_path)
  # A run killed after step 6 had logged steps 5 and 6 past its last checkpoint (step 4).
  ckpt = train.Checkpointer(str(tmp_path / 'checkpoints'))
  ckpt._set_aside(8)
  ckpt.close()
  with open(tmp_path / 'metrics.jsonl') as f:
    rows = [r for r in f if json.loads(r)['step'] <= 6 and 'train_loss' in r]
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.writelines(rows + ['{"step": 7, "trunc'])  # and died while writing a row
  _run(synthetic_config, tmp_path)
  logged = [json.loads(line)['step'] for line in open(tmp_path / 'metrics.jsonl') if 'train_loss' in line]
  assert logged == list(range(1, 9))


def test_checkpoint_restore_gives_saved_step_and_state(synthetic_config, tmp_path):
  out = _run(synthetic_config, tmp_path)
  ck = train.Checkpointer(str(tmp_path / 'checkpoints'))
  assert ck.latest_step() == 8
  tree, meta = ck.restore(out['state'].to_checkpoint())
  assert int(tree['step']) == 8 and meta['step'] == 8
  assert type(tree['opt_state']) is type(out['state'].opt_state)  # optax NamedTuples survive
  assert trees_equal(tree, out['state'].to_checkpoint())


def _damage(step_dir, how):
  files = sorted(
    (
      p
      for p in glob.glob(os.path.join(step_dir, '**', '*'), recursive=True)
      if os.path.isfile(p) and os.path.getsize(p) > 64 and 'meta' not in p
    ),
    key=os.path.getsize,
  )
  target = files[-1]  # the largest file: array data
  if how == 'flip':
    data = bytearray(open(target, 'rb').read())
    for i in range(len(data) // 3, len(data) // 3 + 16):
      data[i] ^= 0xFF
    open(target, 'wb').write(bytes(data))
  elif how == 'truncate':
    with open(target, 'r+b') as f:
      f.truncate(os.path.getsize(target) // 2)
  else:
    os.remove(target)


@pytest.mark.parametrize('how', ['flip', 'truncate', 'remove'])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(synthetic_config, tmp_path, how):
  """The run restores the newest intact step, bit-identical to a run that stopped there, warns
  with the skipped step and keeps the damaged one aside."""
  synthetic_config.train.stop_at_step = 4
  stopped = _run(synthetic_config, tmp_path / 'stopped')
  synthetic_config.train.stop_at_step = 0
  _run(synthetic_config, tmp_path / 'run')
  assert _steps(tmp_path / 'run') == [4, 8]
  _damage(tmp_path / 'run' / 'checkpoints' / '8', how)
  from jaxrobust.train.restore import load_trained

  with pytest.warns(UserWarning, match='skipping damaged checkpoint step 8'):
    _, _, variables, _ = load_trained(str(tmp_path / 'run'))
  assert trees_equal(variables['params'], stopped['state'].params)
  assert os.path.isdir(tmp_path / 'run' / 'checkpoints.corrupt' / '8')  # kept, not deleted
  assert _steps(tmp_path / 'run') == [4]


def test_checksum_detects_flipped_bytes(synthetic_config, tmp_path):
  out = _run(synthetic_config, tmp_path)
  _damage(tmp_path / 'checkpoints' / '8', 'flip')
  ck = train.Checkpointer(str(tmp_path / 'checkpoints'))
  with pytest.raises(train.CheckpointError, match='step 8'):
    ck.restore(out['state'].to_checkpoint(), 8)


def test_no_checkpoint_yet_is_said_plainly(tmp_path):
  ck = train.Checkpointer(str(tmp_path / 'checkpoints'))
  with pytest.raises(train.NoCheckpointError, match='no checkpoint has been written'):
    ck.restore({'a': np.zeros(2)})
  with pytest.raises(ValueError, match='keep_checkpoints.*0 would delete every checkpoint'):
    train.Checkpointer(str(tmp_path / 'c2'), max_to_keep=0)


def test_non_finite_loss_names_a_checkpoint_that_loads_with_finite_logits(synthetic_config, tmp_path):
  synthetic_config.train.num_steps = 12
  synthetic_config.train.schedule = 'step'
  synthetic_config.train.boundaries_epochs = (0.6,)  # lr ×1e30 from step 4.8 on
  synthetic_config.train.schedule_factor = 1e30
  with pytest.raises(train.NonFiniteLossError, match=r'last good checkpoint \(step (\d+)\)') as e:
    _run(synthetic_config, tmp_path)
  named = int(e.value.args[0].split('(step ')[1].split(')')[0])
  from jaxrobust.train.restore import load_trained

  _, model, variables, ds = load_trained(str(tmp_path))
  assert _steps(tmp_path)[-1] == named
  logits = model.apply(variables, jnp.asarray(ds.test_images[:64], jnp.float32) / 255)
  assert np.all(np.isfinite(np.asarray(logits)))


def test_non_finite_loss_before_any_checkpoint_says_so(synthetic_config, tmp_path):
  synthetic_config.train.learning_rate = 1e30
  with pytest.raises(train.NonFiniteLossError, match='No checkpoint was written'):
    _run(synthetic_config, tmp_path)


def test_second_run_on_a_locked_workdir_is_refused(synthetic_config, tmp_path):
  holder = subprocess.Popen(
    [
      sys.executable,
      '-c',
      (
        'import sys, time; from jaxrobust.train.workdir import WorkdirLock; '
        f'WorkdirLock({str(tmp_path)!r}).acquire(); print("locked", flush=True); time.sleep(60)'
      ),
    ],
    cwd=ROOT,
    stdout=subprocess.PIPE,
    text=True,
  )
  try:
    assert holder.stdout.readline().strip() == 'locked'
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(train.WorkdirLockedError, match=f'pid {holder.pid} on host'):
      _run(synthetic_config, tmp_path)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written
  finally:
    holder.kill()
    holder.wait()
  time.sleep(0.1)
  with pytest.warns(UserWarning, match=f'stale lock.*pid {holder.pid}'):
    _run(synthetic_config, tmp_path)  # a dead holder's lock is taken over


def test_resuming_with_another_model_or_objective_is_refused_before_anything_changes(
  synthetic_config, tmp_path
):
  synthetic_config.train.num_steps = 4
  _run(synthetic_config, tmp_path)
  before = {p: open(os.path.join(tmp_path, p), 'rb').read() for p in ('config.json', 'metrics.jsonl')}
  other = synthetic_config.copy_and_resolve_references()
  other.model.name = 'small_cnn_lwta'
  other.train.objective = 'pgd_at'
  with pytest.raises(
    train.ConfigMismatchError,
    match=r"model.name: 'small_cnn' -> 'small_cnn_lwta'"
    r"(.|\n)*train.objective: 'clean' -> 'pgd_at'",
  ):
    _run(other, tmp_path)
  assert {p: open(os.path.join(tmp_path, p), 'rb').read() for p in before} == before
  assert not os.path.exists(tmp_path / 'config.json.1')
  # Running longer is not a different training: allowed, and recorded.
  synthetic_config.train.num_steps = 8
  assert _run(synthetic_config, tmp_path)['steps'] == 8
  # An explicit override continues with another objective.
  other = synthetic_config.copy_and_resolve_references()
  other.train.objective = 'label_smoothing'
  other.train.label_smoothing = 0.1
  other.train.num_steps = 12
  assert _run(other, tmp_path, allow_config_change=True)['steps'] == 12


def test_decay_mask_excludes_noise_scale():
  params = {'conv': {'kernel': 1.0, 'noise_scale': 2.0}, 'dense': {'bias': 3.0}}
  assert optim.decay_mask(params) == {'conv': {'kernel': True, 'noise_scale': False}, 'dense': {'bias': True}}


def test_schedules():
  s = optim.make_schedule('halving', 0.1, 1000, 10, halving_start_epoch=75)
  assert float(s(74 * 10 - 1)) == pytest.approx(0.1)  # epoch 74 (1-based)
  assert float(s(74 * 10)) == pytest.approx(0.05)  # epoch 75
  assert float(s(99 * 10)) == pytest.approx(0.1 * 0.5**26)  # epoch 100: the released checkpoint's lr
  c = optim.make_schedule('cosine', 0.1, 100, 10)
  assert float(c(0)) == pytest.approx(0.1) and float(c(100)) == pytest.approx(0.0, abs=1e-9)
  st = optim.make_schedule('step', 0.1, 100, 10, boundaries_epochs=(2, 4))
  assert [float(st(i)) for i in (19, 20, 40)] == pytest.approx([0.1, 0.01, 0.001])
  with pytest.raises(ValueError, match='unknown schedule'):
    optim.make_schedule('linear', 0.1, 1, 1)


def test_a_stored_config_from_before_the_init_default_changed_keeps_flax_init():
  """`model.init` became 'torch' by default; a config.json without the field was trained with
  Flax's initialisers, so it reads back as 'flax', while a stored value is kept as it is."""
  from jaxrobust.train.config import default_config, with_defaults

  stored = default_config().to_dict()
  assert stored['model']['init'] == 'torch'
  del stored['model']['init']
  assert with_defaults(stored).model.init == 'flax'
  stored['model']['init'] = 'torch'
  assert with_defaults(stored).model.init == 'torch'


def test_clean_warm_up_steps_are_a_clean_runs_steps_then_the_attack_starts(synthetic_config, tmp_path):
  """`train.clean_epochs` (PNI's reference delays its adversarial training): the first epoch of
  a PGD-AT run with clean_epochs=1 is bit for bit the first epoch of a clean run of the same
  length, and the metrics show the attack from the second epoch on."""
  c = synthetic_config
  c.train.num_steps, c.train.num_epochs = 0, 2.0  # 8 steps per epoch
  c.train.objective, c.train.attack = 'pgd_at', dict(name='pgd', epsilon=0.1, step_size=0.05, num_steps=2)
  c.train.clean_epochs = 1.0
  _run(c, tmp_path / 'warm')
  clean = c.copy_and_resolve_references()
  clean.train.objective, clean.train.clean_epochs, clean.train.stop_at_step = 'clean', 0.0, 8
  _run(clean, tmp_path / 'clean')
  target = train.build_experiment(clean).init_state().to_checkpoint()
  restore = lambda d: train.Checkpointer(os.path.join(d, 'checkpoints'), 5).restore(target, 8)[0]
  assert trees_equal(restore(tmp_path / 'warm')['params'], restore(tmp_path / 'clean')['params'])
  rows = [json.loads(r) for r in open(tmp_path / 'warm' / 'metrics.jsonl') if '"epoch"' in r]
  assert [('train_accuracy' in r, 'train_adv_accuracy' in r) for r in rows] == [(True, False)] * 2 + [
    (False, True)
  ] * 2
  c.train.clean_epochs = 2.0
  with pytest.raises(train.ConfigError, match='train.clean_epochs'):
    train.build_experiment(c)


def test_torch_init_redraws_the_small_cnn_but_keeps_the_wide_resnets_own():
  """init='torch' gives PyTorch's U(±1/√fan_in) to networks whose reference uses torch's defaults
  (the small CNN: every kernel within that bound, and the draw differs from Flax's), while the
  WideResNets keep the N(0, 2/(9·out)) their reference code sets (same parameters as 'flax')."""
  from jaxrobust.models import create_model

  tx = optax.sgd(0.1)
  cnn = create_model('small_cnn', num_classes=4)
  x = np.zeros((1, 8, 8, 1), np.float32)
  flax_p = create_train_state(cnn, jax.random.key(0), x, tx, 'flax').params
  torch_p = create_train_state(cnn, jax.random.key(0), x, tx, 'torch').params
  assert not trees_equal(flax_p, torch_p)
  for path, k in jax.tree_util.tree_leaves_with_path(torch_p):
    if 'kernel' in jax.tree_util.keystr(path):
      assert np.abs(k).max() <= 1 / np.sqrt(np.prod(k.shape[:-1]))
  wrn = create_model('wrn_tiny', num_classes=4)
  x = np.zeros((1, 8, 8, 3), np.float32)
  assert trees_equal(
    create_train_state(wrn, jax.random.key(0), x, tx, 'flax').params,
    create_train_state(wrn, jax.random.key(0), x, tx, 'torch').params,
  )
