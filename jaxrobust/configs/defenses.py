"""Every defense of the study's Table 1 as a config, for Fashion-MNIST (small CNN) or CIFAR-10
(WRN-34-1). `jaxrobust.configs.get(name, dataset)` is the public door; the study's per-defense
config files (experiments/configs/<name>.py in the repository) call `defense_config(name, arg)`.

`arg` is a comma-separated list: one dataset, 'fashion_mnist' (the default), 'cifar10' or
'synthetic' (tests), optionally 'quick' (a one-epoch budget, what `make demo` and table1 use on
a CPU), 'demo' (what `make demo` adds: training attacks of 5 PGD steps with α = 2.5·ε/5 instead of
10, so the demo fits ten minutes on a slow 2-core CPU), and for the LWTA row optionally 'authors'
(the LWTA authors' recipe instead of the study's). Any other part is refused.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from jaxrobust.train import default_config

DATASETS = ('fashion_mnist', 'cifar10', 'synthetic')


@dataclasses.dataclass(frozen=True)
class Defense:
  """One row of Table 1.

  Attributes:
    title: the row's name in the table.
    objective: `config.train.objective`.
    model_suffix: appended to the base network's name ('_pni', '_lwta').
    label_smoothing: ε of label smoothing (0: none).
    mixed_attacks: for the mixed objective, the attacks of its non-clean branches, in order.
    kl_beta: β of the ELBO's KL term (lwta_elbo).
    trades_beta: β of TRADES.
    guard: hold training examples out for the catastrophic-overfitting guard (fgsm_rs).
    noise_sigma: σ of Gaussian augmentation (gaussian_noise: the base classifier of a smoothed one).
  """

  title: str
  objective: str
  model_suffix: str = ''
  label_smoothing: float = 0.0
  mixed_attacks: tuple[str, ...] = ()
  kl_beta: float = 1.0
  trades_beta: float = 6.0
  guard: bool = False
  noise_sigma: float = 0.0


DEFENSES = {
  'regular': Defense('Regular training', 'clean'),
  'noise_injection': Defense('Noise injection (PNI)', 'pni', '_pni'),
  'smoothing': Defense('Smoothing', 'label_smoothing', label_smoothing=0.1),
  'smoothing_pgd': Defense('Smoothing + PGD', 'mixed', label_smoothing=0.1, mixed_attacks=('pgd',)),
  'smoothing_pgd_fgsm': Defense(
    'Smoothing + PGD + FGSM', 'mixed', label_smoothing=0.1, mixed_attacks=('pgd', 'fgsm')
  ),
  'smoothing_pgd_fgsm_cw': Defense(
    'Smoothing + PGD + FGSM + CW', 'mixed', label_smoothing=0.1, mixed_attacks=('pgd', 'fgsm', 'cw')
  ),
  'smoothing_pgd_fgsm_cw_pni': Defense(
    'Smoothing + PGD + FGSM + CW + noise injection',
    'mixed',
    '_pni',
    label_smoothing=0.1,
    mixed_attacks=('pgd', 'fgsm', 'cw', 'noise'),
  ),
  'lwta': Defense('Stochastic LWTA (PGD-AT + ELBO)', 'lwta_elbo', '_lwta', kl_beta=1.0),
  'pgd_at': Defense('PGD-AT (Madry), reference', 'pgd_at'),
  'trades': Defense('TRADES, reference', 'trades', trades_beta=6.0),
  'fgsm_rs': Defense('FGSM-RS (fast AT), reference', 'fgsm_rs', guard=True),
  'free_at': Defense('Free-AT (m = 4), reference', 'free_at'),
  # Certified defenses (the bracket's lower bounds): interval-bound training, and the base
  # classifiers of randomized smoothing (Gaussian augmentation at the σ they are certified with).
  'interval': Defense('Interval-bound training (certified)', 'interval'),
  'gaussian_025': Defense('Gaussian augmentation, σ = 0.25 (smoothed)', 'gaussian_noise', noise_sigma=0.25),
  'gaussian_050': Defense('Gaussian augmentation, σ = 0.5 (smoothed)', 'gaussian_noise', noise_sigma=0.5),
}
# Free-AT's replays per batch: 4 on Fashion-MNIST (ε = 0.1 is reached in 1-2 replays), 8 on CIFAR-10
# as Shafahi et al.
FREE_REPLAYS = {'fashion_mnist': 4, 'cifar10': 8, 'synthetic': 2}
PNI_ALPHA_OVER_EPS = 0.01 / 0.031  # He et al.'s code: α = 0.01 at ε = 0.031
GUARD_HOLDOUT = {'fashion_mnist': 1000, 'cifar10': 1000, 'synthetic': 32}


def _mixed_specs(eps, alpha, steps, attacks, mb):
  """The study's mixed training: half the steps clean, the others one of these, uniformly."""
  specs = {
    'pgd': dict(name='pgd', epsilon=eps, step_size=alpha, num_steps=steps, **mb),
    'fgsm': dict(name='fgsm', epsilon=eps, **mb),
    'cw': dict(name='cw_l2', max_iterations=10, binary_search_steps=1, initial_const=1.0, learning_rate=0.05),
    'noise': dict(name='uniform', epsilon=eps),
  }
  return {a: specs[a] for a in attacks}


