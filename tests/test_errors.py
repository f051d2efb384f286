"""Bad input and faults, layer by layer, one table each: every case must raise the named
exception type, with a message that names the offending argument, field or file, and must leave
nothing changed on disk."""

import gzip
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import evaluate
from experiments.configs import fashion_mnist_cnn
from jaxrobust.configs.defenses import defense_config
from jaxrobust import attacks as A
from jaxrobust import data
from jaxrobust import evaluation as E
from jaxrobust.evaluation.adaptive import prediction_over_draws
from jaxrobust.evaluation.estimator import plurality
from jaxrobust import train
from jaxrobust.train.checkpoint import Checkpointer
from jaxrobust.train.workdir import WorkdirLock
from tests.configs import synthetic_training_config
from tests.conftest import tree_files


KEY = jax.random.key(0)
W = jnp.ones((2, 3))
f3 = lambda x, key: x.reshape(x.shape[0], -1) @ W  # 3 classes
f2 = lambda x, key: x.reshape(x.shape[0], -1) @ jnp.ones((2, 2))  # 2 classes
nan_f = lambda x, key: f3(x, key) * jnp.nan
x4 = jnp.full((4, 2), 0.5)
y4 = jnp.zeros(4, jnp.int32)


def call(attack, *, f=f3, key=KEY, x=x4, y=y4, **kw):
  return lambda: attack(f, key, x, y, **kw)


