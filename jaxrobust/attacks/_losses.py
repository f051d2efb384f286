"""Per-example attack losses, written to be maximised.

Untargeted losses push the true class y down; targeted ones (y = target) pull the target up.

References:
  Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural Networks", arXiv:1608.04644
  Croce & Hein 2020, "Reliable evaluation of adversarial robustness ...", arXiv:2003.01690 (DLR)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits, y, targeted: bool = False):
  """CE(logits, y); negated for a target (so that maximising it reaches the target)."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
  return -ce if targeted else ce


def _other_max(logits, y):
  onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
  return jnp.max(jnp.where(onehot, -jnp.inf, logits), -1), jnp.take_along_axis(logits, y[:, None], -1)[:, 0]


def margin(logits, y, targeted: bool = False, kappa: float = 0.0):
  """CW margin: −max(Z_y − max_{i≠y} Z_i + κ, 0), or −max(max_{i≠t} Z_i − Z_t + κ, 0) for target t.

  The true class is masked with −∞ (not 0, torchattacks' bug that breaks on negative logits).
  """
  other, z_y = _other_max(logits, y)
  gap = (other - z_y) if targeted else (z_y - other)
  return -jnp.maximum(gap + kappa, 0.0)


def dlr(logits, y, targeted: bool = False):
  """Difference of Logits Ratio, scale-invariant in the logits.

  Untargeted: −(z_y − max_{i≠y} z_i)/(z_π1 − z_π3 + 1e−12), π the logits sorted descending.
  Targeted (y = target t): −(max_{i≠t} z_i − z_t)/(z_π1 − (z_π3 + z_π4)/2 + 1e−12); AutoAttack
  uses the true class in the numerator, which this contract does not pass. Needs ≥ 3 classes
  (≥ 4 targeted).
  """
  srt = jnp.sort(logits, -1)
  other, z_y = _other_max(logits, y)
  if targeted:
    return -(other - z_y) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)
  return -(z_y - other) / (srt[:, -1] - srt[:, -3] + 1e-12)


def dlr_targeted_pair(logits, labels):
  """AutoAttack's targeted DLR, with the true class y and the target t as labels[:, 0], [:, 1]:
  −(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2 + 1e−12), to be maximised (APGD-T)."""
  y, t = labels[:, 0], labels[:, 1]
  srt = jnp.sort(logits, -1)
  z_y = jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
  z_t = jnp.take_along_axis(logits, t[:, None], -1)[:, 0]
  return -(z_y - z_t) / (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12)


LOSSES = ('ce', 'margin', 'dlr')


def min_classes(loss, targeted: bool = False) -> int:
  """The fewest classes a loss can work with: DLR's denominator needs the third (targeted:
  fourth) largest logit, and with fewer classes its gradient vanishes; CE and the margin need two."""
  if loss == 'dlr':
    return 4 if targeted else 3
  return 1 if callable(loss) else 2


def get_loss(name, *, targeted: bool = False, kappa: float = 0.0):
  """The per-example loss `(logits, y) -> (B,)` by name ('ce', 'margin', 'dlr') or a callable."""
  if callable(name):
    return name
  if name == 'ce':
    return functools.partial(cross_entropy, targeted=targeted)
  if name == 'margin':
    return functools.partial(margin, targeted=targeted, kappa=kappa)
  if name == 'dlr':
    return functools.partial(dlr, targeted=targeted)
  raise ValueError(f'unknown attack loss {name!r}; use one of {LOSSES} or a callable')
