"""Training objectives: pure functions of (params, batch_stats, x, y, key).

Each factory returns `objective(params, batch_stats, x, y, key, *, example_keys, axis_name)
-> (loss, (new_batch_stats, metrics))`. x is this device's float batch in [0,1]; `key` is the
step's key, the same on every device; `example_keys` hold one key per example (attack starts are
then independent of how the batch is sharded). Attacks inside the step run on the model in eval
mode (BatchNorm running statistics; LWTA at its eval temperature) with parameters held fixed.

References:
  Madry et al. 2018 (PGD adversarial training), arXiv:1706.06083
  Zhang et al. 2019 (TRADES), arXiv:1901.08573
  He et al. 2019 (PNI), arXiv:1811.09310
  Panousis et al. 2022 (LWTA + PGD-AT), arXiv:2112.02671
  Szegedy et al. 2016 (label smoothing), arXiv:1512.00567
  Cohen et al. 2019 (Gaussian augmentation for randomized smoothing), arXiv:1902.02918
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxrobust.attacks import build_attack
from jaxrobust.models.common import STOCHASTIC
from jaxrobust.models.ibp import collect_kl
from jaxrobust.models.lwta import KL_COLLECTION
from jaxrobust.train.step import accuracy, cross_entropy, device_key, model_forward

MIXED_ATTACKS = ('pgd', 'fgsm', 'cw', 'noise')


def eval_logits_fn(apply_fn, params, batch_stats):
  """The model in eval mode with parameters held fixed: what attacks inside the step see."""
  variables = {'params': lax.stop_gradient(params)}
  if batch_stats:
    variables['batch_stats'] = batch_stats
  return lambda x, key: apply_fn(variables, x, train=False, rngs={STOCHASTIC: key})


def _forward_with_kl(apply_fn, params, batch_stats, x, key):
  """Train-mode forward returning logits, new batch stats and ΣKL of the stochastic layers."""
  variables = {'params': params, 'batch_stats': batch_stats} if batch_stats else {'params': params}
  logits, state = apply_fn(variables, x, train=True, rngs={STOCHASTIC: key},
                           mutable=['batch_stats', KL_COLLECTION])
  return logits, state.get('batch_stats', batch_stats), collect_kl(state.get(KL_COLLECTION, {}))


def clean_objective(apply_fn, num_classes: int, *, label_smoothing: float = 0.0, noise_sigma: float = 0.0):
  """Cross-entropy on clean inputs; optional label smoothing ỹ = (1−ε)·onehot + ε/K, and optional
  Gaussian augmentation x + N(0, σ²) (clipped to [0,1]), the training half of randomized smoothing."""
  def objective(params, batch_stats, x, y, key, *, example_keys=None, axis_name=None):
    k = device_key(key, axis_name)
    if noise_sigma:
      noise = jax.vmap(lambda kk, xx: jax.random.normal(jax.random.fold_in(kk, 7), xx.shape))(example_keys, x)
      x = jnp.clip(x + noise_sigma * noise, 0.0, 1.0)
    logits, bs = model_forward(apply_fn, params, batch_stats, x, k, train=True)
    loss = cross_entropy(logits, y, num_classes, label_smoothing)
    return loss, (bs, {'accuracy': accuracy(logits, y)})
  return objective


def adversarial_objective(apply_fn, num_classes: int, attack: dict, *, label_smoothing: float = 0.0,
                          clean_weight: float = 0.0, kl_beta: float = 0.0, num_train: int = 1,
                          attack_labels: str = 'true'):
  """Adversarial training: CE on x_adv (Madry), optionally mixed with clean CE and the ELBO's KL.

  loss = (1−w)·CE(x_adv) + w·CE(x) + β·ΣKL/N_train, with w = `clean_weight` (PNI uses 0.5) and
  β = `kl_beta` (LWTA's ELBO; 0 = the authors' CE-only training).

  Args:
    attack: attack spec for `build_attack` (e.g. {'name': 'pgd', 'epsilon': 0.1, ...}).
    attack_labels: 'true', or 'pred' (attack the model's clean predictions, as PNI's code does,
      which avoids label leaking).
  """
  attack_fn = build_attack(attack)

  def objective(params, batch_stats, x, y, key, *, example_keys, axis_name=None):
    k_model = device_key(key, axis_name)
    f = eval_logits_fn(apply_fn, params, batch_stats)
    y_att = y
    if attack_labels == 'pred':
      y_att = jnp.argmax(f(x, jax.random.fold_in(k_model, 1)), -1)
    x_adv = attack_fn(f, example_keys, x, y_att)
    logits, bs, kl = _forward_with_kl(apply_fn, params, batch_stats, x_adv, k_model)
    loss = cross_entropy(logits, y, num_classes, label_smoothing)
    metrics = {'adv_accuracy': accuracy(logits, y)}
    if clean_weight:
      logits_c, bs, kl_c = _forward_with_kl(apply_fn, params, bs, x, jax.random.fold_in(k_model, 2))
      loss = (1 - clean_weight) * loss + clean_weight * cross_entropy(logits_c, y, num_classes, label_smoothing)
      metrics['accuracy'] = accuracy(logits_c, y)
    if kl_beta:
      loss = loss + kl_beta * kl / num_train
      metrics['kl'] = kl
    return loss, (bs, metrics)
  return objective


def mixed_policy_branch(key, attacks: Sequence[str], clean_prob: float = 0.5):
  """The mixed-training branch of a step: 0 (clean) with probability `clean_prob`, else one of
  the attacks 1..len(attacks) uniformly. Drawn from the step key, so all devices agree."""
  n = len(attacks)
  probs = jnp.array([clean_prob] + [(1 - clean_prob) / n] * n)
  return jax.random.choice(key, n + 1, p=probs)


def mixed_objective(apply_fn, num_classes: int, attacks: dict[str, dict], *, clean_prob: float = 0.5,
                    label_smoothing: float = 0.0):
  """The study's mixed adversarial training: each step is clean with probability 4/8, otherwise
  attacked by one of `attacks` (PGD, FGSM, CW, noise) chosen uniformly from the step's key.

  The branch is either taken inside the program by one `lax.switch` (`branch=None`: one compiled
  step, the right choice on GPU/TPU), or fixed per call (`branch=b`, a Python int): the training
  loop then draws it on the host with `choose_branch` from the same key and runs the step compiled
  for that branch. Both give the same branch sequence; the second exists because XLA's CPU backend
  runs convolution gradients inside a conditional as slowly as inside a rolled loop (2× here).

  Args:
    attacks: name -> attack spec, in branch order (branch 0 is clean).

  Returns:
    the objective, with attributes `num_branches` and `choose_branch(objective_key) -> int array`.
  """
  fns = [build_attack(spec) for spec in attacks.values()]
  names = list(attacks)

  def choose_branch(key):
    return mixed_policy_branch(jax.random.fold_in(key, 3), names, clean_prob)

  def objective(params, batch_stats, x, y, key, *, example_keys, axis_name=None, branch=None):
    k_model = device_key(key, axis_name)
    f = eval_logits_fn(apply_fn, params, batch_stats)
    branches = [lambda x: x] + [lambda x, fn=fn: fn(f, example_keys, x, y) for fn in fns]
    if branch is None:
      branch = choose_branch(key)
      x_in = lax.switch(branch, branches, x)
    else:
      x_in = branches[branch](x)
    logits, bs = model_forward(apply_fn, params, batch_stats, x_in, k_model, train=True)
    loss = cross_entropy(logits, y, num_classes, label_smoothing)
    return loss, (bs, {'accuracy': accuracy(logits, y), 'branch': jnp.asarray(branch, jnp.float32)})

  objective.num_branches = len(names) + 1
  objective.choose_branch = choose_branch
  return objective


def trades_objective(apply_fn, num_classes: int, attack: dict, *, beta: float = 6.0):
  """TRADES: CE(f(x), y) + β·KL(f(x) ‖ f(x_adv)), x_adv maximising that KL from x + 0.001·N(0,1).

  The attack spec's 'loss' is replaced by the KL to the clean prediction. That loss closes over
  the whole batch's clean predictions, so the attack runs without `microbatch`.
  """
  spec = {k: v for k, v in dict(attack, random_init='normal').items() if k != 'microbatch'}

  def objective(params, batch_stats, x, y, key, *, example_keys, axis_name=None):
    k_model = device_key(key, axis_name)
    f = eval_logits_fn(apply_fn, params, batch_stats)
    p_nat = jax.nn.softmax(f(x, jax.random.fold_in(k_model, 1)))
    kl_loss = lambda logits, _: jnp.sum(p_nat * (jnp.log(p_nat + 1e-12) - jax.nn.log_softmax(logits)), -1)
    x_adv = build_attack(dict(spec, loss=kl_loss))(f, example_keys, x, y)
    both = jnp.concatenate([x, x_adv])
    logits, bs = model_forward(apply_fn, params, batch_stats, both, k_model, train=True)
    lc, la = jnp.split(logits, 2)
    robust = jnp.mean(jnp.sum(jax.nn.softmax(lc) * (jax.nn.log_softmax(lc) - jax.nn.log_softmax(la)), -1))
    loss = cross_entropy(lc, y, num_classes) + beta * robust
    return loss, (bs, {'accuracy': accuracy(lc, y), 'adv_accuracy': accuracy(la, y)})
  return objective


OBJECTIVES = ('clean', 'label_smoothing', 'gaussian_noise', 'pgd_at', 'mixed', 'pni', 'lwta_elbo', 'trades')


def build_objective(config, apply_fn, num_classes: int, num_train: int = 1):
  """The objective named by config.train.objective, with its hyperparameters from the config.

  Objectives: 'clean' (label_smoothing, noise_sigma optional), 'label_smoothing' (ε=0.1 unless
  set), 'gaussian_noise', 'pgd_at', 'mixed', 'pni' (0.5 clean + 0.5 adversarial on predicted
  labels), 'lwta_elbo' (PGD-AT + β·ΣKL/N), 'trades'.

  Raises:
    ValueError: for an unknown objective name, listing the known ones.
  """
  t = config.train
  name = t.get('objective', 'clean')
  ls = t.get('label_smoothing', 0.0)
  attack = dict(t.get('attack', {'name': 'pgd', 'epsilon': 0.1, 'step_size': 0.025, 'num_steps': 10}))
  if name == 'clean':
    return clean_objective(apply_fn, num_classes, label_smoothing=ls, noise_sigma=t.get('noise_sigma', 0.0))
  if name == 'label_smoothing':
    return clean_objective(apply_fn, num_classes, label_smoothing=ls or 0.1)
  if name == 'gaussian_noise':
    return clean_objective(apply_fn, num_classes, label_smoothing=ls, noise_sigma=t.get('noise_sigma', 0.25))
  if name == 'pgd_at':
    return adversarial_objective(apply_fn, num_classes, attack, label_smoothing=ls)
  if name == 'pni':
    return adversarial_objective(apply_fn, num_classes, attack, label_smoothing=ls, clean_weight=0.5,
                                 attack_labels=t.get('attack_labels', 'pred'))
  if name == 'lwta_elbo':
    return adversarial_objective(apply_fn, num_classes, attack, label_smoothing=ls,
                                 kl_beta=t.get('kl_beta', 1.0), num_train=num_train)
  if name == 'mixed':
    mixed = {k: dict(v) for k, v in dict(t.get('mixed_attacks', {})).items()}
    if not mixed:
      raise ValueError('objective "mixed" needs config.train.mixed_attacks (name -> attack spec)')
    return mixed_objective(apply_fn, num_classes, mixed, clean_prob=t.get('clean_prob', 0.5),
                           label_smoothing=ls)
  if name == 'trades':
    return trades_objective(apply_fn, num_classes, attack, beta=t.get('trades_beta', 6.0))
  raise ValueError(f'unknown training objective {name!r}; known: {", ".join(OBJECTIVES)}')
