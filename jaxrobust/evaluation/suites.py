"""Named attack suites: the study's own settings, and the field's standard settings per dataset.

A suite is a dict name -> attack spec (see `jaxrobust.attacks.build_attack`). Stochastic models
get adaptive attacks on top: EOT-PGD and EOT-APGD, and a transfer attack from the deterministic
surrogate (added by the evaluator, which owns the surrogate).

References:
  Croce & Hein 2020 (APGD-CE/DLR; AutoAttack 'rand' uses EOT-20), arXiv:2003.01690
  Athalye et al. 2018 (EOT, BPDA), arXiv:1802.00420
  Tramèr, Carlini, Brendel & Madry 2020, "On Adaptive Attacks to Adversarial Example Defenses",
  NeurIPS (expected-probability loss, surrogates of stochastic layers)
  Bengio, Léonard & Courville 2013, "Estimating or Propagating Gradients Through Stochastic
  Neurons", arXiv:1308.3432 (straight-through estimator)
"""

from __future__ import annotations

from typing import NamedTuple

SUITES = ('study', 'standard', 'autoattack', 'autoattack_rand', 'adaptive')
# Suites that run AutoAttack's ensemble instead of a list of independent attacks.
AUTOATTACK_SUITES = {'autoattack': 'standard', 'autoattack_rand': 'rand'}

# L∞ / L2 budgets of the 'standard' suite per dataset.
STANDARD_BUDGETS = {
  'fashion_mnist': dict(linf=0.1, linf_step=0.01, l2=1.5, l2_step=0.15),
  'mnist': dict(linf=0.3, linf_step=0.01, l2=2.0, l2_step=0.2),
  'cifar10': dict(linf=8 / 255, linf_step=2 / 255, l2=0.5, l2_step=0.1),
  'cifar100': dict(linf=8 / 255, linf_step=2 / 255, l2=0.5, l2_step=0.1),  # RobustBench's, as CIFAR-10
  'synthetic': dict(linf=0.1, linf_step=0.02, l2=0.5, l2_step=0.1),
}


def scaled(n: int, steps_scale: float) -> int:
  """An iteration count `n` scaled by `steps_scale`, rounded, at least 1: the one rule for every
  budget of the suites (steps, restarts of a search, queries)."""
  return max(1, int(round(n * steps_scale)))


def attack_suite(
  name: str, dataset: str, *, stochastic: bool = False, eot_samples: int = 8, steps_scale: float = 1.0
) -> dict[str, dict]:
  """The attacks of suite `name` for `dataset`.

  Args:
    name: 'study' (PGD ε=0.3, α=0.01, 3 steps; FGSM ε=0.3; CW κ=0.01, c=1e-4: the study's numbers,
      compared like for like) or 'standard' (FGSM, PGD-20 with a random start, PGD-L2, APGD-CE,
      APGD-DLR, CW-L2 at the field's ε for the dataset).
    dataset: dataset name (picks the ε of 'standard').
    stochastic: add EOT-PGD and EOT-APGD with `eot_samples` gradient samples, at the L∞ ε and at
      the L2 ε of the suite's PGD-L2 (CW-L2 has no EOT version and stays single-draw).
    steps_scale: multiply iteration counts (< 1 for quick runs; at least 1 step each).

  Raises:
    ValueError: for an unknown suite or a dataset without standard budgets.
  """
  s = lambda n: scaled(n, steps_scale)  # noqa: E731
  # Fewer steps take proportionally larger steps, so that a quick run still crosses the ε-ball.
  a = lambda alpha, eps, n: min(eps, alpha * n / s(n))
  if name == 'study':
    suite = {
      'fgsm': dict(name='fgsm', epsilon=0.3),
      'pgd_linf': dict(name='pgd', epsilon=0.3, step_size=0.01, num_steps=3),
      'pgd_l2': dict(name='pgd_l2', epsilon=1.5, step_size=0.1, num_steps=3),
      'cw_l2': dict(
        name='cw_l2', kappa=0.01, initial_const=1e-4, binary_search_steps=1, max_iterations=s(100)
      ),
    }
    b = dict(linf=0.3, linf_step=0.01)
  elif name == 'standard':
    if dataset not in STANDARD_BUDGETS:
      raise ValueError(f'no standard budgets for dataset {dataset!r}; known: {", ".join(STANDARD_BUDGETS)}')
    b = STANDARD_BUDGETS[dataset]
    suite = {
      'fgsm': dict(name='fgsm', epsilon=b['linf']),
      'pgd_linf': dict(
        name='pgd', epsilon=b['linf'], step_size=a(b['linf_step'], b['linf'], 20), num_steps=s(20)
      ),
      'pgd_l2': dict(name='pgd_l2', epsilon=b['l2'], step_size=a(b['l2_step'], b['l2'], 20), num_steps=s(20)),
      'apgd_ce': dict(name='apgd_ce', epsilon=b['linf'], num_steps=s(100)),
      'apgd_dlr': dict(name='apgd_dlr', epsilon=b['linf'], num_steps=s(100)),
      'cw_l2': dict(
        name='cw_l2',
        epsilon=b['l2'],
        max_iterations=s(100),
        binary_search_steps=s(5),
        initial_const=0.1,
        learning_rate=0.05,
      ),
    }
  else:
    raise ValueError(f'unknown attack suite {name!r}; use one of {SUITES}')
  if stochastic:
    suite['eot_pgd'] = dict(
      name='pgd',
      epsilon=b['linf'],
      step_size=a(b['linf_step'], b['linf'], 20),
      num_steps=s(20),
      eot_samples=eot_samples,
    )
    suite['eot_apgd'] = dict(name='apgd_ce', epsilon=b['linf'], num_steps=s(50), eot_samples=eot_samples)
    # The L2 threat gets the same two EOT attacks: PGD-L2 with single draws is a weak attack on a
    # stochastic model (noisy gradients), which a worst case over both threats would credit.
    suite['eot_pgd_l2'] = dict(suite['pgd_l2'], eot_samples=eot_samples)
    suite['eot_apgd_l2'] = dict(
      name='apgd_ce', norm='l2', epsilon=suite['pgd_l2']['epsilon'], num_steps=s(50), eot_samples=eot_samples
    )
  return suite


