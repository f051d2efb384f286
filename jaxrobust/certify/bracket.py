"""A certified lower bound beside an attack's upper bound on the same images: the bracket that
the `jaxrobust certify` command and the study's certified rows report.

Two methods, each a function of plain functions (no model or training import):

- `smoothing_bracket`: CERTIFY of the Gaussian-smoothed classifier (n0 selection and n estimate
  draws at level α) on every image, again with `n_large` draws on the first `num_large`, and,
  beside each L2 radius, SmoothAdv (PGD-L2 on the smoothed soft classifier with `attack_samples`
  noise draws per step) scored by the plurality of `predict_draws` fresh draws: the empirical
  (upper) accuracy. The base classifier sees its input clipped to [0, 1] (`clipped`), so the
  certificate holds for the classifier as it was trained on noisy inputs.
- `interval_bracket`: the verified L∞ accuracy of interval bounds over an ε grid, and as upper
  bounds PGD-20 at each ε and AutoAttack (standard) at one ε.

Every random draw comes from a `keys.CertifyKeys` (images by index, attacks by batch).

References:
  Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized Smoothing. ICML 2019.
  Salman et al. Provably Robust Deep Learning via Adversarially Trained Smoothed Classifiers.
  NeurIPS 2019.
  Gowal et al. On the Effectiveness of Interval Bound Propagation for Training Verifiably Robust
  Models. 2018.
"""

from __future__ import annotations

import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxrobust import keys
from jaxrobust.attacks import autoattack, pgd
from jaxrobust.certify.intervals import interval_bounds, verified
from jaxrobust.certify.smoothing import (
  certified_accuracy,
  class_counts,
  smooth_certify,
  smoothed_soft_logits,
)

RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
EPSILONS = (0.0, 0.02, 0.05, 0.1, 0.15)


class SmoothingSettings(NamedTuple):
  """What `smoothing_bracket` draws: σ, CERTIFY's n0, n and α, the larger n on the first images,
  and SmoothAdv's images, steps, noise draws per step and the draws that classify its points."""

  sigma: float
  n0: int = 100
  n: int = 10_000
  alpha: float = 0.001
  n_large: int = 100_000
  num_large: int = 50
  num_attack: int = 200
  attack_steps: int = 20
  attack_samples: int = 8
  predict_draws: int = 100


class IntervalSettings(NamedTuple):
  """The ε grid of `interval_bracket` and the ε of its AutoAttack."""

  epsilons: tuple = EPSILONS
  autoattack_epsilon: float = 0.1


def settings_from(options) -> SmoothingSettings | IntervalSettings:
  """The settings named by `options` (any object with `method` and the settings' fields as
  attributes: a command line's flags): `SmoothingSettings` for 'smoothing', else `IntervalSettings`,
  checked (`check_settings`) before anything is loaded or run.

  Raises:
    ValueError: an unknown method, or a setting that cannot work (named).
  """
  settings: SmoothingSettings | IntervalSettings
  if options.method == 'smoothing':
    settings = SmoothingSettings(**{k: getattr(options, k) for k in SmoothingSettings._fields})
  elif options.method == 'intervals':
    settings = IntervalSettings(autoattack_epsilon=options.autoattack_epsilon)
  else:
    raise ValueError(f"method must be 'smoothing' or 'intervals', got {options.method!r}")
  check_settings(settings)
  return settings


def check_settings(settings: SmoothingSettings | IntervalSettings) -> None:
  """Raises ValueError naming a setting that cannot work (σ ≤ 0, a count < 1, α outside (0, 1))."""
  if isinstance(settings, SmoothingSettings):
    if not (isinstance(settings.sigma, (int, float)) and settings.sigma > 0):
      raise ValueError(f'sigma must be > 0, got {settings.sigma!r}')
    if not 0 < settings.alpha < 1:
      raise ValueError(f'alpha must be in (0, 1), got {settings.alpha!r}')
    for name in (f for f in SmoothingSettings._fields if f not in ('sigma', 'alpha')):  # the counts
      v = getattr(settings, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f'{name} must be an integer >= 1, got {v!r}')
  elif not settings.autoattack_epsilon > 0 or any(e < 0 for e in settings.epsilons):
    raise ValueError(
      f'epsilons must be >= 0 and autoattack_epsilon > 0, got {settings.epsilons}, {settings.autoattack_epsilon}'
    )


