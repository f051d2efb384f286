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
TAG_EVAL_CLEAN = 0  # robust_accuracy: the clean pass of a batch (attack j uses 2·j and 2·j + 1)
TAG_CONVERGENCE = 1  # experiments/converged.py: the key of the EOT-PGD convergence study
TAG_CONVERGENCE_PREDICT = 7  # eot_convergence: the draws that classify its adversarial points
TAG_EVAL_PREDICT = 1  # the forward pass that classifies attacked inputs (ε grid, figures)
TAG_EVAL_DRAWS = 1  # the repeated clean draws of a stochastic model
TAG_EVAL_GRID = 2  # the accuracy-against-ε grid
TAG_EVAL_AUTOATTACK = 4  # AutoAttack beside a suite (Table 1's column)
TAG_FIGURES = 9  # the attack drawn for the example and confidence figures
TAG_EVAL_CERTIFY = 11  # experiments/certify.py: folded into key(seed); its draws fold in:
TAG_EVAL_CERTIFY_LARGE = 1  #   CERTIFY with n_large draws on the first images
TAG_EVAL_SMOOTH_ATTACK = 2  #   SmoothAdv's keys (folded with the batch's first index)
TAG_EVAL_SMOOTH_PREDICT = 3  #   the draws that classify attacked points
TAG_EVAL_EOT_CHOICE = 12  # experiments/eot_pgd_choice.py: folded into key(seed), then the
#   estimator's TAG_EVAL_SELECT (the attacks) and TAG_EVAL_MEASURE (the draws that classify)
# The worst-case estimator of a stochastic model (evaluation/estimator.py): the draws that choose
# each point's worst candidate, and the fresh draws that measure it, never the same keys. Beyond
# the adaptive suite's per-attack tags (2·j and 2·j + 1 for attack j), so no attack shares them.
TAG_EVAL_SELECT = 10**6 + 1
TAG_EVAL_MEASURE = 10**6 + 2


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
  """The key of a run's evaluation (Table 1, the converged study): key(seed + 1), so that it never
  equals the run's own key(seed), whose split gives the training keys."""
  return jax.random.key(seed + 1)


# ----------------------------------------------------- keys by index: every caller asks by name
# Beyond any index pair below (fold_in's data is 32-bit): the root of the pairs that the
# historical `stride·major + minor` schedule cannot hold without colliding.
TAG_PAIR_OVERFLOW = 2**31 - 1


def pair_key(key: jax.Array, major, minor, *, stride: int) -> jax.Array:
  """The key of the pair (major, minor) of non-negative host indices, distinct for every pair.

  For 0 ≤ minor < stride it is fold_in(key, stride·major + minor), the schedule every committed
  result was drawn with (kept, so they reproduce); a larger minor (which that schedule would send
  onto another pair's key: stride·1 + stride = stride·2 + 0) gets a key of its own below
  TAG_PAIR_OVERFLOW.
  """
  major, minor = int(major), int(minor)
  if major < 0 or minor < 0:
    raise ValueError(f'pair_key: indices must be >= 0, got ({major}, {minor})')
  if minor < stride:
    return jax.random.fold_in(key, stride * major + minor)
  return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, TAG_PAIR_OVERFLOW), major), minor)


def suite_attack_keys(batch_key: jax.Array, attack_index) -> tuple[jax.Array, jax.Array]:
  """Attack j of a suite on one batch: (its own key, the key of the passes that classify its
  points), fold_in(batch_key, 2j) and fold_in(batch_key, 2j + 1)."""
  return (
    jax.random.fold_in(batch_key, 2 * attack_index),
    jax.random.fold_in(batch_key, 2 * attack_index + 1),
  )


def step_model_key(model_key: jax.Array, step) -> jax.Array:
  """The model's randomness at an attack's step `step` (traced or not), fold_in(model_key, step)."""
  return jax.random.fold_in(model_key, step)


def step_model_keys(model_key: jax.Array, step) -> tuple[jax.Array, jax.Array]:
  """Two model draws per step (FAB: the gradient, then the check of the new point):
  fold_in(model_key, 2·step) and fold_in(model_key, 2·step + 1)."""
  return jax.random.fold_in(model_key, 2 * step), jax.random.fold_in(model_key, 2 * step + 1)


def search_step_model_key(model_key: jax.Array, search, step, steps_per_search: int) -> jax.Array:
  """CW-L2's model draw at optimisation step `step` (< steps_per_search) of binary-search round
  `search`: fold_in(model_key, search·steps_per_search + step), one key per (round, step)."""
  return jax.random.fold_in(model_key, search * steps_per_search + step)