# (id, thunk, exception type, regex the message must match)
ATTACK_CASES = [
  ('eps_negative', call(A.pgd, epsilon=-0.1), ValueError, 'pgd: epsilon must be >= 0'),
  ('eps_bool', call(A.pgd, epsilon=True), ValueError, 'pgd: epsilon must be a number, not a bool'),
  (
    'apgd_rho_above_one',
    call(A.apgd, epsilon=0.1, rho=1.5),
    ValueError,
    r'apgd: rho must be in \[0.0, 1.0\]',
  ),
  ('apgd_rho_negative', call(A.apgd, epsilon=0.1, rho=-0.1), ValueError, 'apgd: rho must be in'),
  (
    'fab_eta_below_one',
    call(A.fab_targeted, epsilon=0.1, eta=0.5, num_targets=2),
    ValueError,
    'fab_targeted: eta must be in',
  ),
  (
    'fab_beta_above_one',
    call(A.fab_targeted, epsilon=0.1, beta=1.5, num_targets=2),
    ValueError,
    'fab_targeted: beta must be in',
  ),
  (
    'autoattack_three_classes',
    call(A.autoattack, epsilon=0.1),
    ValueError,
    'autoattack: the standard version needs at least 4 classes',
  ),
  (
    'autoattack_nan_model',
    call(A.autoattack, f=nan_f, epsilon=0.1, version='rand'),
    FloatingPointError,
    'autoattack: logits_fn returned non-finite logits on 4 of 4 clean inputs',
  ),
  ('eps_nan', call(A.pgd, epsilon=jnp.nan), ValueError, 'pgd: epsilon is NaN'),
  ('eps_inf', call(A.pgd, epsilon=jnp.inf), ValueError, 'pgd: epsilon must be finite'),
  ('eps_string', call(A.pgd, epsilon='0.1'), ValueError, 'pgd: epsilon must be a number'),
  (
    'eps_shape',
    call(A.pgd, epsilon=jnp.ones(3)),
    ValueError,
    r'pgd: epsilon must be a scalar or have shape \(4,\)',
  ),
  ('steps_zero', call(A.pgd, epsilon=0.1, num_steps=0), ValueError, 'pgd: num_steps must be >= 1'),
  ('steps_float', call(A.pgd, epsilon=0.1, num_steps=2.0), ValueError, 'pgd: num_steps must be an integer'),
  ('restarts_zero', call(A.pgd, epsilon=0.1, restarts=0), ValueError, 'pgd: restarts must be >= 1'),
  ('eot_float', call(A.pgd, epsilon=0.1, eot_samples=1.5), ValueError, 'pgd: eot_samples must be an integer'),
  ('eot_wrapper_float', lambda: A.eot(A.pgd, 2.0), ValueError, 'eot: eot_samples must be an integer'),
  ('step_negative', call(A.pgd, epsilon=0.1, step_size=-1.0), ValueError, 'pgd: step_size must be >= 0'),
  ('norm_unknown', call(A.pgd, epsilon=0.1, norm='l1'), ValueError, "pgd: unknown norm 'l1'"),
  ('loss_unknown', call(A.pgd, epsilon=0.1, loss='hinge'), ValueError, "unknown attack loss 'hinge'"),
  (
    'microbatch_negative',
    call(A.pgd, epsilon=0.1, microbatch=-1),
    ValueError,
    'pgd: microbatch must be >= 0',
  ),
  (
    'x_integer',
    call(A.pgd, epsilon=0.1, x=jnp.full((4, 2), 1, jnp.int32)),
    ValueError,
    'x must be a floating-point',
  ),
  (
    'x_empty',
    call(A.pgd, epsilon=0.1, x=jnp.zeros((0, 2)), y=jnp.zeros(0, jnp.int32)),
    ValueError,
    'empty batch',
  ),
  ('x_nan', call(A.pgd, epsilon=0.1, x=x4.at[0, 0].set(jnp.nan)), ValueError, 'x contains NaN'),
  (
    'x_inf_unbounded',
    call(A.pgd, epsilon=0.1, x=x4.at[0, 0].set(jnp.inf), bounds=(-jnp.inf, jnp.inf)),
    ValueError,
    'x contains inf',
  ),
  ('x_out_of_bounds', call(A.pgd, epsilon=0.1, x=x4 + 1.0), ValueError, 'x has values outside its bounds'),
  ('x_rank1', call(A.pgd, epsilon=0.1, x=jnp.zeros(4)), ValueError, r'x must be a batch of shape'),
  ('bounds_nan', call(A.pgd, epsilon=0.1, bounds=(jnp.nan, 1.0)), ValueError, r'bounds\[0\] is NaN'),
  (
    'bounds_order',
    call(A.pgd, epsilon=0.1, bounds=(1.0, 0.0), x=jnp.full((4, 2), 0.5)),
    ValueError,
    'lo <= hi',
  ),
  ('bounds_not_pair', call(A.pgd, epsilon=0.1, bounds=(0.0,)), ValueError, r'bounds must be a pair'),
  ('y_length', call(A.pgd, epsilon=0.1, y=jnp.zeros(3, jnp.int32)), ValueError, r'y must have shape \(4,\)'),
  ('y_float', call(A.pgd, epsilon=0.1, y=jnp.zeros(4)), ValueError, 'integer labels'),
  (
    'y_out_of_range',
    call(A.pgd, epsilon=0.1, y=jnp.array([0, 1, 2, 3])),
    ValueError,
    'label out of range.*3 classes',
  ),
  ('key_int', call(A.pgd, epsilon=0.1, key=0), ValueError, 'pgd: key must be a PRNG key'),
  ('key_none', call(A.pgd, epsilon=0.1, key=None), ValueError, 'pgd: key must be a PRNG key'),
  (
    'keys_wrong_count',
    call(A.pgd, epsilon=0.1, key=jax.random.split(KEY, 3)),
    ValueError,
    '4 per-example keys',
  ),
  (
    'logits_rank',
    call(A.pgd, epsilon=0.1, f=lambda x, k: x.sum(-1)),
    ValueError,
    r'logits_fn must return logits of shape \(4, classes\)',
  ),
  (
    'logits_batch',
    call(A.pgd, epsilon=0.1, f=lambda x, k: f3(x, k)[:2]),
    ValueError,
    'logits_fn must return logits',
  ),
  (
    'pgd_nan_logits',
    call(A.pgd, epsilon=0.1, f=nan_f),
    FloatingPointError,
    'pgd: logits_fn returned non-finite',
  ),
  (
    'apgd_nan_logits',
    call(A.apgd, epsilon=0.1, num_steps=3, f=nan_f),
    FloatingPointError,
    'apgd: logits_fn returned non-finite',
  ),
  (
    'cw_nan_logits',
    call(A.cw_l2, max_iterations=3, binary_search_steps=1, f=nan_f),
    FloatingPointError,
    'cw_l2: logits_fn returned non-finite',
  ),
  (
    'fgsm_nan_logits',
    call(A.fgsm, epsilon=0.1, f=nan_f),
    FloatingPointError,
    'fgsm: logits_fn returned non-finite',
  ),
  (
    'dlr_two_classes',
    call(A.apgd, epsilon=0.1, loss='dlr', f=f2),
    ValueError,
    'apgd: the loss needs at least 3 classes',
  ),
  (
    'dlr_targeted_three',
    call(A.apgd, epsilon=0.1, loss='dlr', targeted=True),
    ValueError,
    'at least 4 classes',
  ),
  (
    'pgd_dlr_two_classes',
    call(A.pgd, epsilon=0.1, loss='dlr', f=f2),
    ValueError,
    'pgd: the loss needs at least 3',
  ),
  ('fgsm_names_itself', call(A.fgsm, epsilon=-1.0), ValueError, 'fgsm: epsilon must be >= 0'),
  ('fgm_names_itself', call(A.fgm, epsilon=-1.0), ValueError, 'fgm: epsilon must be >= 0'),
  ('cw_iterations', call(A.cw_l2, max_iterations=0), ValueError, 'cw_l2: max_iterations must be >= 1'),
  (
    'cw_binary_steps',
    call(A.cw_l2, max_iterations=2, binary_search_steps=0),
    ValueError,
    'cw_l2: binary_search_steps must be >= 1',
  ),
  ('cw_epsilon', call(A.cw_l2, max_iterations=2, epsilon=-1.0), ValueError, 'cw_l2: epsilon must be'),
  (
    'cw_learning_rate',
    call(A.cw_l2, max_iterations=2, learning_rate=jnp.nan),
    ValueError,
    'cw_l2: learning_rate is NaN',
  ),
  (
    'uniform_norm',
    call(A.uniform_noise, epsilon=0.1, norm='l3'),
    ValueError,
    "uniform_noise: unknown norm 'l3'",
  ),
  (
    'gaussian_norm',
    call(A.gaussian_noise, sigma=0.1, norm='linf2'),
    ValueError,
    'gaussian_noise: unknown norm',
  ),
  ('gaussian_sigma', call(A.gaussian_noise, sigma=-1.0), ValueError, 'gaussian_noise: sigma must be >= 0'),
  (
    'apgd_steps_float',
    call(A.apgd, epsilon=0.1, num_steps=10.0),
    ValueError,
    'apgd: num_steps must be an integer',
  ),
  (
    'grid_inf',
    lambda: A.over_epsilons(A.pgd, f3, KEY, x4, y4, [0.1, jnp.inf]),
    ValueError,
    'over_epsilons: every epsilon must be finite',
  ),
  (
    'grid_empty',
    lambda: A.over_epsilons(A.pgd, f3, KEY, x4, y4, []),
    ValueError,
    'over_epsilons: epsilons is empty',
  ),
  (
    'grid_string',
    lambda: A.over_epsilons(A.pgd, f3, KEY, x4, y4, '0.1'),
    ValueError,
    'epsilons must be numbers',
  ),
  (
    'registry_name',
    lambda: A.build_attack({'name': 'deepfool'}),
    ValueError,
    "unknown attack name 'deepfool'",
  ),
  (
    'registry_hyper',
    lambda: A.build_attack({'name': 'pgd', 'epsilonn': 0.1}),
    ValueError,
    r"attack 'pgd': unknown or fixed hyperparameters \['epsilonn'\]",
  ),
  (
    'registry_fixed',
    lambda: A.build_attack({'name': 'pgd_l2', 'norm': 'linf'}),
    ValueError,
    r"unknown or fixed hyperparameters \['norm'\]",
  ),
  (
    'registry_eot_float',
    lambda: A.build_attack({'name': 'pgd', 'epsilon': 0.1, 'eot_samples': 2.5}),
    ValueError,
    'eot_samples must be an integer',
  ),
  (
    'registry_eot_cw',
    lambda: A.build_attack({'name': 'cw_l2', 'eot_samples': 2}),
    ValueError,
    r"unknown or fixed hyperparameters \['eot_samples'\]",
  ),
  (
    'registry_old_eot_spelling',
    lambda: A.build_attack({'name': 'pgd', 'epsilon': 0.1, 'eot': 2}),
    ValueError,
    r"unknown or fixed hyperparameters \['eot'\]",
  ),
  (
    'accuracy_labels',
    lambda: E.robust_accuracy(f3, np.zeros((4, 2), np.float32), np.zeros(3, np.int32), {}, key=KEY),
    ValueError,
    '4 images but 3 labels',
  ),
  (
    'accuracy_batch',
    lambda: E.robust_accuracy(
      f3, np.zeros((4, 2), np.float32), np.zeros(4, np.int32), {}, key=KEY, batch_size=0
    ),
    ValueError,
    'batch_size must be >= 1',
  ),
  (
    'accuracy_draws',
    lambda: E.robust_accuracy(
      f3, np.zeros((4, 2), np.float32), np.zeros(4, np.int32), {}, key=KEY, eval_draws=0
    ),
    ValueError,
    'eval_draws must be an integer >= 1',
  ),
  (
    'clean_nan',
    lambda: E.clean_accuracy(nan_f, np.zeros((4, 2), np.float32), np.zeros(4, np.int32), key=KEY),
    E.NonFiniteLogitsError,
    'non-finite logits on 4 of 4',
  ),
  (  # was 0.0: an accuracy over no example
    'clean_empty',
    lambda: E.clean_accuracy(f3, np.zeros((0, 2), np.float32), np.zeros(0, np.int32), key=KEY),
    ValueError,
    'clean_accuracy: images is empty',
  ),
  (  # was NaN accuracies
    'accuracy_empty',
    lambda: E.robust_accuracy(f3, np.zeros((0, 2), np.float32), np.zeros(0, np.int32), {}, key=KEY),
    ValueError,
    'robust_accuracy: images is empty',
  ),
  (  # was a list of zeros
    'grid_empty',
    lambda: E.pgd_accuracy_over_epsilons(
      f3, np.zeros((0, 2), np.float32), np.zeros(0, np.int32), [0.1], key=KEY
    ),
    ValueError,
    'pgd_accuracy_over_epsilons: images is empty',
  ),
  (  # was an accuracy that counted non-finite logits as errors
    'grid_nan',
    lambda: E.pgd_accuracy_over_epsilons(
      nan_f, np.zeros((4, 2), np.float32), np.zeros(4, np.int32), [0.0], key=KEY, num_steps=1
    ),
    E.NonFiniteLogitsError,
    '4 attacked points have non-finite logits',
  ),
  (  # was a ZeroDivisionError naming nothing
    'inference_time_batch_zero',
    lambda: E.inference_ms_per_image(None, {}, (2,), batch=0),
    ValueError,
    'batch must be an integer >= 1, got 0',
  ),
  (  # was a NaN time per image
    'inference_time_no_repeats',
    lambda: E.inference_ms_per_image(None, {}, (2,), repeats=0),
    ValueError,
    'repeats must be an integer >= 1, got 0',
  ),
  (  # was a NaN mean and 'all' True for every point
    'draws_zero',
    lambda: prediction_over_draws(f3, x4, y4, KEY, 0),
    ValueError,
    'num_draws must be an integer >= 1, got 0',
  ),
  (  # was False for every point: a vote of no draws
    'plurality_no_draws',
    lambda: plurality(np.zeros((0, 5), np.int32), np.zeros(5, np.int32)),
    ValueError,
    r'needs pred \(draws >= 1, B\) and y \(B,\), got \(0, 5\) and \(5,\)',
  ),
  (  # label -1 would have matched the non-finite draws' -1
    'plurality_negative_label',
    lambda: plurality(-np.ones((3, 2), np.int32), np.array([0, -1])),
    ValueError,
    'labels must be >= 0, got -1',
  ),
  (  # was a ZeroDivisionError naming nothing
    'draws_empty_batch',
    lambda: prediction_over_draws(f3, x4[:0], y4[:0], KEY, 3),
    ValueError,
    'x is an empty batch',
  ),
]