def clipped(logits_fn):
  """The base classifier on its input clipped to [0, 1] (how Gaussian augmentation trained it)."""
  return jax.tree_util.Partial(_clip_then, logits_fn)


def _clip_then(logits_fn, x, key):
  return logits_fn(jnp.clip(x, 0.0, 1.0), key)


def _batches(n, size):
  return [(i, min(i + size, n)) for i in range(0, n, size)]


def certify_smoothing(logits_fn, x, y, *, sigma, n0, n, alpha, key, batch=100, desc='certify'):
  """CERTIFY over the images in batches; each image's own key (`keys.example_keys`)."""
  ek = keys.example_keys(key, len(x))
  parts = [
    smooth_certify(logits_fn, ek[a:b], x[a:b], sigma=sigma, n0=n0, n=n, alpha=alpha)
    for a, b in tqdm(_batches(len(x), batch), desc=desc, leave=False)
  ]
  return type(parts[0])(*(np.concatenate(f) for f in zip(*parts)))


def smoothed_plurality_right(logits_fn, x, y, *, sigma, draws, key, batch=100) -> np.ndarray:
  """Per image: the plurality class of `draws` noisy copies is y (the smoothed classifier's
  answer without abstention)."""
  ek = keys.example_keys(key, len(x))
  counts = np.concatenate(
    [class_counts(logits_fn, ek[a:b], x[a:b], sigma=sigma, n=draws) for a, b in _batches(len(x), batch)]
  )
  return counts.argmax(1) == y


def smoothing_bracket(logits_fn, x, y, s: SmoothingSettings, ck: keys.CertifyKeys) -> dict:
  """Certified and SmoothAdv accuracy of the smoothed `logits_fn` at `RADII` (module docstring).

  Args:
    logits_fn: the deterministic base classifier `logits_fn(x, key)` (clipped here).
    x, y: images in [0, 1] and labels (host arrays).
    s: the draws and the attack's budget.
    ck: the certification's keys.

  Returns:
    the record's fields: the certified accuracy at every radius, the abstention rate, CERTIFY
    with `n_large` draws on the first images, and SmoothAdv's accuracy with the certified
    accuracy on the same images.
  """
  check_settings(s)
  f = clipped(logits_fn)
  t0 = time.time()
  cert = certify_smoothing(f, x, y, sigma=s.sigma, n0=s.n0, n=s.n, alpha=s.alpha, key=ck.certify)
  t_cert = time.time() - t0
  m = min(s.num_large, len(x))
  large = certify_smoothing(f, x[:m], y[:m], sigma=s.sigma, n0=s.n0, n=s.n_large, alpha=s.alpha, key=ck.large)
  small_on_m = certified_accuracy(type(cert)(*(a[:m] for a in cert)), y[:m], RADII)
  soft = smoothed_soft_logits(f, sigma=s.sigma, samples=s.attack_samples)
  attack = jax.jit(
    lambda k, xx, yy, eps: pgd(
      soft, k, xx, yy, epsilon=eps, norm='l2', num_steps=s.attack_steps, random_init=None
    )
  )
  na = min(s.num_attack, len(x))
  empirical = []
  for r in tqdm(RADII, desc='SmoothAdv', leave=False):
    if r == 0:
      adv = x[:na]
    else:
      adv = np.concatenate(
        [
          np.asarray(attack(keys.batch_keys(ck.attack, a).attacks, x[a:b], y[a:b], r))
          for a, b in _batches(na, 50)
        ]
      )
    right = smoothed_plurality_right(f, adv, y[:na], sigma=s.sigma, draws=s.predict_draws, key=ck.predict)
    empirical.append(float(right.mean()))
  cert_on_na = certified_accuracy(type(cert)(*(a[:na] for a in cert)), y[:na], RADII)
  return {
    'method': 'smoothing',
    'sigma': s.sigma,
    'n0': s.n0,
    'n': s.n,
    'alpha': s.alpha,
    'num_test': len(x),
    'radii': list(RADII),
    'certified': certified_accuracy(cert, y, RADII).tolist(),
    'abstain_rate': float(np.mean(cert.prediction < 0)),
    'certify_s': t_cert,
    'large_n': {
      'n': s.n_large,
      'num_test': m,
      'certified': certified_accuracy(large, y[:m], RADII).tolist(),
      'certified_with_n': small_on_m.tolist(),
      'mean_radius_right': float(np.mean(np.where(large.prediction == y[:m], large.radius, 0.0))),
      'mean_radius_right_with_n': float(
        np.mean(np.where(cert.prediction[:m] == y[:m], cert.radius[:m], 0.0))
      ),
    },
    'empirical': {
      'attack': f'SmoothAdv: PGD-L2, {s.attack_steps} steps, {s.attack_samples} noise draws per step, no random start',
      'prediction': f'plurality of {s.predict_draws} fresh draws (no abstention)',
      'num_test': na,
      'accuracy': empirical,
      'certified_on_same_images': cert_on_na.tolist(),
    },
  }


