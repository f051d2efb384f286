"""Attacks from data: `build_attack({'name': 'pgd', 'epsilon': 0.1, ...})`, for configs and suites."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping

from jaxrobust.attacks._apgd import apgd, apgd_targeted
from jaxrobust.attacks._checks import check_count
from jaxrobust.attacks._cw import cw_l2
from jaxrobust.attacks._fab import fab_targeted
from jaxrobust.attacks._noise import gaussian_noise, uniform_noise
from jaxrobust.attacks._pgd import fgm, fgsm, pgd
from jaxrobust.attacks._square import square

# name -> (function, fixed keyword arguments)
_ATTACKS: dict[str, tuple[Callable, dict]] = {
  'fgsm': (fgsm, {}),
  'fgm': (fgm, {}),
  'pgd': (pgd, {}),
  'pgd_l2': (pgd, {'norm': 'l2'}),
  'cw_linf': (pgd, {'loss': 'margin'}),
  'cw_l2': (cw_l2, {}),
  'apgd_ce': (apgd, {'loss': 'ce'}),
  'apgd_dlr': (apgd, {'loss': 'dlr'}),
  'apgd_t': (apgd_targeted, {}),
  'fab_t': (fab_targeted, {}),
  'square': (square, {}),
  'uniform': (uniform_noise, {}),
  'gaussian': (gaussian_noise, {}),
}


# Arguments of every call, never of a spec.
_CALL_ARGS = frozenset({'logits_fn', 'key', 'x', 'y'})


def attack_names() -> list[str]:
  return sorted(_ATTACKS)


def settable(name: str) -> set[str]:
  """The hyperparameters a spec of attack `name` may set (the fixed ones and call arguments aside)."""
  if name not in _ATTACKS:
    raise ValueError(f'unknown attack name {name!r}; known attacks: {", ".join(attack_names())}')
  fn, fixed = _ATTACKS[name]
  return set(inspect.signature(fn).parameters) - set(fixed) - _CALL_ARGS


def build_attack(spec: Mapping[str, Any]) -> Callable:
  """`attack(logits_fn, key, x, y) -> x_adv` from a dict with 'name' and hyperparameters.

  Args:
    spec: {'name': one of attack_names(), **hyperparameters}; 'eot' (int) averages gradients
      over that many keys (EOT) for gradient attacks.

  Raises:
    ValueError: for an unknown attack name (listing the known ones) or a missing name.
  """
  spec = dict(spec)
  name = spec.pop('name', None)
  if name not in _ATTACKS:
    raise ValueError(f'unknown attack name {name!r}; known attacks: {", ".join(attack_names())}')
  fn, fixed = _ATTACKS[name]
  eot_samples = spec.pop('eot', 1)
  if eot_samples != 1 or not isinstance(eot_samples, int):
    if fn not in (pgd, apgd, fgsm, fgm):
      raise ValueError(f'attack {name!r} does not take EOT samples')
    check_count(name, 'eot', eot_samples)
    spec['eot_samples'] = eot_samples
  params = inspect.signature(fn).parameters
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    unknown = sorted(set(spec) - set(params) | set(spec) & set(fixed) | set(spec) & _CALL_ARGS)
    if unknown:
      settable = sorted(set(params) - set(fixed) - _CALL_ARGS)
      raise ValueError(f'attack {name!r}: unknown or fixed hyperparameters {unknown}; it takes {settable}')
  if 'bounds' in spec:
    spec['bounds'] = tuple(spec['bounds'])
  return functools.partial(fn, **fixed, **spec)