@pytest.mark.parametrize('thunk,exc,match', [c[1:] for c in ATTACK_CASES], ids=[c[0] for c in ATTACK_CASES])
def test_attack_layer_errors(thunk, exc, match, tmp_path):
  before = tree_files(tmp_path)
  with pytest.raises(exc, match=match):
    thunk()
  assert tree_files(tmp_path) == before


# ------------------------------------------------------------------------------------- data
def _idx_dir(tmp_path, labels=None):
  d = tmp_path / 'fm'
  d.mkdir(exist_ok=True)
  imgs = np.zeros((5, 28, 28), np.uint8)
  lab = np.arange(5, dtype=np.uint8) if labels is None else labels
  for split in ('train', 't10k'):
    data.write_idx(str(d / f'{split}-images-idx3-ubyte.gz'), imgs)
    data.write_idx(str(d / f'{split}-labels-idx1-ubyte.gz'), lab)
  return d


def _truncated(tmp_path):
  d = _idx_dir(tmp_path)
  p = d / 'train-images-idx3-ubyte.gz'
  raw = gzip.decompress(p.read_bytes())
  p.write_bytes(gzip.compress(raw[:-100]))
  return d


# (id, set-up making the files -> argument, loader of that argument, exception, regex)
DATA_CASES = [
  (
    'idx_labels_out_of_range',
    lambda t: str(_idx_dir(t, np.array([0, 1, 12, 3, 4], np.uint8))),
    data.load_fashion_mnist,
    data.IdxError,
    r'train-labels-idx1-ubyte.gz holds 1 labels outside \[0, 10\)',
  ),
  (
    'idx_truncated',
    lambda t: str(_truncated(t)),
    data.load_fashion_mnist,
    data.IdxError,
    'train-images-idx3-ubyte.gz is truncated',
  ),
  (
    'fashion_mnist_missing',
    lambda t: str(t / 'nowhere'),
    data.load_fashion_mnist,
    FileNotFoundError,
    'nowhere',
  ),
  (
    'num_train_negative',
    lambda t: -1,
    lambda n: data.load_dataset('synthetic', num_train=n),
    ValueError,
    'num_train must be',
  ),
  (
    'num_test_float',
    lambda t: 2.5,
    lambda n: data.load_dataset('synthetic', num_test=n),
    ValueError,
    'num_test must be',
  ),
  (  # was all but the last 5 examples (a negative slice)
    'first_examples_negative',
    lambda t: -5,
    lambda n: data.first_examples(data.load_dataset('synthetic'), n, None),
    ValueError,
    'num_train must be an integer >= 0 or None, got -5',
  ),
  (  # was a ZeroDivisionError naming nothing
    'epoch_batches_zero',
    lambda t: 0,
    lambda b: list(data.epoch_batches(KEY, 0, np.zeros((4, 2), np.uint8), np.zeros(4, np.int32), b)),
    ValueError,
    'batch_size must be an integer >= 1, got 0',
  ),
  (
    'source_unknown',
    lambda t: 'web',
    lambda s: data.load_dataset('mnist', source=s),
    ValueError,
    "unknown data source 'web'",
  ),
]


