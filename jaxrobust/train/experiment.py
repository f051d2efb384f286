"""Everything a config names, built in one place: the dataset, the model, the optimizer, the
objective, the keys and the loop's settings.

`build_experiment` validates the config (`config.py`) and reads each field once; the loop,
`restore.py`, the experiment scripts and the tests all start from the `Experiment` it returns.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from jaxrobust import keys
from jaxrobust.attacks import build_attack
from jaxrobust.data import Dataset, first_examples, load_dataset
from jaxrobust.models import create_model
from jaxrobust.train import optim
from jaxrobust.train.config import ConfigError, validate
from jaxrobust.train.objectives import (
  Objective,
  adversarial_objective,
  clean_objective,
  fgsm_rs_attack,
  free_objective,
  interval_objective,
  mixed_objective,
  trades_objective,
)
from jaxrobust.train.parallel import AXIS
from jaxrobust.train.state import TrainState, create_train_state


@dataclasses.dataclass(frozen=True)
class LoopSettings:
  """How the loop runs: batch, length, logging, checkpoints, parallelism, augmentation."""

  batch_size: int
  steps_per_epoch: int
  total_steps: int
  stop_at_step: int  # the loop stops here (total_steps unless the config says earlier)
  log_every: int
  checkpoint_every: int
  keep_checkpoints: int
  eval_batch_size: int
  parallel: str
  branch_dispatch: str
  pad: int
  flip: bool
  clean_steps: int = 0  # the first steps train with `Experiment.warmup` (config.train.clean_epochs)


@dataclasses.dataclass(frozen=True)
class Guard:
  """The catastrophic-overfitting guard (Wong, Rice & Kolter 2020): robust accuracy under
  `attack` on training examples kept out of training, checked every epoch.

  Attributes:
    images, labels: the held-out training examples (uint8, as the dataset).
    attack: `attack(logits_fn, key, x, y) -> x_adv`.
    drop: training stops once the accuracy falls this far below the best epoch's.
  """

  images: np.ndarray
  labels: np.ndarray
  attack: Callable
  drop: float


@dataclasses.dataclass(frozen=True)
class Experiment:
  """A training run, built: what `train` needs and nothing to parse."""

  config: ml_collections.ConfigDict
  dataset: Dataset
  model: nn.Module
  tx: optax.GradientTransformation
  objective: Objective
  keys: keys.RunKeys
  loop: LoopSettings
  guard: Guard | None = None
  warmup: Objective | None = None  # the objective of the first loop.clean_steps steps

  def init_state(self) -> TrainState:
    """The initial training state (parameters from the init key)."""
    sample = np.zeros((1,) + self.dataset.image_shape, np.float32)
    return create_train_state(self.model, self.keys.init, sample, self.tx, self.config.model.init)


def load_data(data: ml_collections.ConfigDict, seed: int) -> Dataset:
  """The dataset of `config.data` (the seed drives the synthetic one).

  Raises:
    ConfigError: naming config.data.num_train / num_test when it exceeds its split.
  """
  ds = load_dataset(data.name, data.data_dir or None, seed=seed, synthetic=dict(data.synthetic))
  try:
    return first_examples(ds, data.num_train or None, data.num_test or None)
  except ValueError as e:
    raise ConfigError(f'config.data.{e}') from None


def build_model(model: ml_collections.ConfigDict, ds: Dataset, *, bn_axis_name: str | None = None):
  """The model of `config.model`, with the dataset's classes and (optionally) its normalisation."""
  kwargs = dict(model.kwargs)
  if model.normalize == 'dataset':
    mean, std = ds.channel_stats()
    kwargs.update(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
  return create_model(model.name, num_classes=ds.num_classes, bn_axis_name=bn_axis_name, **kwargs)


def build_objective(
  t: ml_collections.ConfigDict, apply_fn, num_classes: int, num_train: int, steps_per_epoch: int
) -> Objective:
  """The objective named by `config.train.objective`, with its hyperparameters.

  Objectives: 'clean' (label smoothing and Gaussian augmentation optional), 'label_smoothing',
  'gaussian_noise', 'pgd_at', 'mixed', 'pni' (0.5 clean + 0.5 adversarial CE, attacking the
  predicted labels unless attack_labels='true'), 'lwta_elbo' (PGD-AT + β·ΣKL/N), 'trades',
  'fgsm_rs' (FGSM from a random start, α = fgsm_rs_alpha·ε) and 'free_at' (free_replays replays
  per batch); the last two take ε from `attack.epsilon`; 'interval' (certified training with
  interval bounds, `train.interval`, its ramps counted in epochs).
  """
  name, ls, attack = t.objective, t.label_smoothing, dict(t.attack)
  if name in ('clean', 'label_smoothing', 'gaussian_noise'):
    return clean_objective(apply_fn, num_classes, label_smoothing=ls, noise_sigma=t.noise_sigma)
  if name == 'pgd_at':
    return adversarial_objective(apply_fn, num_classes, attack, label_smoothing=ls)
  if name == 'pni':
    return adversarial_objective(
      apply_fn, num_classes, attack, label_smoothing=ls, clean_weight=0.5, attack_labels=t.attack_labels
    )
  if name == 'lwta_elbo':
    return adversarial_objective(
      apply_fn, num_classes, attack, label_smoothing=ls, kl_beta=t.kl_beta, num_train=num_train
    )
  if name == 'mixed':
    mixed = {k: dict(v) for k, v in dict(t.mixed_attacks).items()}
    return mixed_objective(apply_fn, num_classes, mixed, clean_prob=t.clean_prob, label_smoothing=ls)
  if name == 'fgsm_rs':
    spec = dict(fgsm_rs_attack(attack['epsilon'], t.fgsm_rs_alpha))
    if 'microbatch' in attack:
      spec['microbatch'] = attack['microbatch']
    return adversarial_objective(apply_fn, num_classes, spec, label_smoothing=ls)
  if name == 'free_at':
    return free_objective(
      apply_fn, num_classes, epsilon=attack['epsilon'], replays=t.free_replays, label_smoothing=ls
    )
  if name == 'interval':
    iv = t.interval
    return interval_objective(
      apply_fn,
      num_classes,
      epsilon=iv.epsilon,
      warmup_steps=int(round(iv.warmup_epochs * steps_per_epoch)),
      ramp_steps=int(round(iv.ramp_epochs * steps_per_epoch)),
      final_clean_weight=iv.final_clean_weight,
      label_smoothing=ls,
    )
  assert name == 'trades', name  # validate() allows only the names above
  return trades_objective(apply_fn, num_classes, attack, beta=t.trades_beta)


def build_experiment(config: ml_collections.ConfigDict, *, dataset: Dataset | None = None) -> Experiment:
  """Validates `config` and builds every object it names.

  Args:
    config: a full training config (start from `default_config()` or experiments/configs/).
    dataset: an already loaded dataset (else loaded from `config.data`).

  Raises:
    ConfigError: for unknown fields or values that cannot work, naming the field.
  """
  validate(config)
  t = config.train
  ds = load_data(config.data, config.seed) if dataset is None else dataset
  guard = None
  if t.guard.holdout:
    h = t.guard.holdout
    if h >= ds.num_train:
      raise ConfigError(
        f'config.train.guard.holdout: {h} leaves none of the {ds.num_train} training examples'
      )
    guard = Guard(
      ds.train_images[-h:], ds.train_labels[-h:], build_attack(dict(t.guard.attack)), t.guard.drop
    )
    ds = dataclasses.replace(ds, train_images=ds.train_images[:-h], train_labels=ds.train_labels[:-h])
  parallel = t.parallel
  model = build_model(config.model, ds, bn_axis_name=None if parallel == 'none' else AXIS)
  spe = ds.num_train // t.batch_size
  if spe < 1:
    raise ConfigError(f'config.train.batch_size: {t.batch_size} exceeds the {ds.num_train} training examples')
  total = t.num_steps or int(math.ceil(t.num_epochs * spe))
  if parallel != 'none' and t.batch_size % jax.device_count():
    raise ConfigError(
      f'config.train.batch_size: {t.batch_size} is not divisible by the '
      f'{jax.device_count()} devices of parallel={parallel!r}'
    )
  # The schedule counts optimizer updates: Free-AT makes free_replays of them per batch.
  updates = t.free_replays if t.objective == 'free_at' else 1
  schedule = optim.make_schedule(
    t.schedule,
    t.learning_rate,
    total * updates,
    spe * updates,
    boundaries_epochs=tuple(t.boundaries_epochs),
    factor=t.schedule_factor,
  )
  tx = optim.make_optimizer(
    t.optimizer, schedule, momentum=t.momentum, weight_decay=t.weight_decay, no_decay=tuple(t.no_decay)
  )
  objective = build_objective(t, model.apply, ds.num_classes, ds.num_train, spe)
  loop = LoopSettings(
    batch_size=t.batch_size,
    steps_per_epoch=spe,
    total_steps=total,
    stop_at_step=min(total, t.stop_at_step or total),
    log_every=t.log_every,
    checkpoint_every=t.checkpoint_every or spe,
    keep_checkpoints=t.keep_checkpoints,
    eval_batch_size=config.eval.batch_size,
    parallel=parallel,
    branch_dispatch=t.branch_dispatch,
    pad=config.data.augment.pad,
    flip=config.data.augment.flip,
    clean_steps=int(round(t.clean_epochs * spe)),
  )
  warmup = None
  if loop.clean_steps:
    warmup = clean_objective(model.apply, ds.num_classes, label_smoothing=t.label_smoothing)
  return Experiment(config, ds, model, tx, objective, keys.run_keys(config.seed), loop, guard, warmup)
