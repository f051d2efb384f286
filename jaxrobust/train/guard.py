"""The catastrophic-overfitting guard of fast adversarial training (FGSM-RS).

FGSM training can collapse within an epoch: accuracy against FGSM soars while accuracy against
PGD falls to zero. Wong, Rice & Kolter (2020) check PGD accuracy on held-out training data and
keep the best model. Here, at the end of every epoch, `OverfitGuard.check` measures robust
accuracy under the guard's attack on the examples `build_experiment` held out of training; the
best epoch's state is saved in `<workdir>/guard_best/` (so a resumed run knows it), training
stops once accuracy falls `drop` below the best, and the loop makes the best state the run's
result.

References:
  Wong, Rice & Kolter 2020, "Fast is better than free: revisiting adversarial training", ICLR.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from jaxrobust import keys
from jaxrobust.evaluation.accuracy import robust_accuracy
from jaxrobust.models import make_logits_fn
from jaxrobust.train.checkpoint import Checkpointer, NoCheckpointError
from jaxrobust.train.experiment import Experiment

GUARD_DIR = 'guard_best'


class OverfitGuard:
  """Tracks the best epoch's robust accuracy on the held-out examples, and its state."""

  def __init__(self, exp: Experiment, workdir: str, template: dict):
    if exp.guard is None:
      raise ValueError('OverfitGuard: the experiment has no guard (config.train.guard is off)')
    self._exp = exp
    self.settings = exp.guard  # the held-out examples, the attack and the allowed drop
    self.drop = exp.guard.drop
    self._ckpt = Checkpointer(os.path.join(workdir, GUARD_DIR), 1)
    self.best_accuracy, self.best_epoch, self.best_tree, self.stopped_at = -1.0, None, None, None
    try:
      tree, meta, _ = self._ckpt.restore_latest_intact(template)
      self.best_tree, self.best_accuracy, self.best_epoch = tree, meta['robust_accuracy'], meta['epoch']
      self.stopped_at = meta.get('stopped_at')
    except NoCheckpointError:
      pass

  def accuracy(self, epoch: int, variables) -> float:
    """Robust accuracy of `variables` under the guard's attack on the held-out examples."""
    g = self.settings
    res = robust_accuracy(
      make_logits_fn(self._exp.model, variables),
      g.images,
      g.labels,
      {'guard': g.attack},
      key=jax.random.fold_in(jax.random.fold_in(self._exp.keys.train, keys.TAG_GUARD), epoch),
      batch_size=self._exp.loop.eval_batch_size,
    )
    return res.accuracy['guard']

  def check(self, epoch: int, step: int, tree: dict, variables) -> tuple[float, bool]:
    """(accuracy, stop): records a new best (and saves it), or says to stop after a collapse."""
    acc = self.accuracy(epoch, variables)
    if acc > self.best_accuracy:
      self.best_accuracy, self.best_epoch, self.best_tree = acc, epoch, tree
      self._save(step)
      return acc, False
    if acc < self.best_accuracy - self.drop:
      self.stopped_at = step
      self._save(step)
      return acc, True
    return acc, False

  def _save(self, step: int) -> None:
    meta: dict[str, Any] = {'epoch': self.best_epoch, 'robust_accuracy': self.best_accuracy}
    if self.stopped_at is not None:
      meta['stopped_at'] = self.stopped_at
    self._ckpt.save(step, self.best_tree, meta)

  def close(self):
    self._ckpt.close()