@pytest.mark.parametrize('setup,load,exc,match', [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_data_layer_errors(setup, load, exc, match, tmp_path):
  arg = setup(tmp_path)
  before = tree_files(tmp_path)
  with pytest.raises(exc, match=match):
    load(arg)
  assert tree_files(tmp_path) == before


# ----------------------------------------------------------------------------------- config
def cfg(**changes):
  c = synthetic_training_config()
  for path, v in changes.items():
    node = c
    *parents, leaf = path.split('__')
    for p in parents:
      node = node[p]
    node[leaf] = v
  return c


def _with_unknown_field():
  c = synthetic_training_config()
  c.train.foo = 1
  return c


CONFIG_CASES = [
  (
    'arg_unknown_dataset',
    lambda: defense_config('pgd_at', 'cifar100,quick'),
    ValueError,
    r"unknown config argument parts \['cifar100'\]",
  ),
  ('arg_two_datasets', lambda: defense_config('pgd_at', 'cifar10,fashion_mnist'), ValueError, 'two datasets'),
  ('arg_default_config', lambda: fashion_mnist_cnn.get_config('quick'), ValueError, 'takes no argument'),
  (
    'keep_checkpoints_zero',
    lambda: cfg(train__keep_checkpoints=0),
    train.ConfigError,
    'config.train.keep_checkpoints',
  ),
  (
    'learning_rate_negative',
    lambda: cfg(train__learning_rate=-0.1),
    train.ConfigError,
    'config.train.learning_rate',
  ),
  ('num_train_negative', lambda: cfg(data__num_train=-1), train.ConfigError, 'config.data.num_train'),
  (
    'num_train_beyond_the_split',
    lambda: cfg(data__num_train=100000),
    train.ConfigError,
    r"config.data.num_train: 100000, but 'synthetic' has 256 examples",
  ),
  (
    'num_test_beyond_the_split',
    lambda: cfg(data__num_test=100000),
    train.ConfigError,
    r"config.data.num_test: 100000, but 'synthetic' has 128 examples",
  ),
  ('num_steps_negative', lambda: cfg(train__num_steps=-1), train.ConfigError, 'config.train.num_steps'),
  (
    'num_epochs_zero',
    lambda: cfg(train__num_steps=0, train__num_epochs=0.0),
    train.ConfigError,
    'config.train.num_epochs',
  ),
  ('batch_size_zero', lambda: cfg(train__batch_size=0), train.ConfigError, 'config.train.batch_size'),
  (
    'batch_exceeds_data',
    lambda: cfg(train__batch_size=1024),
    train.ConfigError,
    'config.train.batch_size: 1024 exceeds',
  ),
  (
    'batch_not_divisible',
    lambda: cfg(train__batch_size=30, train__parallel='shard_map'),
    train.ConfigError,
    'not divisible by the 4 devices',
  ),
  ('unknown_field', _with_unknown_field, train.ConfigError, r"unknown config fields \['train.foo'\]"),
  ('unknown_objective', lambda: cfg(train__objective='fast'), train.ConfigError, 'config.train.objective'),
  ('unknown_model', lambda: cfg(model__name='resnet9'), ValueError, "unknown model 'resnet9'"),
  ('unknown_schedule', lambda: cfg(train__schedule='linear'), train.ConfigError, 'config.train.schedule'),
  ('unknown_optimizer', lambda: cfg(train__optimizer='lamb'), train.ConfigError, 'config.train.optimizer'),
  ('unknown_parallel', lambda: cfg(train__parallel='dp'), train.ConfigError, 'config.train.parallel'),
  (
    'unknown_normalize',
    lambda: cfg(model__normalize='imagenet'),
    train.ConfigError,
    'config.model.normalize',
  ),
  (
    'smoothing_zero',
    lambda: cfg(train__objective='label_smoothing'),
    train.ConfigError,
    'config.train.label_smoothing',
  ),
  (
    'gaussian_zero',
    lambda: cfg(train__objective='gaussian_noise'),
    train.ConfigError,
    'config.train.noise_sigma',
  ),
  ('mixed_empty', lambda: cfg(train__objective='mixed'), train.ConfigError, 'config.train.mixed_attacks'),
  ('momentum_one', lambda: cfg(train__momentum=1.0), train.ConfigError, 'config.train.momentum'),
  ('log_every_zero', lambda: cfg(train__log_every=0), train.ConfigError, 'config.train.log_every'),
  ('attack_labels', lambda: cfg(train__attack_labels='adv'), train.ConfigError, 'config.train.attack_labels'),
  (
    'attack_unknown',
    lambda: cfg(train__objective='pgd_at', train__attack={'name': 'pgdd'}),
    ValueError,
    "unknown attack name 'pgdd'",
  ),
  (
    'attack_hyper',
    lambda: cfg(train__objective='pgd_at', train__attack={'name': 'pgd', 'eps': 0.1}),
    ValueError,
    r"unknown or fixed hyperparameters \['eps'\]",
  ),
  ('eval_batch_zero', lambda: cfg(eval__batch_size=0), train.ConfigError, 'config.eval.batch_size'),
  ('model_init', lambda: cfg(model__init='xavier'), train.ConfigError, 'config.model.init'),
  ('free_replays_zero', lambda: cfg(train__free_replays=0), train.ConfigError, 'config.train.free_replays'),
  (
    'fgsm_rs_alpha_zero',
    lambda: cfg(train__fgsm_rs_alpha=0.0),
    train.ConfigError,
    'config.train.fgsm_rs_alpha',
  ),
  (
    'guard_holdout_negative',
    lambda: cfg(train__guard__holdout=-1),
    train.ConfigError,
    'config.train.guard.holdout',
  ),
  ('guard_drop_zero', lambda: cfg(train__guard__drop=0.0), train.ConfigError, 'config.train.guard.drop'),
  (
    'guard_holdout_all',
    lambda: cfg(train__guard__holdout=256),
    train.ConfigError,
    'config.train.guard.holdout: 256 leaves none',
  ),
  # A negative ε trained Free-AT on x - ε everywhere (clip to an inverted box); every objective's
  # attack is refused the same way, in the schema.
  *[
    (
      f'{objective}_epsilon_negative',
      lambda objective=objective: cfg(
        train__objective=objective, train__attack={'name': 'pgd', 'epsilon': -0.1, 'step_size': 0.05}
      ),
      train.ConfigError,
      r'config.train.attack.epsilon: must be a finite number >= 0, got -0.1',
    )
    for objective in ('free_at', 'pgd_at', 'fgsm_rs', 'trades')
  ],
  (
    'attack_step_size_inf',
    lambda: cfg(train__attack={'name': 'pgd', 'epsilon': 0.1, 'step_size': float('inf')}),
    train.ConfigError,
    'config.train.attack.step_size',
  ),
  (
    'attack_epsilon_bool',
    lambda: cfg(train__attack={'name': 'pgd', 'epsilon': True}),
    train.ConfigError,
    'config.train.attack.epsilon',
  ),
  (
    'mixed_attack_epsilon_negative',
    lambda: cfg(train__objective='mixed', train__mixed_attacks={'fgsm': {'name': 'fgsm', 'epsilon': -0.1}}),
    train.ConfigError,
    'config.train.mixed_attacks.fgsm.epsilon',
  ),
  (
    'trades_beta_negative',
    lambda: cfg(train__trades_beta=-6.0),
    train.ConfigError,
    'config.train.trades_beta',
  ),
  (
    'schedule_factor_negative',
    lambda: cfg(train__schedule_factor=-0.1),
    train.ConfigError,
    'config.train.schedule_factor',
  ),
  (
    'boundaries_negative',
    lambda: cfg(train__boundaries_epochs=(-1.0, 2.0)),
    train.ConfigError,
    'config.train.boundaries_epochs',
  ),
  (
    'num_epochs_inf',
    lambda: cfg(train__num_epochs=float('inf')),
    train.ConfigError,
    'config.train.num_epochs',
  ),
  (
    'learning_rate_inf',
    lambda: cfg(train__learning_rate=float('inf')),
    train.ConfigError,
    'config.train.learning_rate',
  ),
  (
    'seed_negative',
    lambda: cfg(seed=-1),
    train.ConfigError,
    r'config.seed: must be an integer in \[0, 2\*\*63\)',
  ),
  ('seed_huge', lambda: cfg(seed=2**64), train.ConfigError, 'config.seed'),
]


@pytest.mark.parametrize('make,exc,match', [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_config_layer_errors(make, exc, match, tmp_path):
  with pytest.raises(exc, match=match):
    train.train_and_evaluate(make(), str(tmp_path / 'run'), progress=False)
  assert not (tmp_path / 'run').exists()  # refused before anything was written


# ---------------------------------------------------------------- checkpoints and evaluation
@pytest.fixture(scope='module')
def trained_workdir(tmp_path_factory):
  d = tmp_path_factory.mktemp('trained') / 'run'
  c = synthetic_training_config()
  c.train.num_steps = 4
  train.train_and_evaluate(c, str(d), progress=False)
  return d


def _resume_other_model(work):
  c = synthetic_training_config()
  c.train.num_steps = 4
  c.model.name = 'small_cnn_pni'
  train.train_and_evaluate(c, str(work), progress=False)


def _locked(work):
  with WorkdirLock(str(work)):
    c = synthetic_training_config()
    c.train.num_steps = 4
    train.train_and_evaluate(c, str(work), progress=False)


def _restore_into_other_model(work):
  import ml_collections

  exp = train.build_experiment(
    ml_collections.ConfigDict(
      dict(
        synthetic_training_config(),
        model=dict(name='small_cnn', normalize='dataset', init='flax', kwargs={'width': 2}),
      )
    )
  )
  ck = Checkpointer(str(work / 'checkpoints'))
  try:
    ck.restore(exp.init_state().to_checkpoint())
  finally:
    ck.close()


def _evaluate_with_swapped_config(work, tmp, model):
  other = tmp / 'swapped'
  shutil.copytree(work, other)
  text = (other / 'config.json').read_text().replace('"name": "small_cnn"', f'"name": "{model}"')
  (other / 'config.json').write_text(text)
  before = tree_files(other)
  try:
    evaluate.evaluate_checkpoint(str(other), num_test=8)
  finally:
    assert tree_files(other) == before


def _evaluate_nan_checkpoint(tmp):
  c = synthetic_training_config()
  exp = train.build_experiment(c)
  state = exp.init_state()
  tree = jax.tree.map(np.asarray, state.to_checkpoint())
  tree['params'] = jax.tree.map(lambda a: np.full_like(a, np.nan), tree['params'])
  work = tmp / 'nan'
  ck = Checkpointer(str(work / 'checkpoints'))
  ck.save(0, tree, {'step': 0})
  ck.close()
  (work / 'config.json').write_text(c.to_json_best_effort())
  before = tree_files(work)
  try:
    evaluate.evaluate_checkpoint(str(work), num_test=8)
  finally:
    assert tree_files(work) == before


WORKDIR_CASES = [
  (
    'resume_other_model',
    lambda w, t: _resume_other_model(w),
    train.ConfigMismatchError,
    r"model.name: 'small_cnn' -> 'small_cnn_pni'",
  ),
  ('locked', lambda w, t: _locked(w), train.WorkdirLockedError, rf'in use by pid {os.getpid()} on host'),
  (
    'restore_other_model',
    lambda w, t: _restore_into_other_model(w),
    train.CheckpointMismatchError,
    r"another model: .*wrong shapes \['Conv_0'\]\['bias'\]: \(32,\) vs \(64,\)",
  ),
  (
    'no_checkpoint',
    lambda w, t: Checkpointer(str(t / 'empty')).restore({'params': {}}),
    train.NoCheckpointError,
    'no checkpoint has been written in .*empty',
  ),
  ('keep_zero', lambda w, t: Checkpointer(str(t / 'k'), max_to_keep=0), ValueError, 'keep_checkpoints'),
  (
    'evaluate_num_test',
    lambda w, t: evaluate.evaluate_checkpoint(str(w), num_test=-190),
    ValueError,
    'num_test must be an integer >= 0',
  ),
  (
    'evaluate_suite',
    lambda w, t: evaluate.evaluate_checkpoint(str(w), suite='autoatack'),
    ValueError,
    "unknown suite 'autoatack'",
  ),
  (
    'evaluate_steps_scale',
    lambda w, t: evaluate.evaluate_checkpoint(str(w), steps_scale=0.0),
    ValueError,
    'steps_scale must be a finite number > 0',
  ),
  (
    'evaluate_steps_scale_inf',
    lambda w, t: evaluate.evaluate_checkpoint(str(w), steps_scale=float('inf')),
    ValueError,
    'steps_scale must be a finite number > 0, got inf',
  ),
  (
    'evaluate_epsilon_negative',
    lambda w, t: evaluate.evaluate_checkpoint(str(w), num_test=8, epsilons=[0.1, -0.2]),
    ValueError,
    r'epsilon_grid must be finite numbers >= 0, got -0.2',
  ),
  (
    'evaluate_num_test_beyond_the_test_set',
    lambda w, t: evaluate.evaluate_checkpoint(str(w), num_test=100000),
    ValueError,
    'num_test=100000, but the synthetic test set has 128 images',
  ),
  (
    'evaluate_eot',
    lambda w, t: evaluate.evaluate_checkpoint(str(w), eot_samples=0),
    ValueError,
    'eot_samples must be an integer >= 1',
  ),
  (
    'evaluate_not_a_workdir',
    lambda w, t: evaluate.evaluate_checkpoint(str(t), num_test=4),
    FileNotFoundError,
    'not a jaxrobust work directory',
  ),
  (
    'evaluate_other_model',
    lambda w, t: _evaluate_with_swapped_config(w, t, 'small_cnn_pni'),
    train.CheckpointMismatchError,
    r"names model 'small_cnn_pni'.*another model: missing \[.*noise_scale",
  ),
  (
    'evaluate_same_shapes_other_model',
    lambda w, t: _evaluate_with_swapped_config(w, t, 'small_cnn_lwta'),
    train.CheckpointMismatchError,
    r"names model 'small_cnn_lwta', but the checkpoint was trained as 'small_cnn'",
  ),
  (
    'evaluate_nan_checkpoint',
    lambda w, t: _evaluate_nan_checkpoint(t),
    E.NonFiniteLogitsError,
    'non-finite clean logits',
  ),
]


@pytest.mark.long
@pytest.mark.parametrize('thunk,exc,match', [c[1:] for c in WORKDIR_CASES], ids=[c[0] for c in WORKDIR_CASES])
def test_workdir_layer_errors(thunk, exc, match, trained_workdir, tmp_path):
  before = tree_files(trained_workdir)
  with pytest.raises(exc, match=match):
    thunk(trained_workdir, tmp_path)
  assert tree_files(trained_workdir) == before


@pytest.mark.parametrize('name', A.attack_names())
@pytest.mark.parametrize('bad', [-0.1, float('nan'), True])
def test_every_registered_attack_refuses_a_bad_epsilon_naming_itself_and_the_argument(name, bad):
  """Coverage that grows with the registry: an attack added without its checks fails here."""
  fn = A.build_attack({'name': name, 'epsilon': bad, **({'sigma': 0.1} if name == 'gaussian' else {})})
  function = A.build_attack({'name': name, 'epsilon': 0.1, **({'sigma': 0.1} if name == 'gaussian' else {})})
  own = function.func.__name__
  with pytest.raises(ValueError, match=rf'{own}: epsilon (must|is)'):
    fn(f3, KEY, x4, y4)


def test_value_checks_run_outside_jit_and_shape_checks_inside_it():
  """What the README promises: value checks need concrete arguments, shape checks always run."""
  with pytest.raises(ValueError, match='pgd: epsilon must be >= 0'):
    A.pgd(f3, KEY, x4, y4, epsilon=-0.1)
  run = jax.jit(lambda e: A.pgd(f3, KEY, x4, y4, epsilon=e))
  assert run(-0.1).shape == x4.shape  # a traced ε is not checked inside jit
  with pytest.raises(ValueError, match=r'y must have shape \(4,\)'):
    jax.jit(lambda xx: A.pgd(f3, KEY, xx, y4[:3], epsilon=0.1))(x4)


@pytest.mark.parametrize('dtype', [np.int64, np.int32, np.uint16, np.bool_])
def test_evaluation_refuses_integer_pixels_it_would_take_unscaled(dtype):
  """int64 pixels in 0..255 were read as values up to 255 (a trained CNN scored 8 %, no error):
  only uint8 is scaled, floats are taken as they are, and every other dtype is refused, named."""
  from jaxrobust.evaluation import clean_accuracy, robust_accuracy

  f = lambda x, key: x.reshape(x.shape[0], -1)[:, :3]  # noqa: E731
  images, labels = np.full((4, 2, 2, 1), 1, dtype), np.zeros(4, np.int32)
  with pytest.raises(ValueError, match=f'images has dtype {np.dtype(dtype)}'):
    clean_accuracy(f, images, labels, key=KEY)
  with pytest.raises(ValueError, match=f'images has dtype {np.dtype(dtype)}'):
    robust_accuracy(f, images, labels, {}, key=KEY)
  assert clean_accuracy(f, np.full((4, 2, 2, 1), 255, np.uint8), labels, key=KEY) == 1.0


def test_a_run_whose_checkpoints_are_gone_is_not_retrained_over_its_metrics(trained_workdir, tmp_path):
  """Resuming a work directory without its checkpoints/ retrained from step 0 and trimmed the old
  metrics; it is refused, naming what is missing, and nothing on disk changes."""
  import shutil

  work = tmp_path / 'run'
  shutil.copytree(trained_workdir, work)
  shutil.rmtree(work / 'checkpoints')
  before = tree_files(work)
  c = synthetic_training_config()
  c.train.num_steps = 4
  with pytest.raises(
    train.NoCheckpointError,
    match=r'checkpoints holds no intact checkpoint, but .*metrics.jsonl records training up to step 4',
  ):
    train.train_and_evaluate(c, str(work), progress=False)
  assert tree_files(work) == before


def test_a_budget_below_the_steps_already_trained_is_refused(trained_workdir, tmp_path):
  """num_steps smaller than the checkpoint's step was silently ignored: the longer-trained state
  was evaluated as this config's result. Refused, naming both steps; nothing on disk changes."""
  import shutil

  work = tmp_path / 'run'
  shutil.copytree(trained_workdir, work)
  before = tree_files(work)
  c = synthetic_training_config()
  c.train.num_steps = 2  # the work directory holds step 4
  with pytest.raises(
    train.ConfigError, match=r'this run stops at step 2, but .*checkpoints holds a checkpoint at step 4'
  ):
    train.train_and_evaluate(c, str(work), progress=False, allow_config_change=True)
  assert tree_files(work) == before


def test_allow_config_change_with_another_model_leaves_the_work_directory_as_it_was(
  trained_workdir, tmp_path
):
  """config.json was replaced before the restore failed, and the work directory could then not be
  evaluated until the old file was put back by hand. Everything is checked before anything is written."""
  import shutil

  work = tmp_path / 'run'
  shutil.copytree(trained_workdir, work)
  before = tree_files(work)
  c = synthetic_training_config()
  c.train.num_steps = 4
  c.model.name = 'small_cnn_pni'
  with pytest.raises(Exception):  # noqa: B017  (the restore refuses the other model's tree)
    train.train_and_evaluate(c, str(work), progress=False, allow_config_change=True)
  assert tree_files(work) == before


def test_an_unverified_checkpoint_with_non_finite_values_is_not_restored(tmp_path):
  """A checkpoint whose metadata lacks its checksum (an older writer) was restored with a warning
  and 8 non-finite parameters. Unverified restores check the values at least."""
  import numpy as np
  import orbax.checkpoint as ocp

  from jaxrobust.train import Checkpointer, CheckpointError

  def save_unverified(directory, step, tree):
    ck = Checkpointer(str(directory), 5)
    ck._mngr.save(
      step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave({'step': step}))
    )
    ck._mngr.wait_until_finished()
    return ck

  good = {'params': {'w': np.ones(3, np.float32)}}
  ck = save_unverified(tmp_path / 'ok', 1, good)
  with pytest.warns(UserWarning, match='restored unverified'):
    tree, _ = ck.restore(good, 1)
  assert np.array_equal(tree['params']['w'], good['params']['w'])
  bad = {'params': {'w': np.array([1.0, np.nan, np.inf], np.float32)}}
  ck = save_unverified(tmp_path / 'bad', 1, bad)
  with pytest.raises(CheckpointError, match='has no checksum and 2 non-finite values'):
    ck.restore(good, 1)


def test_require_checksums_refuses_an_unverified_checkpoint_and_leaves_it_in_place(tmp_path):
  """`--require_checksums` (Checkpointer, train, load_trained, the CLIs): a checkpoint without a
  checksum is refused by name, and refusing it moves nothing aside."""
  import numpy as np
  import orbax.checkpoint as ocp

  from jaxrobust.train import Checkpointer
  from jaxrobust.train.checkpoint import UnverifiedCheckpointError

  tree = {'params': {'w': np.ones(3, np.float32)}}
  ck = Checkpointer(str(tmp_path / 'c'), 5)
  ck._mngr.save(
    1, args=ocp.args.Composite(state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave({'step': 1}))
  )
  ck._mngr.wait_until_finished()
  before = tree_files(tmp_path)
  strict = Checkpointer(str(tmp_path / 'c'), 5, require_checksums=True)
  with pytest.raises(UnverifiedCheckpointError, match='step 1 .* no checksum.*require_checksums'):
    strict.restore_latest_intact(tree)
  assert tree_files(tmp_path) == before
  # a checkpoint written now carries its checksum and passes
  strict.save(2, tree, {'step': 2})
  assert strict.restore_latest_intact(tree)[2] == 2


def test_a_finished_run_resumed_at_its_last_step_writes_no_second_final_row(tmp_path):
  from jaxrobust import train
  from jaxrobust.train.metrics import read_jsonl

  c = synthetic_training_config()
  c.train.num_steps = 2
  train.train_and_evaluate(c, str(tmp_path), progress=False)
  first = read_jsonl(str(tmp_path / 'metrics.jsonl'))
  again = train.train_and_evaluate(c, str(tmp_path), progress=False)
  rows = read_jsonl(str(tmp_path / 'metrics.jsonl'))
  assert rows == first
  assert sum('test_accuracy' in r for r in rows) == 1
  assert again['trained_from_step'] == 2
