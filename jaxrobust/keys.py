"""The key schedule: how one seed becomes every random number of a run, in one place.

One `seed` gives three run keys (`run_keys`); the training key is folded with the step index
(`step_keys`), so a resumed run draws exactly what an uninterrupted one draws. Below that, every
`jax.random.fold_in` of the library uses a named tag from this module. The values are part of
the reproducibility contract: changing one changes the bits of every run that uses it.

This module imports nothing of the library, so the attack library can use it and stay a leaf.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

# -------------------------------------------------------------------- training (per step)
# Folded into a device's model key inside an objective.
TAG_ATTACK_LABELS = 1  # the pass whose predictions label the attack (PNI: train mode; TRADES: eval mode)
TAG_CLEAN_PASS = 2  # the second train-mode pass, on clean inputs (PNI's 0.5/0.5 loss)
# Folded into the step's objective key.
TAG_MIXED_BRANCH = 3  # mixed training's draw of clean or one attack
TAG_FREE_REPLAY = 4  # Free-AT: folded with the replay index into the model key
# Folded into each example's key.
TAG_GAUSSIAN_AUGMENT = 7  # the noise of Gaussian augmentation
# Folded into the training key instead of a step index (larger than any step count).
TAG_FINAL_EVAL = 10**9  # the clean test pass at the end of training
TAG_GUARD = 10**9 + 1  # the catastrophic-overfitting guard's attack (folded with the epoch)

# -------------------------------------------------------------------------------- attacks
# Per-example keys: each example's own key is split by these two tags.
TAG_EXAMPLE_NOISE = 0  # random start and noise
TAG_EXAMPLE_MODEL = 1  # the model's randomness (taken from the first example's key)
TAG_RESTART_SELECTION = 10**6  # PGD: the pass that scores restarts (beyond any step index)
TAG_SQUARE_RECHECK = 10**6 + 1  # Square with far_draws: the draws that re-measure each point's best
#   margin at a stage boundary (beyond any query index; folded with the stage's first query)

# AutoAttack (attacks/_autoattack.py): folded into its key.
TAG_AA_EXAMPLES = 0  # the per-example keys of its attacks
TAG_AA_CLEAN = 1  # the clean pass that decides which points are attacked
TAG_AA_OUTCOMES = 2  # the passes that decide which points attack j fooled (then pair_key(·, j, chunk start))
TAG_AA_SANITY = 10**6  # its sanity checks, which fold in:
TAG_AA_CHECK_FIRST = 0  #   the first of two calls on the same input (randomness check)
TAG_AA_CHECK_SECOND = 1  #   the second
TAG_AA_CHECK_GRADIENT = 2  #   the zero-gradient check

# Randomized smoothing (certify/smoothing.py): folded into each example's key; draw d of those
# draws is then fold_in(·, d).
TAG_SMOOTH_SELECT = 0  # CERTIFY's n0 draws that choose the class
TAG_SMOOTH_ESTIMATE = 1  # CERTIFY's n fresh draws that bound its probability
TAG_SMOOTH_PREDICT = 2  # PREDICT's draws
TAG_SMOOTH_MODEL = 10**6  # the base classifier's own randomness, folded with the pass index

# ----------------------------------------------------------------------------- models
TAG_INIT_REDRAW = 10**6  # init='torch': the redraw of a kernel and bias (models/init.py)

# ----------------------------------------------------------------------------- evaluation
# An evaluation's keys are split from its root (`EvalKeys`); below a part's key, each batch's keys
# come from `batch_keys` (folded with the batch's first index, then split), an attack's from
# `attack_keys`, a draw's from `draw_key`: no tag shares a namespace with an index.
# Its version: caches that store results under a key's digest store it too, since the same root
# draws other numbers under another schedule (1: tags and index arithmetic; 2: splits; 3: no
# arithmetic inside the attacks either, one index folded per level). tests/test_keys.py holds each
# schedule's fingerprint: a change of these keys without a new number fails there.
EVAL_SCHEDULE = 3


class RunKeys(NamedTuple):
  """The three keys of a run: parameter init, data order, and training (folded per step)."""

  init: jax.Array
  data: jax.Array
  train: jax.Array


class StepKeys(NamedTuple):
  """The keys of one training step, all from fold_in(train key, step).

  Attributes:
    augment: per-example augmentation (folded with the global example index).
    objective: the objective's own draws, the same on every device (mixed branch, model noise).
    examples: per-example attack starts (folded with the global example index).
  """

  augment: jax.Array
  objective: jax.Array
  examples: jax.Array


def run_keys(seed: int) -> RunKeys:
  """One seed -> the init, data-order and training keys."""
  return RunKeys(*jax.random.split(jax.random.key(seed), 3))


def step_keys(train_key: jax.Array, step) -> StepKeys:
  """The keys of step `step`; the host and the compiled step both call this (one schedule)."""
  return StepKeys(*jax.random.split(jax.random.fold_in(train_key, step), 3))


def evaluation_key(seed: int) -> jax.Array:
  """The root key of every evaluation of a run (Table 1, the converged study, certification, the
  command line): key(seed + 1), so that it never equals the run's own key(seed), whose split gives
  the training keys. The one way to make an evaluation's root; `eval_keys` splits it."""
  return jax.random.key(seed + 1)