def linf_budget(name: str, dataset: str) -> float:
  """The L∞ ε of a suite (the transfer attack and ε-grid centre use it)."""
  if name == 'study':
    return 0.3
  if dataset not in STANDARD_BUDGETS:
    raise ValueError(f'no standard budgets for dataset {dataset!r}; known: {", ".join(STANDARD_BUDGETS)}')
  return STANDARD_BUDGETS[dataset]['linf']


def transfer_attack(name: str, dataset: str, *, steps_scale: float = 1.0) -> dict:
  """The PGD-L∞ attack run on a stochastic model's deterministic surrogate (transfer), and
  drawn in the example figures: 20 steps of ε/8 at the suite's ε (iterations scaled)."""
  eps = linf_budget(name, dataset)
  return dict(name='pgd', epsilon=eps, step_size=eps / 8, num_steps=scaled(20, steps_scale))


def eot_pgd_spec(epsilon: float, *, num_steps: int, eot_samples: int, microbatch: int | None = None) -> dict:
  """The suite's EOT-PGD, the one attack that its column, the convergence study and the docs name:
  cross-entropy loss, a constant step ε/4·20/num_steps (ε/20 at 100 steps), 2 restarts, the
  gradient averaged over `eot_samples` draws."""
  spec = dict(
    name='pgd',
    epsilon=epsilon,
    step_size=min(epsilon, epsilon / 4 * 20 / num_steps),
    num_steps=num_steps,
    loss='ce',
    restarts=2,
    eot_samples=eot_samples,
  )
  if microbatch is not None:
    spec['microbatch'] = microbatch
  return spec


