"""AutoAttack: an ensemble of complementary attacks, each run on the points that the previous
ones left standing, with the reference's sanity checks.

Versions:
  'standard'  APGD-CE → APGD-T → FAB-T → Square (100 iterations, 1 restart, 9 target classes,
              5000 queries), for deterministic models;
  'rand'      APGD-CE and APGD-DLR with EOT over 20 draws, 100 iterations, for randomised ones;
  'custom'    any list of attacks: registry specs ({'name': ..., ...}) or callables.

Every example's randomness comes from fold_in(key of the attack, its index), so a point's result
does not depend on which other points are still being attacked.

References:
  Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
  parameter-free attacks", ICML, arXiv:2003.01690 (fra31/auto-attack `autoattack.py`, `checks.py`)
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrobust.attacks import _attack_keys
from jaxrobust.attacks import _checks
from jaxrobust.attacks import _devices
from jaxrobust.attacks import _loop
from jaxrobust.attacks._apgd import apgd, apgd_targeted
from jaxrobust.attacks._fab import fab_targeted
from jaxrobust.attacks._square import square
from jaxrobust import keys

VERSIONS = ('standard', 'rand', 'custom')
# Square lowering the accuracy left by the white-box attacks by more than this flags masking.
SQUARE_MARGIN = 0.002


def standard_attacks(
  norm: str,
  epsilon,
  num_classes: int,
  *,
  num_steps: int = 100,
  num_queries: int = 5000,
  microbatch: int | None = None,
) -> dict[str, Callable]:
  """AutoAttack's standard ensemble, with the reference's settings (100 iterations, 9 targets,
  5000 queries); `microbatch` goes to the gradient attacks."""
  targets = min(9, num_classes - 1)
  common = dict(epsilon=epsilon, norm=norm)
  grads = dict(common, num_steps=num_steps, microbatch=microbatch)
  return {
    'apgd_ce': lambda f, k, x, y: apgd(f, k, x, y, loss='ce', **grads),
    'apgd_t': lambda f, k, x, y: apgd_targeted(f, k, x, y, num_targets=targets, **grads),
    'fab_t': lambda f, k, x, y: fab_targeted(f, k, x, y, num_targets=targets, **grads),
    'square': lambda f, k, x, y: square(f, k, x, y, num_queries=num_queries, p_init=0.8, **common),
  }


def rand_attacks(
  norm: str, epsilon, *, eot_samples: int = 20, num_steps: int = 100, microbatch: int | None = None
) -> dict[str, Callable]:
  """AutoAttack's version for randomised defenses: APGD-CE and APGD-DLR with EOT. As in the
  reference, each returns x for the points it did not fool, so AutoAttack's one-draw re-vote
  judges those points as themselves, not at APGD's highest-loss point."""
  common = dict(
    epsilon=epsilon,
    norm=norm,
    num_steps=num_steps,
    eot_samples=eot_samples,
    microbatch=microbatch,
    return_x_unless_fooled=True,
  )
  return {
    'apgd_ce': lambda f, k, x, y: apgd(f, k, x, y, loss='ce', **common),
    'apgd_dlr': lambda f, k, x, y: apgd(f, k, x, y, loss='dlr', **common),
  }


def _predict(f, x, key, batch_size):
  out = [
    np.asarray(f(x[i : i + batch_size], jax.random.fold_in(key, i))) for i in range(0, len(x), batch_size)
  ]
  return np.concatenate(out)


def _fooled(f, adv, y, key):
  """Per point (on the host): the attack's point is misclassified, or its logits are not finite.
  The model runs as it always has here (called, not compiled into a new program), so the
  outcomes are those of earlier runs bit for bit; only the per-point answer leaves the devices."""
  logits = f(adv, key)
  return np.asarray((jnp.argmax(logits, -1) != y) | ~jnp.all(jnp.isfinite(logits), -1))


