"""The training config: its schema with defaults, and its validation. The one owner of config
parsing: `experiment.py` reads a validated config, each field once.

Every field a run may set is in `default_config()`; a config with any other field, or with a
value that cannot work, is refused with a `ConfigError` naming the field, before anything is
built or written. The free-form fields (`data.synthetic`, `model.kwargs`, `train.attack`,
`train.mixed_attacks`) are checked by what consumes them (the dataset, the model, the attack
registry).
"""

from __future__ import annotations

import json
import math

import ml_collections

from jaxrobust.models.init import INITS
from jaxrobust.train.parallel import PARALLEL_MODES

# Free-form sub-dicts: their keys are not part of the schema.
FREE_FORM = ('data.synthetic', 'model.kwargs', 'train.attack', 'train.mixed_attacks', 'train.guard.attack')
OBJECTIVES = (
  'clean',
  'label_smoothing',
  'gaussian_noise',
  'pgd_at',
  'mixed',
  'pni',
  'lwta_elbo',
  'trades',
  'fgsm_rs',
  'free_at',
  'interval',
)
BRANCH_DISPATCH = ('auto', 'host', 'switch')
SCHEDULES = ('constant', 'cosine', 'step', 'halving')
OPTIMIZERS = ('sgd', 'adam')


class ConfigError(ValueError):
  """A config field that is unknown or holds a value that cannot work."""