def adaptive_attacks(
  dataset: str,
  *,
  eot_samples: int = 20,
  steps_scale: float = 1.0,
  queries: int = 1000,
  eot_microbatch: int | None = None,
) -> dict:
  """The adaptive suite's attack specs at the dataset's standard L∞ ε: single-draw PGD-20,
  APGD-CE and APGD-DLR; EOT-PGD (`eot_pgd_spec`: cross-entropy, 100 steps of constant size ε/20, 2
  restarts); EOT-Square (`queries`; points far from breaking average a quarter of the draws per
  query, `far_draws` in `attacks.square`). AutoAttack's two versions and the transfer attacks from
  the model's surrogates are added by `evaluate_adaptive`.
  `eot_microbatch` is EOT-PGD's gradient chunk size (None: the attack's default)."""
  eps = linf_budget('standard', dataset)
  b = STANDARD_BUDGETS[dataset]
  s = lambda n: scaled(n, steps_scale)  # noqa: E731
  return {
    'pgd': dict(name='pgd', epsilon=eps, step_size=min(eps, b['linf_step'] * 20 / s(20)), num_steps=s(20)),
    'apgd_ce': dict(name='apgd_ce', epsilon=eps, num_steps=s(100)),
    'apgd_dlr': dict(name='apgd_dlr', epsilon=eps, num_steps=s(100)),
    'eot_pgd': eot_pgd_spec(eps, num_steps=s(100), eot_samples=eot_samples, microbatch=eot_microbatch),
    'eot_square': dict(
      name='square',
      epsilon=eps,
      num_queries=s(queries),
      eot_samples=eot_samples,
      far_draws=max(1, eot_samples // 4),
    ),
  }


class SamplingAttack(NamedTuple):
  """An attack on what a stochastic model samples: `attack` run on a version of the model built
  from the same variables (`evaluate_adaptive` builds it), its points then classified by the
  model itself.

  Attributes:
    attack: the attack's spec (`attacks.build_attack`).
    lwta_mode: None (the model as it is) or the LWTA mode of the version attacked
      (`models.with_lwta_mode`): 'hard' (straight-through: one-hot winners forward, the relaxed
      gradient at `temperature` backward) or 'eval' (winners sampled at `eval_temperature`).
    temperature: the relaxed temperature of 'hard' (None: the model's own training temperature).
    eval_temperature: the sampling temperature of 'eval'.
    mean_probability: the attack runs on `attacks.mean_probability` of the version over this many
      draws per step (the expected-probability loss), None: on its logits.
  """

  attack: dict
  lwta_mode: str | None = None
  temperature: float | None = None
  eval_temperature: float | None = None
  mean_probability: int | None = None


# Chosen by measurement on the published LWTA model (experiments/sampling_attacks, its results
# under results/sampling_attacks/): the strongest temperature of each kind.
LOW_TEMPERATURE = 0.5
STRAIGHT_THROUGH_TEMPERATURE: float | None = None


def sampling_attacks(
  dataset: str,
  *,
  lwta: bool,
  eot_samples: int = 20,
  steps_scale: float = 1.0,
  eot_microbatch: int | None = None,
  low_temperature: float = LOW_TEMPERATURE,
  straight_through_temperature: float | None = STRAIGHT_THROUGH_TEMPERATURE,
  attack: dict | None = None,
) -> dict[str, SamplingAttack]:
  """The attacks on a stochastic model's sampling, each with the work of one EOT-PGD: `attack`
  (a listed suite passes its own 'eot_pgd'), by default the adaptive suite's (`eot_pgd_spec` at
  the standard L∞ ε: 100 steps scaled, 2 restarts, `eot_samples` draws per gradient):

  - 'eot_expected_probability' (every stochastic model): PGD on the expected-probability loss
    −log E_k[p_y] (`attacks.mean_probability` over the attack's draws per step), which a majority
    vote answers to, instead of EOT's average of per-draw losses;
  - 'eot_straight_through' (LWTA): EOT-PGD through straight-through winners, exactly one-hot in
    the forward pass, the relaxed (Gumbel-softmax) gradient at `straight_through_temperature`
    backward;
  - 'transfer_low_temperature' (LWTA): EOT-PGD on the winners relaxed at `low_temperature`
    (between the nearly one-hot test temperature and training's), its points transferred.
  """
  if attack is None:
    eps = linf_budget('standard', dataset)
    steps = scaled(100, steps_scale)
    attack = eot_pgd_spec(eps, num_steps=steps, eot_samples=eot_samples, microbatch=eot_microbatch)
  out = {
    'eot_expected_probability': SamplingAttack(
      dict(attack, eot_samples=1), mean_probability=attack.get('eot_samples', 1)
    )
  }
  if lwta:
    out['eot_straight_through'] = SamplingAttack(
      attack, lwta_mode='hard', temperature=straight_through_temperature
    )
    out['transfer_low_temperature'] = SamplingAttack(
      attack, lwta_mode='eval', eval_temperature=low_temperature
    )
  return out


# A listed suite's attacks on the sampling at its L2 ε carry this suffix (at the L∞ ε, none).
L2_SUFFIX = '_l2'


def listed_sampling_attacks(dataset: str, *, lwta: bool, attacks: dict) -> dict[str, SamplingAttack]:
  """A listed suite's attacks on a stochastic model's sampling, for both of its threats:
  `sampling_attacks` with the suite's own EOT-PGD (`attacks['eot_pgd']`, at the L∞ ε) under their
  names, then with its EOT-PGD-L2 (`attacks['eot_pgd_l2']`) under the same names followed by
  `L2_SUFFIX`. A threat attacked with EOT but not through the sampling would leave a stochastic
  model's worst case weaker at that ε than at the other."""
  linf = sampling_attacks(dataset, lwta=lwta, attack=attacks['eot_pgd'])
  l2 = sampling_attacks(dataset, lwta=lwta, attack=attacks['eot_pgd_l2'])
  return {**linf, **{name + L2_SUFFIX: a for name, a in l2.items()}}
