"""Training objectives: small values holding a pure loss function.

An `Objective` holds `loss_fn(params, batch_stats, x, y, key, *, example_keys, axis_name, **branch)
-> (loss, (new_batch_stats, metrics))`, its number of branches, and, for the mixed objective,
`choose_branch(objective_key)`: the draw that both the compiled step and the host (which may
compile one step per branch) make from the same key. x is this device's float batch in [0,1];
`key` is the step's objective key, the same on every device; `example_keys` hold one key per
example, so attack starts do not depend on how the batch is sharded. Attacks inside the step see
the model in eval mode (BatchNorm running statistics; LWTA at its eval temperature) with its
parameters held fixed.

References:
  Madry et al. 2018 (PGD adversarial training), arXiv:1706.06083
  Zhang et al. 2019 (TRADES), arXiv:1901.08573
  He et al. 2019 (PNI), arXiv:1811.09310
  Panousis et al. 2019 (the ELBO: CE + ΣKL/N), ICML; 2022 (LWTA + PGD-AT), arXiv:2112.02671
  Szegedy et al. 2016 (label smoothing), arXiv:1512.00567
  Wong, Rice & Kolter 2020 (FGSM with a random start, "Fast is better than free"), arXiv:2001.03994
  Shafahi et al. 2019 (free adversarial training), arXiv:1904.12843
  Cohen et al. 2019 (Gaussian augmentation for randomized smoothing), arXiv:1902.02918
  Gowal et al. 2018 (certified training with interval bounds), arXiv:1810.12715
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxrobust import keys
from jaxrobust.attacks import build_attack
from jaxrobust.certify import interval_bounds, verified, worst_case_logits
from jaxrobust.models import KL_COLLECTION, collect_kl, forward, model_variables

MIXED_ATTACKS = ('pgd', 'fgsm', 'cw', 'noise')


class Objective(NamedTuple):
  """A training objective.

  Attributes:
    loss_fn: `(params, batch_stats, x, y, key, *, example_keys, axis_name[, branch][, delta])
      -> (loss, (batch_stats, metrics))`.
    num_branches: 1, or the mixed objective's clean + attack branches.
    choose_branch: `objective_key -> int array`, the branch a step takes (None without branches).
    replays: optimizer updates per batch (Free-AT's m; 1 otherwise).
    update_delta: `(delta, grad of the loss in delta) -> delta`. When set, `loss_fn` takes the
      input perturbation `delta` and the step differentiates the loss in the parameters and in
      delta in one backward pass, replaying the batch `replays` times (free adversarial training).
    takes_step: `loss_fn` takes the optimizer step `step` (a schedule inside the loss).
  """

  loss_fn: Callable[..., tuple[jax.Array, tuple[Any, dict]]]
  num_branches: int = 1
  choose_branch: Callable[[jax.Array], jax.Array] | None = None
  replays: int = 1
  update_delta: Callable[[jax.Array, jax.Array], jax.Array] | None = None
  takes_step: bool = False


# ------------------------------------------------------------------------------- helpers
def device_key(key, axis_name: str | None):
  """A key of this device's own (model noise differs across shards), or `key` on one device."""
  return key if axis_name is None else jax.random.fold_in(key, lax.axis_index(axis_name))


def softmax_cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
  """Mean softmax cross-entropy against (optionally smoothed) one-hot labels."""
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def accuracy(logits, labels):
  return jnp.mean(jnp.argmax(logits, -1) == labels)


def elbo_loss(ce, kl_sum, num_train: int, beta: float = 1.0):
  """Negative ELBO per example: CE + β·ΣKL/N_train (β = 0: cross-entropy alone)."""
  return ce + beta * kl_sum / num_train


def eval_logits_fn(apply_fn, params, batch_stats):
  """The model in eval mode with parameters held fixed: what attacks inside the step see."""
  variables = model_variables(lax.stop_gradient(params), batch_stats)
  return lambda x, key: forward(apply_fn, variables, x, key)


def train_forward(apply_fn, params, batch_stats, x, key, *, with_kl: bool = False):
  """Train-mode forward: (logits, updated batch statistics, ΣKL of the stochastic layers)."""
  mutable = ['batch_stats', KL_COLLECTION] if with_kl else (['batch_stats'] if batch_stats else False)
  out = forward(apply_fn, model_variables(params, batch_stats), x, key, train=True, mutable=mutable)
  if not mutable:
    return out, batch_stats, jnp.zeros(())
  logits, state = out
  return logits, state.get('batch_stats', batch_stats), collect_kl(state.get(KL_COLLECTION, {}))


# ---------------------------------------------------------------------------- objectives
def clean_objective(
  apply_fn, num_classes: int, *, label_smoothing: float = 0.0, noise_sigma: float = 0.0
) -> Objective:
  """Cross-entropy on clean inputs; optional label smoothing ỹ = (1−ε)·onehot + ε/K, and optional
  Gaussian augmentation x + N(0, σ²) (clipped to [0,1]), the training half of randomized smoothing."""

  def loss_fn(params, batch_stats, x, y, key, *, example_keys, axis_name=None):
    k = device_key(key, axis_name)
    if noise_sigma:
      noise = jax.vmap(
        lambda kk, xx: jax.random.normal(jax.random.fold_in(kk, keys.TAG_GAUSSIAN_AUGMENT), xx.shape)
      )(example_keys, x)
      x = jnp.clip(x + noise_sigma * noise, 0.0, 1.0)
    logits, bs, _ = train_forward(apply_fn, params, batch_stats, x, k)
    loss = softmax_cross_entropy(logits, y, num_classes, label_smoothing)
    return loss, (bs, {'accuracy': accuracy(logits, y)})

  return Objective(loss_fn)


def adversarial_objective(
  apply_fn,
  num_classes: int,
  attack: Mapping,
  *,
  label_smoothing: float = 0.0,
  clean_weight: float = 0.0,
  kl_beta: float | None = None,
  num_train: int = 1,
  attack_labels: str = 'true',
) -> Objective:
  """Adversarial training: CE on x_adv (Madry), optionally mixed with clean CE and the ELBO's KL.

  loss = (1−w)·CE(x_adv) + w·CE(x) + β·ΣKL/N_train, with w = `clean_weight` (PNI uses 0.5) and
  β = `kl_beta` (LWTA's ELBO; 0 = the authors' CE-only training, which still reports the KL as
  the 'kl' metric; None = no KL at all).

  Args:
    attack: attack spec for `build_attack` (e.g. {'name': 'pgd', 'epsilon': 0.1, ...}).
    attack_labels: 'true', or 'pred': attack the model's clean predictions in train mode, as
      PNI's code does (it avoids label leaking; the prediction comes from a train-mode pass, with
      the batch's statistics and a noise draw of its own, whose statistics are discarded).
  """
  if attack_labels not in ('true', 'pred'):
    raise ValueError(f"attack_labels must be 'true' or 'pred', got {attack_labels!r}")
  attack_fn = build_attack(attack)

  def loss_fn(params, batch_stats, x, y, key, *, example_keys, axis_name=None):
    k_model = device_key(key, axis_name)
    f = eval_logits_fn(apply_fn, params, batch_stats)
    y_att = y
    if attack_labels == 'pred':
      logits_pred, _, _ = train_forward(
        apply_fn, params, batch_stats, x, jax.random.fold_in(k_model, keys.TAG_ATTACK_LABELS)
      )
      y_att = jnp.argmax(lax.stop_gradient(logits_pred), -1)
    x_adv = attack_fn(f, example_keys, x, y_att)
    logits, bs, kl = train_forward(apply_fn, params, batch_stats, x_adv, k_model, with_kl=True)
    loss = softmax_cross_entropy(logits, y, num_classes, label_smoothing)
    metrics = {'adv_accuracy': accuracy(logits, y)}
    if clean_weight:
      logits_c, bs, _ = train_forward(
        apply_fn, params, bs, x, jax.random.fold_in(k_model, keys.TAG_CLEAN_PASS), with_kl=True
      )
      clean_ce = softmax_cross_entropy(logits_c, y, num_classes, label_smoothing)
      loss = (1 - clean_weight) * loss + clean_weight * clean_ce
      metrics['accuracy'] = accuracy(logits_c, y)
    if kl_beta:
      loss = elbo_loss(loss, kl, num_train, kl_beta)
    if kl_beta is not None:
      metrics['kl'] = kl
    return loss, (bs, metrics)

  return Objective(loss_fn)


def mixed_policy_branch(key, attacks: Sequence[str], clean_prob: float = 0.5):
  """The mixed-training branch of a step: 0 (clean) with probability `clean_prob`, else one of
  the attacks 1..len(attacks) uniformly. Drawn from the step key, so all devices agree."""
  n = len(attacks)
  probs = jnp.array([clean_prob] + [(1 - clean_prob) / n] * n)
  return jax.random.choice(key, n + 1, p=probs)


def mixed_objective(
  apply_fn,
  num_classes: int,
  attacks: Mapping[str, Mapping],
  *,
  clean_prob: float = 0.5,
  label_smoothing: float = 0.0,
) -> Objective:
  """The study's mixed adversarial training: each step is clean with probability `clean_prob`,
  otherwise attacked by one of `attacks` (PGD, FGSM, CW, noise) chosen uniformly.

  The branch is either taken inside the program by one `lax.switch` (`branch` not given: one
  compiled step, the right choice on GPU/TPU), or fixed per call (`branch=b`, a Python int): the
  loop then draws it on the host with `choose_branch` from the same key and runs the step compiled
  for that branch, since XLA's CPU backend runs convolution gradients inside a conditional
  slowly (docs/performance.md). Both give the same branch sequence.

  Args:
    attacks: name -> attack spec, in branch order (branch 0 is clean).
  """
  if not attacks:
    raise ValueError('the mixed objective needs at least one attack (config.train.mixed_attacks)')
  fns = [build_attack(spec) for spec in attacks.values()]
  names = list(attacks)

  def choose_branch(key):
    return mixed_policy_branch(jax.random.fold_in(key, keys.TAG_MIXED_BRANCH), names, clean_prob)

  def loss_fn(params, batch_stats, x, y, key, *, example_keys, axis_name=None, branch=None):
    k_model = device_key(key, axis_name)
    f = eval_logits_fn(apply_fn, params, batch_stats)
    branches = [lambda x: x] + [lambda x, fn=fn: fn(f, example_keys, x, y) for fn in fns]
    if branch is None:
      branch = choose_branch(key)
      x_in = lax.switch(branch, branches, x)
    else:
      x_in = branches[branch](x)
    logits, bs, _ = train_forward(apply_fn, params, batch_stats, x_in, k_model)
    loss = softmax_cross_entropy(logits, y, num_classes, label_smoothing)
    return loss, (bs, {'accuracy': accuracy(logits, y), 'branch': jnp.asarray(branch, jnp.float32)})

  return Objective(loss_fn, num_branches=len(names) + 1, choose_branch=choose_branch)


def trades_objective(apply_fn, num_classes: int, attack: Mapping, *, beta: float = 6.0) -> Objective:
  """TRADES: CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)), x_adv maximising that KL from x + 0.001·N(0,1).

  The clean and adversarial batches go through the model in two train-mode passes, as the
  reference does, so BatchNorm normalises each with its own statistics (the running statistics
  see the clean batch, then the adversarial one). The attack's 'loss' is replaced by the KL to
  the clean prediction; that loss closes over the whole batch, so the attack runs on the whole
  batch (microbatch=0).
  """
  spec = dict(attack, random_init='normal', microbatch=0)  # the KL closes over the whole batch

  def loss_fn(params, batch_stats, x, y, key, *, example_keys, axis_name=None):
    k_model = device_key(key, axis_name)
    f = eval_logits_fn(apply_fn, params, batch_stats)
    p_nat = jax.nn.softmax(f(x, jax.random.fold_in(k_model, keys.TAG_ATTACK_LABELS)))
    kl_loss = lambda logits, _: jnp.sum(p_nat * (jnp.log(p_nat + 1e-12) - jax.nn.log_softmax(logits)), -1)
    x_adv = build_attack(dict(spec, loss=kl_loss))(f, example_keys, x, y)
    lc, bs, _ = train_forward(apply_fn, params, batch_stats, x, k_model)
    la, bs, _ = train_forward(apply_fn, params, bs, x_adv, k_model)
    robust = jnp.mean(jnp.sum(jax.nn.softmax(lc) * (jax.nn.log_softmax(lc) - jax.nn.log_softmax(la)), -1))
    loss = softmax_cross_entropy(lc, y, num_classes) + beta * robust
    return loss, (bs, {'accuracy': accuracy(lc, y), 'adv_accuracy': accuracy(la, y)})

  return Objective(loss_fn)


def fgsm_rs_attack(epsilon: float, alpha: float = 1.25) -> dict:
  """The attack spec of FGSM with a random start: δ₀ ~ U[−ε, ε], one signed-gradient step of
  α·ε, projected back into the ε-ball and [0, 1]. With α = 1.25 every unclipped pixel ends on
  the gradient's side of x, at least 0.25ε from it.

  References:
    Wong, Rice & Kolter 2020, "Fast is better than free: revisiting adversarial training", ICLR.
  """
  return {
    'name': 'pgd',
    'epsilon': epsilon,
    'step_size': alpha * epsilon,
    'num_steps': 1,
    'random_init': 'uniform',
  }


def free_delta_update(epsilon: float):
  """Free-AT's perturbation step: δ ← clip(δ + ε·sign(∇_δ L), −ε, ε)."""

  def update(delta, grad):
    return jnp.clip(delta + epsilon * jnp.sign(grad), -epsilon, epsilon)

  return update


def free_objective(apply_fn, num_classes: int, *, epsilon: float, replays: int, label_smoothing: float = 0.0):
  """Free adversarial training: each batch is replayed `replays` (m) times; every replay takes one
  backward pass that gives both the parameter gradient (one optimizer update) and the input
  gradient (one FGSM step of size ε on the carried perturbation δ, kept in the ε-ball).

  δ starts at 0 for each new batch and is carried over its m replays. (The reference also carries
  the last δ on to the next batch; here the state is replicated over devices and δ is
  per-example, so it stays within the step.) Train with num_epochs / m passes over the data for the
  cost of that many epochs of natural training times m.

  References:
    Shafahi et al. 2019, "Adversarial Training for Free!", NeurIPS.
  """

  def loss_fn(params, batch_stats, x, y, key, *, example_keys, axis_name=None, delta=None):
    del example_keys
    x_adv = jnp.clip(x + delta, 0.0, 1.0)
    logits, bs, _ = train_forward(apply_fn, params, batch_stats, x_adv, device_key(key, axis_name))
    loss = softmax_cross_entropy(logits, y, num_classes, label_smoothing)
    return loss, (bs, {'adv_accuracy': accuracy(logits, y)})

  return Objective(loss_fn, replays=replays, update_delta=free_delta_update(epsilon))


def interval_objective(
  apply_fn,
  num_classes: int,
  *,
  epsilon: float,
  warmup_steps: int,
  ramp_steps: int,
  final_clean_weight: float = 0.5,
  label_smoothing: float = 0.0,
) -> Objective:
  """Certified training with interval bounds: κ·CE(x) + (1−κ)·CE(z_ε), where z_ε are the
  worst-case logits over the L∞ box of radius ε_t (`certify.worst_case_logits`). After
  `warmup_steps` of clean training, ε_t grows linearly from 0 to ε and κ falls from 1 to
  `final_clean_weight` over `ramp_steps` (Gowal et al.'s ramps). The bounds run the model in
  inference mode (its BatchNorm, if any, on running statistics)."""

  def loss_fn(params, batch_stats, x, y, key, *, example_keys, axis_name=None, step):
    del example_keys
    frac = jnp.clip((step - warmup_steps) / max(ramp_steps, 1), 0.0, 1.0)
    eps_t, kappa = epsilon * frac, 1.0 - (1.0 - final_clean_weight) * frac
    logits, bs, _ = train_forward(apply_fn, params, batch_stats, x, device_key(key, axis_name))
    bounds = interval_bounds(apply_fn, model_variables(params, batch_stats), x, eps_t)
    worst = worst_case_logits(bounds, y)
    loss = kappa * softmax_cross_entropy(logits, y, num_classes, label_smoothing) + (
      1.0 - kappa
    ) * softmax_cross_entropy(worst, y, num_classes)
    metrics = {'accuracy': accuracy(logits, y), 'verified': verified(bounds, y).mean(), 'epsilon': eps_t}
    return loss, (bs, metrics)

  return Objective(loss_fn, takes_step=True)