def default_config() -> ml_collections.ConfigDict:
  """Every field of a training config, with its default (Fashion-MNIST, small CNN, clean)."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(
    dict(
      name='fashion_mnist',
      data_dir='',
      num_train=0,
      num_test=0,  # 0 = the whole split
      augment=dict(pad=0, flip=False),  # off for Fashion-MNIST
      synthetic=dict(),
    )
  )
  # normalize: 'dataset' (per-channel mean/std of the training images, inside the model) or 'none'.
  # init: 'torch' (PyTorch's defaults, models/init.py; the study and the defenses' reference code
  # are PyTorch, and PGD-AT trained this way matches torch's accuracy: benchmarks/train_vs_torch.py)
  # or 'flax' (the layers' own initialisers, 1-3 points lower after PGD-AT on Fashion-MNIST).
  c.model = ml_collections.ConfigDict(
    dict(name='small_cnn', normalize='dataset', init='torch', kwargs=dict())
  )
  c.train = ml_collections.ConfigDict(
    dict(
      objective='clean',
      batch_size=128,
      num_epochs=1.0,
      num_steps=0,  # num_steps > 0 wins
      optimizer='sgd',
      learning_rate=0.05,
      momentum=0.9,
      weight_decay=5e-4,
      schedule='cosine',
      boundaries_epochs=(),
      schedule_factor=0.1,
      no_decay=('noise_scale',),
      label_smoothing=0.0,
      # Adversarial objectives: the attack inside the step (an attack spec).
      attack=dict(name='pgd', epsilon=0.1, step_size=0.025, num_steps=10),
      attack_labels='pred',  # pni: attack the clean predictions ('pred') or labels ('true')
      # Adversarial objectives: the first clean_epochs epochs train on clean cross-entropy alone
      # (PNI's reference delays its adversarial training by 5 epochs).
      clean_epochs=0.0,
      kl_beta=1.0,  # lwta_elbo: β of β·ΣKL/N (0 = cross-entropy alone)
      trades_beta=6.0,  # trades: β of the KL term
      noise_sigma=0.0,  # clean / gaussian_noise: σ of Gaussian augmentation
      # interval: certified training with interval bounds (Gowal et al.): ε grows linearly from 0
      # to `epsilon` over `ramp_epochs` after `warmup_epochs` of clean training, while the
      # clean loss's weight falls from 1 to `final_clean_weight`.
      interval=dict(epsilon=0.1, warmup_epochs=0.0, ramp_epochs=1.0, final_clean_weight=0.5),
      mixed_attacks=dict(),  # mixed: name -> attack spec, in branch order after clean
      clean_prob=0.5,  # mixed: probability of a clean step
      # fgsm_rs: one FGSM step of α = fgsm_rs_alpha·ε from a uniform random start in the ε-ball
      # (ε = attack.epsilon); 1.25 as Wong, Rice & Kolter 2020.
      fgsm_rs_alpha=1.25,
      # free_at: each minibatch is replayed this many times (m), with the perturbation carried
      # over; num_epochs counts passes over the data, so the cost is m gradients per batch.
      free_replays=8,
      # The catastrophic-overfitting guard: every epoch, robust accuracy under guard.attack on
      # `holdout` training examples kept out of training; the best epoch's parameters are the
      # run's result, and training stops once accuracy falls `drop` below the best (0 = off).
      guard=dict(holdout=0, drop=0.2, attack=dict(name='pgd', epsilon=0.1, step_size=0.025, num_steps=10)),
      parallel='none',
      log_every=50,
      checkpoint_every=0,
      keep_checkpoints=3,
      stop_at_step=0,
      # Mixed training's branch: 'switch' (inside the program), 'host' (one program per branch,
      # chosen from the same key), 'auto' (host on the CPU, where conditionals are slow).
      branch_dispatch='auto',
    )
  )
  c.eval = ml_collections.ConfigDict(dict(batch_size=500))
  # Multi-host start-up (see distributed.py); the environment variables serve as well.
  c.distributed = ml_collections.ConfigDict(dict(coordinator='', num_processes=0, process_id=-1, auto=False))
  return c


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    path = f'{prefix}{k}'
    if isinstance(v, (dict, ml_collections.ConfigDict)) and path not in FREE_FORM:
      out.update(_flatten(v, path + '.'))
    else:
      out[path] = v
  return out


def flat_fields(config) -> dict:
  """The config as {'train.batch_size': 128, ...}; free-form sub-dicts stay whole."""
  d = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  return _flatten(d)


def _require(ok: bool, field: str, message: str) -> None:
  if not ok:
    raise ConfigError(f'config.{field}: {message}')


def _finite_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_attack_spec(spec, field: str) -> None:
  """ε, step sizes and σ of a training attack: finite numbers >= 0; step counts integers >= 1."""
  spec = dict(spec or {})
  for key in ('epsilon', 'step_size', 'sigma'):
    if key in spec:
      v = spec[key]
      _require(_finite_number(v) and v >= 0, f'{field}.{key}', f'must be a finite number >= 0, got {v!r}')
  for key in ('num_steps', 'restarts'):
    if key in spec:
      v = spec[key]
      _require(
        isinstance(v, int) and not isinstance(v, bool) and v >= 1,
        f'{field}.{key}',
        f'must be an integer >= 1, got {v!r}',
      )


def validate(config) -> None:
  """Raises ConfigError, naming the field, for unknown fields and values that cannot work."""
  fields = flat_fields(config)
  known = flat_fields(default_config())
  unknown = sorted(set(fields) - set(known))
  if unknown:
    raise ConfigError(f'unknown config fields {unknown}; known fields: {sorted(known)}')
  missing = sorted(set(known) - set(fields))
  if missing:
    raise ConfigError(f'config lacks the fields {missing}; start from jaxrobust.train.default_config()')
  f = fields
  for name in ('data.num_train', 'data.num_test'):
    _require(
      isinstance(f[name], int) and f[name] >= 0, name, f'must be an integer >= 0 (0 = all), got {f[name]!r}'
    )
  _require(f['data.augment.pad'] >= 0, 'data.augment.pad', f'must be >= 0, got {f["data.augment.pad"]}')
  _require(
    f['model.normalize'] in ('dataset', 'none'),
    'model.normalize',
    f"must be 'dataset' or 'none', got {f['model.normalize']!r}",
  )
  _require(f['model.init'] in INITS, 'model.init', f'must be one of {INITS}, got {f["model.init"]!r}')
  t = {k[len('train.') :]: v for k, v in f.items() if k.startswith('train.')}
  _require(
    t['objective'] in OBJECTIVES,
    'train.objective',
    f'unknown objective {t["objective"]!r}; known: {", ".join(OBJECTIVES)}',
  )
  _require(
    isinstance(t['batch_size'], int) and t['batch_size'] >= 1,
    'train.batch_size',
    f'must be an integer >= 1, got {t["batch_size"]!r}',
  )
  _require(
    isinstance(t['num_steps'], int) and t['num_steps'] >= 0,
    'train.num_steps',
    f'must be an integer >= 0 (0 = use num_epochs), got {t["num_steps"]!r}',
  )
  if t['num_steps'] == 0:
    _require(
      t['num_epochs'] > 0, 'train.num_epochs', f'must be > 0 when num_steps is 0, got {t["num_epochs"]}'
    )
  _require(t['learning_rate'] > 0, 'train.learning_rate', f'must be > 0, got {t["learning_rate"]}')
  _require(t['weight_decay'] >= 0, 'train.weight_decay', f'must be >= 0, got {t["weight_decay"]}')
  _require(0 <= t['momentum'] < 1, 'train.momentum', f'must be in [0, 1), got {t["momentum"]}')
  _require(
    t['optimizer'] in OPTIMIZERS, 'train.optimizer', f'unknown optimizer {t["optimizer"]!r}; use {OPTIMIZERS}'
  )
  _require(
    t['schedule'] in SCHEDULES, 'train.schedule', f'unknown schedule {t["schedule"]!r}; use {SCHEDULES}'
  )
  _require(
    0 <= t['label_smoothing'] < 1, 'train.label_smoothing', f'must be in [0, 1), got {t["label_smoothing"]}'
  )
  _require(t['noise_sigma'] >= 0, 'train.noise_sigma', f'must be >= 0, got {t["noise_sigma"]}')
  _require(0 <= t['clean_prob'] <= 1, 'train.clean_prob', f'must be in [0, 1], got {t["clean_prob"]}')
  _require(
    0 <= t['clean_epochs'] < t['num_epochs'] or t['clean_epochs'] == 0,
    'train.clean_epochs',
    f'must be >= 0 and below num_epochs ({t["num_epochs"]}), got {t["clean_epochs"]}',
  )
  _require(t['kl_beta'] >= 0, 'train.kl_beta', f'must be >= 0, got {t["kl_beta"]}')
  _require(
    _finite_number(t['trades_beta']) and t['trades_beta'] >= 0,
    'train.trades_beta',
    f'must be a finite number >= 0, got {t["trades_beta"]!r}',
  )
  _require(
    isinstance(f['seed'], int) and 0 <= f['seed'] < 2**63,
    'seed',
    f'must be an integer in [0, 2**63), got {f["seed"]!r}',
  )
  for name in ('num_epochs', 'learning_rate', 'weight_decay', 'clean_epochs'):
    _require(_finite_number(t[name]), f'train.{name}', f'must be a finite number, got {t[name]!r}')
  _require(
    _finite_number(t['schedule_factor']) and t['schedule_factor'] > 0,
    'train.schedule_factor',
    f'must be a finite number > 0, got {t["schedule_factor"]!r}',
  )
  _require(
    all(_finite_number(e) and e > 0 for e in t['boundaries_epochs']),
    'train.boundaries_epochs',
    f'must hold finite epochs > 0, got {t["boundaries_epochs"]!r}',
  )
  # Every training objective's attack is checked here, once: ε and step sizes finite and >= 0
  # (a negative ε would clip to an inverted box and train on shifted images, not adversarial ones).
  _check_attack_spec(t['attack'], 'train.attack')
  _check_attack_spec(t['guard.attack'], 'train.guard.attack')
  for name, spec in dict(t['mixed_attacks']).items():
    _check_attack_spec(spec, f'train.mixed_attacks.{name}')
  _require(t['fgsm_rs_alpha'] > 0, 'train.fgsm_rs_alpha', f'must be > 0, got {t["fgsm_rs_alpha"]}')
  _require(
    isinstance(t['free_replays'], int) and t['free_replays'] >= 1,
    'train.free_replays',
    f'must be an integer >= 1, got {t["free_replays"]!r}',
  )
  _require(
    isinstance(t['guard.holdout'], int) and t['guard.holdout'] >= 0,
    'train.guard.holdout',
    f'must be an integer >= 0 (0 = no guard), got {t["guard.holdout"]!r}',
  )
  _require(0 < t['guard.drop'] <= 1, 'train.guard.drop', f'must be in (0, 1], got {t["guard.drop"]}')
  _require(
    t['attack_labels'] in ('true', 'pred'),
    'train.attack_labels',
    f"must be 'true' or 'pred', got {t['attack_labels']!r}",
  )
  _require(
    t['parallel'] in PARALLEL_MODES, 'train.parallel', f'unknown mode {t["parallel"]!r}; use {PARALLEL_MODES}'
  )
  _require(
    t['branch_dispatch'] in BRANCH_DISPATCH,
    'train.branch_dispatch',
    f'unknown dispatch {t["branch_dispatch"]!r}; use {BRANCH_DISPATCH}',
  )
  for name in ('log_every', 'keep_checkpoints'):
    _require(
      isinstance(t[name], int) and t[name] >= 1, f'train.{name}', f'must be an integer >= 1, got {t[name]!r}'
    )
  for name in ('checkpoint_every', 'stop_at_step'):
    _require(
      isinstance(t[name], int) and t[name] >= 0, f'train.{name}', f'must be an integer >= 0, got {t[name]!r}'
    )
  if t['objective'] == 'label_smoothing':
    _require(t['label_smoothing'] > 0, 'train.label_smoothing', "must be > 0 for objective 'label_smoothing'")
  if t['objective'] == 'interval':
    eps, ramp, warm = t['interval.epsilon'], t['interval.ramp_epochs'], t['interval.warmup_epochs']
    _require(
      _finite_number(eps) and eps > 0, 'train.interval.epsilon', f'must be a finite number > 0, got {eps!r}'
    )
    for name, v in (('ramp_epochs', ramp), ('warmup_epochs', warm)):
      _require(
        _finite_number(v) and v >= 0, f'train.interval.{name}', f'must be a finite number >= 0, got {v!r}'
      )
    w = t['interval.final_clean_weight']
    _require(
      _finite_number(w) and 0 <= w <= 1, 'train.interval.final_clean_weight', f'must be in [0, 1], got {w!r}'
    )
  if t['objective'] == 'gaussian_noise':
    _require(t['noise_sigma'] > 0, 'train.noise_sigma', "must be > 0 for objective 'gaussian_noise'")
  if t['objective'] == 'mixed':
    _require(
      len(t['mixed_attacks']) > 0,
      'train.mixed_attacks',
      "objective 'mixed' needs name -> attack spec entries",
    )
  _require(
    isinstance(f['eval.batch_size'], int) and f['eval.batch_size'] >= 1,
    'eval.batch_size',
    f'must be an integer >= 1, got {f["eval.batch_size"]!r}',
  )


# What may change when a run resumes: how long it runs, how it logs and saves, where it runs.
# Every other field changes what is trained.
RESUMABLE_CHANGES = (
  'train.num_epochs',
  'train.num_steps',
  'train.stop_at_step',
  'train.log_every',
  'train.checkpoint_every',
  'train.keep_checkpoints',
  'train.parallel',
  'train.branch_dispatch',
  'eval.batch_size',
  'data.data_dir',
  'data.num_test',
  'distributed.coordinator',
  'distributed.num_processes',
  'distributed.process_id',
  'distributed.auto',
)


# Fields whose default changed: a stored config without them trained with the old value.
LEGACY_DEFAULTS = {'model.init': 'flax'}


def with_defaults(stored: dict) -> ml_collections.ConfigDict:
  """A config stored by an earlier version (config.json), with the fields added since then at
  their defaults, which train what the earlier version trained (e.g. `train.guard` off).
  Fields the schema does not know stay, for `validate` to refuse."""

  defaults = default_config().to_dict()
  merged = dict(defaults)
  for k, v in stored.items():
    if isinstance(v, dict) and isinstance(defaults.get(k), dict):
      merged[k] = _merge_section(defaults[k], v, k)
    else:
      merged[k] = v
  for path, old in LEGACY_DEFAULTS.items():
    section, field = path.split('.')
    if field not in stored.get(section, {}):
      merged[section][field] = old
  return ml_collections.ConfigDict(merged)


def _merge_section(base: dict, over: dict, path: str) -> dict:
  """`over` on top of `base`, recursing except into the free-form sub-dicts (taken whole)."""
  out = dict(base)
  for k, v in over.items():
    sub = f'{path}.{k}'
    if isinstance(v, dict) and isinstance(base.get(k), dict) and sub not in FREE_FORM:
      out[k] = _merge_section(base[k], v, sub)
    else:
      out[k] = v
  return out


def training_differences(stored: dict, config) -> list[str]:
  """The fields, other than `RESUMABLE_CHANGES`, whose values differ between a stored config
  (as saved in config.json, filled by `with_defaults`) and `config`: 'field: old -> new' lines."""
  a, b = flat_fields(with_defaults(stored)), flat_fields(config)
  norm = lambda v: json.loads(json.dumps(v, default=str))  # tuples and lists compare equal
  out = []
  for k in sorted(set(a) | set(b)):
    if k in RESUMABLE_CHANGES:
      continue
    va, vb = norm(a.get(k, '<absent>')), norm(b.get(k, '<absent>'))
    if va != vb:
      out.append(f'{k}: {va!r} -> {vb!r}')
  return out