def interval_bracket(
  apply_fn: Callable, variables, logits_fn, x, y, s: IntervalSettings, ck: keys.CertifyKeys
) -> dict:
  """Verified (interval bounds) and attacked accuracy over `s.epsilons`, and AutoAttack at one ε.

  Args:
    apply_fn: the deterministic model's `apply(variables, x)`, which interval bounds propagate through.
    variables: its variables.
    logits_fn: the same model as `logits_fn(x, key)`, for the attacks.
    x, y: images in [0, 1] and labels (host arrays).
    s: the ε grid and AutoAttack's ε.
    ck: the certification's keys.
  """
  check_settings(s)
  bound = jax.jit(lambda v, xx, yy, eps: verified(interval_bounds(apply_fn, v, xx, eps), yy))
  attack = jax.jit(
    lambda k, xx, yy, eps: pgd(logits_fn, k, xx, yy, epsilon=eps, num_steps=20, step_size=eps / 4)
  )
  predict = jax.jit(lambda xx: jnp.argmax(logits_fn(xx, ck.predict), -1))
  ver, emp = [], []
  t0 = time.time()
  for eps in tqdm(s.epsilons, desc='intervals', leave=False):
    ok, right = [], []
    for a, b in _batches(len(x), 250):
      ok.append(np.asarray(bound(variables, x[a:b], y[a:b], eps)))
      adv = x[a:b] if eps == 0 else attack(keys.batch_keys(ck.attack, a).attacks, x[a:b], y[a:b], eps)
      right.append(np.asarray(predict(adv)) == y[a:b])
    ver.append(float(np.concatenate(ok).mean()))
    emp.append(float(np.concatenate(right).mean()))
  t_iv = time.time() - t0
  eps_aa = s.autoattack_epsilon
  aa_right = []
  for a, b in tqdm(_batches(len(x), 250), desc='AutoAttack', leave=False):
    adv, _ = autoattack(
      logits_fn, keys.batch_keys(ck.autoattack, a).attacks, x[a:b], y[a:b], epsilon=eps_aa, version='standard'
    )
    aa_right.append(np.asarray(predict(adv)) == y[a:b])
  i_aa = list(s.epsilons).index(eps_aa) if eps_aa in s.epsilons else None
  return {
    'method': 'intervals',
    'num_test': len(x),
    'epsilons': list(s.epsilons),
    'verified': ver,
    'empirical': {'attack': 'PGD-20, step ε/4, uniform random start', 'accuracy': emp},
    'autoattack': {
      'epsilon': eps_aa,
      'accuracy': float(np.concatenate(aa_right).mean()),
      'verified_at_same_epsilon': None if i_aa is None else ver[i_aa],
    },
    'seconds': t_iv,
  }
