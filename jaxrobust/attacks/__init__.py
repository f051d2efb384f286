"""Attacks as pure, compiled functions.

Every attack has the signature `attack(logits_fn, key, x, y, **hyper) -> x_adv` where
`logits_fn(x, key) -> logits` and x lies in [lo, hi] ([0,1] by default). They compile whole under
`jax.jit`, run their steps in lax loops (straight-line up to 20 steps on the CPU,
`default_unroll`), return through `stop_gradient`, accept scalar or per-example ε / step /
bounds, and never import the model or training code.

Components:
  fgsm, fgm          one-step L∞ / L2
  pgd                L∞/L2 PGD; losses 'ce', 'margin' (CW, κ), 'dlr'; restarts under vmap; EOT
  cw_l2              Carlini–Wagner L2 with binary search over c, all inside jit
  apgd               APGD-CE / APGD-DLR (Croce & Hein 2020), with EOT
  apgd_targeted      APGD-T: targeted DLR over the top-k classes
  fab_targeted       FAB-T: minimum-norm boundary attack (L∞, L2)
  square             Square Attack: gradient-free random search (L∞, L2)
  autoattack         the standard / rand / custom ensemble with sanity checks
  uniform_noise, gaussian_noise   random baselines
  eot                gradient averaged over keys around any gradient attack
  mean_probability   a stochastic model's expected prediction, log E_k[softmax f(x, k)], as logits
  over_epsilons      one attack over an ε grid in one vmapped call
  build_attack       an attack from a dict (configs, suites)

Accuracy over a dataset under a list of attacks lives in `jaxrobust.evaluation`; this package
imports nothing of the library but `jaxrobust.keys` (the key schedule) and `jaxrobust.backend`
(which code paths the backend takes).

What compiles again: an attack is compiled for the structure of its arguments: the shapes and
dtypes of x, y and the parameters, the hyperparameters that fix the program (steps, restarts,
norm, loss, unrolling, chunking), and the `logits_fn`. A `jax.tree_util.Partial(apply, params)`
carries its parameters as arguments, so new parameters of the same shapes reuse the program; a
plain function or a fresh closure (`lambda x, key: model(x)`) is compared by identity, so each
new one compiles again, with its parameters baked in as constants (`jaxrobust.adapters` builds
the Partial for Linen, NNX, Equinox and Haiku models; docs/your-model.md).

Example:
  >>> logits_fn = jax.tree_util.Partial(apply, params)  # apply(params, x, key) -> logits
  >>> x_adv = jax.jit(lambda f, k, x, y: pgd(f, k, x, y, epsilon=8/255, num_steps=10))(logits_fn, key, x, y)
"""

from jaxrobust.attacks._apgd import apgd, apgd_targeted, checkpoint_schedule
from jaxrobust.attacks._autoattack import autoattack, sanity_checks
from jaxrobust.attacks._compose import eot, mean_probability, over_epsilons
from jaxrobust.attacks._checks import Attack, LogitsFn
from jaxrobust.attacks._geometry import per_example_norm, project, project_and_clip
from jaxrobust.attacks._loop import as_pytree_fn, default_unroll, loss_and_grad, set_default_unroll
from jaxrobust.attacks._cw import cw_l2
from jaxrobust.attacks._fab import fab_targeted
from jaxrobust.attacks._losses import cross_entropy, dlr, get_loss, margin
from jaxrobust.attacks._noise import gaussian_noise, uniform_noise
from jaxrobust.attacks._pgd import fgm, fgsm, pgd
from jaxrobust.attacks._square import square
from jaxrobust.attacks._registry import attack_names, build_attack

__all__ = [
  'Attack',
  'LogitsFn',
  'apgd',
  'apgd_targeted',
  'autoattack',
  'as_pytree_fn',
  'attack_names',
  'build_attack',
  'set_default_unroll',
  'checkpoint_schedule',
  'cross_entropy',
  'cw_l2',
  'default_unroll',
  'dlr',
  'eot',
  'fab_targeted',
  'fgm',
  'fgsm',
  'gaussian_noise',
  'get_loss',
  'loss_and_grad',
  'margin',
  'mean_probability',
  'over_epsilons',
  'pgd',
  'per_example_norm',
  'project',
  'project_and_clip',
  'sanity_checks',
  'square',
  'uniform_noise',
]