VARIANTS = ('authors', 'demo')


def parse_arg(arg: str | None) -> tuple[str, bool]:
  """(dataset, quick) from 'dataset[,quick][,authors]' (`variant_of` reads the variant).

  Raises:
    ValueError: for a part that is neither a known dataset, 'quick' nor a variant, or two datasets.
  """
  parts = [p for p in (arg or '').split(',') if p]
  unknown = [p for p in parts if p not in DATASETS + ('quick',) + VARIANTS]
  if unknown:
    raise ValueError(
      f'unknown config argument parts {unknown}; use one of {DATASETS} and optionally '
      f"'quick', e.g. 'fashion_mnist,quick'"
    )
  datasets = [p for p in parts if p in DATASETS]
  if len(datasets) > 1:
    raise ValueError(f'config argument names two datasets {datasets}; give one')
  return (datasets[0] if datasets else 'fashion_mnist'), 'quick' in parts


def defense_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The config of defense `name` on the dataset named in `arg`.

  The LWTA row follows the study on CIFAR-10 (WRN-34-1, 30 epochs of SGD at 0.1, PGD-5 with
  ε = 8/255 and α = 0.007, the ELBO); ',authors' takes the LWTA authors' recipe instead: 100
  epochs, PGD-10, the rate halved every epoch from epoch 75, and their loss, which computes the
  ξ-KL but trains on cross-entropy alone (kl_beta = 0). On Fashion-MNIST ',authors' only sets
  kl_beta = 0, to measure what the KL term changes.
  """
  if name not in DEFENSES:
    raise ValueError(f'unknown defense {name!r}; known: {", ".join(DEFENSES)}')
  dataset, quick = parse_arg(arg)
  authors = 'authors' in (arg or '').split(',')
  if authors and name != 'lwta':
    raise ValueError(f"the 'authors' variant is the LWTA row's; {name!r} has none")
  demo = 'demo' in (arg or '').split(',')
  if demo and dataset != 'fashion_mnist':
    raise ValueError(f"the 'demo' variant is for fashion_mnist (make demo), not {dataset!r}")
  d = DEFENSES[name]
  c = default_config()
  if dataset == 'synthetic':  # tests: tiny and fast
    c.data.name = 'synthetic'
    c.data.synthetic = dict(num_train=256, num_test=64, image_shape=(8, 8, 1), num_classes=4)
    c.model.name = 'small_cnn' + d.model_suffix
    c.train.batch_size = 32
    eps, alpha, steps = 0.1, 0.05, 2
    c.train.num_epochs = 1.0
  elif dataset == 'fashion_mnist':
    # SGD lr 0.05, momentum 0.9, wd 5e-4, batch 128; PGD-10 ε=0.1, α=0.025 (docs/methods.md).
    c.model.name = 'small_cnn' + d.model_suffix
    eps, alpha, steps = (0.1, 0.05, 5) if demo else (0.1, 0.025, 10)
    c.train.num_epochs = 1.0 if quick else 10.0
  else:
    # CIFAR-10, WRN-34-1 as the study; the LWTA authors' recipe (docs/methods.md; GPU scale).
    c.data.name = 'cifar10'
    c.data.augment = dict(pad=4, flip=True)
    c.model.name = 'wrn34_1' + d.model_suffix
    c.model.normalize = 'none'
    eps, alpha, steps = 0.031, 0.007, 10
    c.train.learning_rate = 0.1
    c.train.weight_decay = 2e-4
    c.train.num_epochs = 1.0 if quick else 100.0
    c.train.schedule = 'step'
    c.train.boundaries_epochs = (75, 90)
  c.train.objective = d.objective
  # On the CPU, gradients over chunks of 32 examples run faster for the small CNN (same results;
  # results/benchmarks/microbatch_sweep.jsonl).
  mb = {'microbatch': 32} if dataset == 'fashion_mnist' else {}
  c.train.attack = dict(
    name='pgd',
    epsilon=eps,
    step_size=alpha,
    num_steps=steps,
    random_init='normal' if name == 'lwta' else 'uniform',
    **mb,
  )
  if name == 'noise_injection':
    # PNI's reference: PGD-7 with α = 0.01 at ε = 0.031 (scaled to this ε), attacking the
    # train-mode predictions (attack_labels='pred'), after 5 clean epochs (none in a quick run).
    c.train.attack = dict(name='pgd', epsilon=eps, step_size=eps * PNI_ALPHA_OVER_EPS, num_steps=7, **mb)
    c.train.clean_epochs = 0.0 if quick or dataset == 'synthetic' else 5.0
  if name == 'lwta' and dataset == 'cifar10':
    if authors:  # their released code: PGD-10, halving from epoch 75 (final rate 0.1·0.5²⁶)
      c.train.schedule, c.train.num_epochs = 'halving', 1.0 if quick else 100.0
    else:  # the study: 30 epochs, SGD at 0.1, PGD-5 with α = 0.007
      c.train.schedule, c.train.num_epochs = 'constant', 1.0 if quick else 30.0
      c.train.attack = dict(name='pgd', epsilon=8 / 255, step_size=0.007, num_steps=5, random_init='normal')
  if d.mixed_attacks:
    c.train.mixed_attacks = _mixed_specs(eps, alpha, steps, d.mixed_attacks, mb)
    c.train.clean_prob = 0.5
  c.train.label_smoothing = d.label_smoothing
  c.train.noise_sigma = d.noise_sigma
  if name == 'interval':
    # Gowal et al. train with Adam and ramp ε over a share of training; here 1 clean epoch, then
    # ε grows to 1.1× the evaluated ε over half of the budget (a quick run ramps over its epoch).
    c.train.optimizer, c.train.learning_rate, c.train.weight_decay = 'adam', 1e-3, 0.0
    total = c.train.num_epochs
    warm = 0.0 if quick or dataset == 'synthetic' else 1.0
    c.train.interval = dict(
      epsilon=1.1 * eps, warmup_epochs=warm, ramp_epochs=max(total / 2, 0.5), final_clean_weight=0.5
    )
  c.train.kl_beta = 0.0 if authors else d.kl_beta
  c.train.trades_beta = d.trades_beta
  c.train.free_replays = FREE_REPLAYS[dataset]
  if d.guard:
    guard_attack = dict(
      name='pgd', epsilon=eps, step_size=alpha, num_steps=steps, random_init='uniform', **mb
    )
    c.train.guard = dict(holdout=GUARD_HOLDOUT[dataset], drop=0.2, attack=guard_attack)
  c.train.checkpoint_every = 100
  return c