def sanity_checks(logits_fn, x, y, key, *, version: str, batch_size: int = 256) -> tuple[dict, list[str]]:
  """The reference's checks on a batch: randomness, probability outputs, zero gradients.

  Returns:
    (flags, warnings).
  """
  xb, yb = x[:batch_size], y[:batch_size]
  a = np.asarray(logits_fn(xb, jax.random.fold_in(key, keys.TAG_AA_CHECK_FIRST)))
  b = np.asarray(logits_fn(xb, jax.random.fold_in(key, keys.TAG_AA_CHECK_SECOND)))
  flags: dict[str, Any] = {'randomized': not np.allclose(a, b, atol=1e-7)}
  messages = []
  if flags['randomized'] and version == 'standard':
    messages.append("the model is randomized (two calls on the same input differ): use version='rand'")
  rows = a.sum(-1)
  flags['probabilities'] = bool(np.all(a >= 0) and np.all(a <= 1) and np.allclose(rows, 1.0, atol=1e-5))
  if flags['probabilities']:
    messages.append(
      'the outputs look like probabilities (rows sum to 1): pass logits, or the attacks are weakened'
    )
  _, _, g = _loop.loss_and_grad(
    logits_fn,
    lambda z, t: jnp.sum(jax.nn.log_softmax(z) * -jax.nn.one_hot(t, z.shape[-1]), -1),
    xb,
    yb,
    jax.random.fold_in(key, keys.TAG_AA_CHECK_GRADIENT),
  )
  zero = np.all(np.asarray(g).reshape(len(xb), -1) == 0, axis=1)
  flags['zero_gradients'] = float(zero.mean())
  if zero.any():
    messages.append(
      f'{zero.mean():.1%} of the examples have an exactly zero gradient: the model may mask '
      f'gradients; trust the gradient-free attack (Square) there'
    )
  return flags, messages


