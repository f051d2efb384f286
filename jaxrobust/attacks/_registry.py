"""Attacks from data: `build_attack({'name': 'pgd', 'epsilon': 0.1, ...})`, for configs and suites."""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, NamedTuple

from jaxrobust.attacks._apgd import apgd, apgd_targeted
from jaxrobust.attacks._checks import check_count
from jaxrobust.attacks._cw import cw_l2
from jaxrobust.attacks._fab import fab_targeted
from jaxrobust.attacks._noise import gaussian_noise, uniform_noise
from jaxrobust.attacks._pgd import fgm, fgsm, pgd
from jaxrobust.attacks._square import square


class _Entry(NamedTuple):
  fn: Callable
  fixed: dict  # keyword arguments that the name fixes (pgd_l2: norm='l2')
  settable: frozenset  # the hyperparameters a spec may set: the attack's declared schema


# Shared hyperparameters of the gradient attacks; EOT is spelled `eot_samples` everywhere.
_GRADIENT = frozenset({'epsilon', 'norm', 'targeted', 'bounds', 'eot_samples', 'microbatch'})
_FGSM = _GRADIENT | {'loss'}
_PGD = _GRADIENT | {
  'step_size',
  'num_steps',
  'loss',
  'kappa',
  'random_init',
  'restarts',
  'step_schedule',
  'unroll',
}
_APGD = _GRADIENT | {'num_steps', 'rho', 'unroll'}
_NOISE = frozenset({'epsilon', 'norm', 'bounds'})


def _entry(fn, settable, **fixed) -> _Entry:
  return _Entry(fn, fixed, frozenset(settable) - set(fixed))


_ATTACKS: dict[str, _Entry] = {
  'fgsm': _entry(fgsm, _FGSM),
  'fgm': _entry(fgm, _FGSM - {'norm'}),
  'pgd': _entry(pgd, _PGD),
  'pgd_l2': _entry(pgd, _PGD, norm='l2'),
  'cw_linf': _entry(pgd, _PGD, loss='margin'),
  'cw_l2': _entry(
    cw_l2,
    {'epsilon', 'targeted', 'bounds', 'kappa', 'learning_rate', 'max_iterations'}
    | {'binary_search_steps', 'initial_const', 'abort_early', 'unroll'},
  ),
  'apgd_ce': _entry(apgd, _APGD | {'targeted', 'return_x_unless_fooled'}, loss='ce'),
  'apgd_dlr': _entry(apgd, _APGD | {'return_x_unless_fooled'}, loss='dlr'),
  'apgd_t': _entry(apgd_targeted, (_APGD - {'targeted'}) | {'num_targets'}),
  'fab_t': _entry(
    fab_targeted,
    {'epsilon', 'norm', 'bounds', 'microbatch', 'num_steps', 'num_targets', 'restarts', 'unroll'}
    | {'alpha_max', 'beta', 'eta', 'return_distance'},
  ),
  'square': _entry(
    square,
    {
      'epsilon',
      'norm',
      'bounds',
      'targeted',
      'eot_samples',
      'far_draws',
      'microbatch',
      'num_queries',
      'p_init',
    }
    | {'reference_windows', 'rescale_schedule', 'return_queries'},
  ),
  'uniform': _entry(uniform_noise, _NOISE),
  'gaussian': _entry(gaussian_noise, _NOISE | {'sigma'}),
}


def attack_names() -> list[str]:
  return sorted(_ATTACKS)


def _lookup(name) -> _Entry:
  if name not in _ATTACKS:
    raise ValueError(f'unknown attack name {name!r}; known attacks: {", ".join(attack_names())}')
  return _ATTACKS[name]


def settable(name: str) -> frozenset:
  """The hyperparameters a spec of attack `name` may set (its declared schema)."""
  return _lookup(name).settable


def build_attack(spec: Mapping[str, Any]) -> Callable:
  """`attack(logits_fn, key, x, y) -> x_adv` from a dict with 'name' and hyperparameters.

  Args:
    spec: {'name': one of attack_names(), **hyperparameters}; 'eot_samples' (int) averages the
      gradient over that many draws (EOT) for the attacks that take it.

  Raises:
    ValueError: for an unknown attack name (listing the known ones), a missing name, or a
      hyperparameter outside the attack's schema (listing the ones it takes).
  """
  spec = dict(spec)
  name = spec.pop('name', None)
  entry = _lookup(name)
  unknown = sorted(set(spec) - entry.settable)
  if unknown:
    raise ValueError(
      f'attack {name!r}: unknown or fixed hyperparameters {unknown}; it takes {sorted(entry.settable)}'
    )
  if 'eot_samples' in spec:
    check_count(name, 'eot_samples', spec['eot_samples'])
  if 'bounds' in spec:
    spec['bounds'] = tuple(spec['bounds'])
  return functools.partial(entry.fn, **entry.fixed, **spec)