class EvalKeys(NamedTuple):
  """The keys of one evaluation, one per part, split from its root (`eval_keys`).

  Attributes:
    finite: the clean passes that check the model's logits are finite before anything else.
    suite: the attack suite (per batch: `batch_keys`).
    draws: the repeated clean draws of a stochastic model.
    autoattack: AutoAttack, beside a suite or as the suite itself.
    grid: the accuracy-against-ε grid.
    figures: the attack drawn for the example and confidence figures.
    certify: certification (randomized smoothing's draws, SmoothAdv).
    study: a study's own use (the EOT-PGD convergence study, the EOT choice, the temperature sweep).
    added: candidates added to a finished suite's (per batch: `batch_keys`), whose worst case is
      chosen again over both (experiments/added_attacks). Split last: with jax's partitionable
      threefry `split(root, n)[i]` does not depend on n, so the parts before it keep their keys.
  """

  finite: jax.Array
  suite: jax.Array
  draws: jax.Array
  autoattack: jax.Array
  grid: jax.Array
  figures: jax.Array
  certify: jax.Array
  study: jax.Array
  added: jax.Array


def eval_keys(root: jax.Array) -> EvalKeys:
  """Every part's key of the evaluation whose root is `root` (`evaluation_key(seed)` for a run)."""
  return EvalKeys(*jax.random.split(root, len(EvalKeys._fields)))


class BatchKeys(NamedTuple):
  """The keys of one batch of an evaluation part.

  Attributes:
    clean: the clean pass (and its repeated draws: `draw_key`).
    attacks: the root of the batch's attacks (`attack_keys`).
    estimator: the worst-case estimator's selection and measurement draws.
  """

  clean: jax.Array
  attacks: jax.Array
  estimator: jax.Array


def batch_keys(part_key: jax.Array, first_index) -> BatchKeys:
  """The keys of the batch whose first example is `first_index` (a host integer), under a part's key."""
  return BatchKeys(*jax.random.split(jax.random.fold_in(part_key, int(first_index)), 3))


def attack_keys(batch: BatchKeys, attack_index) -> tuple[jax.Array, jax.Array]:
  """Attack j of a batch: (its own key, whose children are its per-example keys; the key of the
  passes that classify its points)."""
  k_attack, k_predict = jax.random.split(jax.random.fold_in(batch.attacks, int(attack_index)))
  return k_attack, k_predict


class CertifyKeys(NamedTuple):
  """The keys of a certification run (experiments/certify/), split from an evaluation's
  `certify` key.

  Attributes:
    certify: CERTIFY's draws (each image's own key: `example_keys`).
    large: CERTIFY with more draws on the first images.
    attack: the attacks beside the certificate (SmoothAdv; PGD for intervals), by batch.
    predict: the passes that classify the attacked points.
    autoattack: AutoAttack beside interval bounds, by batch.
  """

  certify: jax.Array
  large: jax.Array
  attack: jax.Array
  predict: jax.Array
  autoattack: jax.Array


def certify_keys(key: jax.Array) -> CertifyKeys:
  """The parts of a certification run from `EvalKeys.certify`."""
  return CertifyKeys(*jax.random.split(key, len(CertifyKeys._fields)))


def example_keys(key: jax.Array, n: int) -> jax.Array:
  """One key per example 0..n-1 under `key`: fold_in(key, i), as the attacks' own per-example keys."""
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jax.numpy.arange(n))


def draw_key(key: jax.Array, draw) -> jax.Array:
  """Draw d of repeated forward passes on one key (a clean pass's or an attack's predictions)."""
  return jax.random.fold_in(key, draw)


# ----------------------------------------------------- keys by index: every caller asks by name
def pair_key(key: jax.Array, major, minor) -> jax.Array:
  """The key of the pair (major, minor) of non-negative host indices: fold_in(fold_in(key, major),
  minor), one level per index, so no two pairs meet however large either index grows."""
  major, minor = int(major), int(minor)
  if major < 0 or minor < 0:
    raise ValueError(f'pair_key: indices must be >= 0, got ({major}, {minor})')
  return jax.random.fold_in(jax.random.fold_in(key, major), minor)


def step_model_key(model_key: jax.Array, step) -> jax.Array:
  """The model's randomness at an attack's step `step` (traced or not), fold_in(model_key, step)."""
  return jax.random.fold_in(model_key, step)


def step_model_keys(model_key: jax.Array, step) -> tuple[jax.Array, jax.Array]:
  """Two model draws per step (FAB: the gradient, then the check of the new point): the split of
  fold_in(model_key, step)."""
  first, second = jax.random.split(jax.random.fold_in(model_key, step))
  return first, second


def search_step_model_key(model_key: jax.Array, search, step) -> jax.Array:
  """CW-L2's model draw at optimisation step `step` of binary-search round `search` (either traced):
  fold_in(fold_in(model_key, search), step), one key per (round, step)."""
  return jax.random.fold_in(jax.random.fold_in(model_key, search), step)