def autoattack(
  logits_fn,
  key,
  x,
  y,
  *,
  norm: str = 'linf',
  epsilon,
  version: str = 'standard',
  attacks: Sequence[Any] | Mapping[str, Any] | None = None,
  batch_size: int = 500,
  eot_samples: int = 20,
  num_steps: int = 100,
  num_queries: int = 5000,
  microbatch: int | None = None,
  verbose: bool = False,
  devices=None,
) -> tuple[jax.Array, dict]:
  """AutoAttack on a batch (any size: it is processed in chunks of `batch_size`).

  Args:
    logits_fn: `logits_fn(x, key) -> logits` (logits, not probabilities).
    key: PRNG key.
    x, y: inputs in [0, 1] and labels.
    norm: 'linf' or 'l2'.
    epsilon: the budget.
    version: 'standard', 'rand' or 'custom'.
    attacks: for 'custom', a mapping name -> attack (a registry spec dict or a callable
      `attack(logits_fn, key, x, y)`), or a sequence of registry names / specs.
    batch_size: examples per attack call.
    eot_samples: EOT draws of the 'rand' version (20).
    num_steps: iterations of APGD, APGD-T and FAB-T (100; fewer only for quick looks).
    num_queries: Square's query budget (5000).
    microbatch: the gradient attacks' chunk size (None: their default,
      `attacks.resolve_microbatch`; 0: the whole batch). An LWTA model's EOT gradients are
      faster in chunks of 6 on the CPU, a PNI model's slower (`benchmarks/eot.py --chunks`).
    verbose: print the report's lines as they come.
    devices: the devices each attack call is split over (`shard_map` over a 'data' mesh); None:
      all devices for a deterministic model, one for a randomised one. Every point gets the
      result it gets on one device (its key is its own, from its index), so the report does
      not depend on the device count.

  Returns:
    (x_adv, report): x_adv holds each broken point's adversarial example and x elsewhere. The
    report has 'clean' and 'robust_accuracy' (after each attack, in order), 'broken' (points
    each attack broke), 'seconds' per attack, the sanity-check 'flags' and 'warnings', and 'n'.

  Raises:
    ValueError: for an unknown version, norm or custom attack, and bad inputs.
  """
  from jaxrobust.attacks._registry import build_attack, settable  # the registry imports this module

  if version not in VERSIONS:
    raise ValueError(f'autoattack: unknown version {version!r}; use one of {VERSIONS}')
  _checks.check_norm('autoattack', norm)
  if (version == 'custom') != (attacks is not None):
    raise ValueError("autoattack: pass `attacks` exactly when version='custom'")
  for arg, v in (
    ('batch_size', batch_size),
    ('eot_samples', eot_samples),
    ('num_steps', num_steps),
    ('num_queries', num_queries),
  ):
    _checks.check_count('autoattack', arg, v)
  if microbatch is not None:
    _checks.check_count('autoattack', 'microbatch', microbatch, minimum=0)
  x_in = x  # its sharding is the result's
  x, y = jnp.asarray(x), jnp.asarray(y)
  # One check of the whole batch (a chunk-sized check would refuse per-example keys by their count).
  _checks.check_inputs(
    logits_fn, x, y, name='autoattack', key=key, values={'epsilon': epsilon}, min_classes=2
  )
  if _attack_keys.is_key_batch(_attack_keys.as_typed(key), x.shape[0]):
    raise ValueError('autoattack: key must be one PRNG key (each example gets fold_in(key, index))')
  f = _loop.as_pytree_fn(logits_fn)
  n = x.shape[0]
  num_classes = _checks.num_classes_of(f, x[:1])
  if version == 'standard' and num_classes < 4:
    # APGD-T's targeted DLR loss needs 4 classes: refuse now, not after APGD-CE has run.
    raise ValueError(
      f'autoattack: the standard version needs at least 4 classes (APGD-T), the model has '
      f"{num_classes}; use version='custom' with attacks=['apgd_ce', 'square'] or similar"
    )
  suite: dict[str, Any]
  if version == 'standard':
    suite = standard_attacks(
      norm, epsilon, num_classes, num_steps=num_steps, num_queries=num_queries, microbatch=microbatch
    )
  elif version == 'rand':
    suite = rand_attacks(norm, epsilon, eot_samples=eot_samples, num_steps=num_steps, microbatch=microbatch)
  else:
    assert attacks is not None  # checked above: 'custom' comes with its attacks
    items = (
      attacks.items()
      if isinstance(attacks, Mapping)
      else [(a if isinstance(a, str) else a['name'], a) for a in attacks]
    )
    suite = {}
    for name, a in items:
      if callable(a):
        suite[name] = a
        continue
      spec: dict[str, Any] = dict({'name': a} if isinstance(a, str) else a)
      takes = settable(spec['name'])
      defaults: dict[str, Any] = {'epsilon': epsilon, 'norm': norm}
      spec.update({k: v for k, v in defaults.items() if k in takes and k not in spec})
      suite[name] = build_attack(spec)
  key = _attack_keys.as_typed(key)
  flags, warnings_ = sanity_checks(
    f, x, y, jax.random.fold_in(key, keys.TAG_AA_SANITY), version=version, batch_size=min(batch_size, n)
  )
  if num_classes - 1 < 9 and version == 'standard':
    warnings_.append(f'the model has {num_classes} classes: APGD-T and FAB-T use {num_classes - 1} targets')
  if devices is None:
    devices = jax.devices()[:1] if flags['randomized'] else jax.devices()
  ex_keys = _attack_keys.per_example_keys(jax.random.fold_in(key, keys.TAG_AA_EXAMPLES), n)
  pred = _predict(f, x, jax.random.fold_in(key, keys.TAG_AA_CLEAN), batch_size)
  k_outcomes = jax.random.fold_in(key, keys.TAG_AA_OUTCOMES)
  finite = np.all(np.isfinite(pred), -1)
  if not finite.all():
    # A broken model is not a robust one, nor one with 0 % clean accuracy to report.
    raise FloatingPointError(
      f'autoattack: logits_fn returned non-finite logits on {int((~finite).sum())} of {n} clean inputs'
    )
  robust = pred.argmax(-1) == np.asarray(y)
  report = {
    'version': version,
    'norm': norm,
    'epsilon': float(np.max(np.asarray(epsilon))),
    'n': n,
    'clean': float(robust.mean()),
    'robust_accuracy': {},
    'broken': {},
    'seconds': {},
    'flags': flags,
    'warnings': warnings_,
  }
  # The batch stays on its devices; only per-point outcomes (which points each attack fooled)
  # come to the host, which picks the points the next attack runs on.
  x_adv = x
  for j, (name, attack) in enumerate(suite.items(), start=1):
    t0 = time.perf_counter()
    idx = np.flatnonzero(robust)
    broken = 0
    for s in range(0, idx.size, batch_size):
      chunk = idx[s : s + batch_size]
      keys_j = _attack_keys.fold_keys(ex_keys[chunk], j)
      adv = _devices.attack_over_devices(attack, f, keys_j, x[chunk], y[chunk], devices)
      fooled = _fooled(f, adv, y[chunk], keys.pair_key(k_outcomes, j, s))
      hit = np.flatnonzero(fooled)
      x_adv = x_adv.at[jnp.asarray(chunk[hit])].set(adv[jnp.asarray(hit)])
      robust[chunk[fooled]] = False
      broken += int(fooled.sum())
    report['robust_accuracy'][name] = float(robust.mean())
    report['broken'][name] = broken
    report['seconds'][name] = time.perf_counter() - t0
    if verbose:
      print(f'{name}: robust accuracy {robust.mean():.2%} ({broken} broken, {report["seconds"][name]:.1f} s)')
  white_box = [v for k, v in report['robust_accuracy'].items() if k != 'square']
  if 'square' in report['robust_accuracy'] and white_box:
    masked = report['robust_accuracy']['square'] < min(white_box) - SQUARE_MARGIN
    flags['gradient_masking'] = bool(masked)
    if masked:
      warnings_.append(
        'Square, which uses no gradient, broke points that every white-box attack left '
        'standing: the gradients are likely masked'
      )
  report['robust'] = robust
  if verbose:
    for w in warnings_:
      print('warning:', w)
  return _devices.keep_sharding(x_adv, x_in), report
