"""jaxrobust: adversarial robustness in JAX/Flax.

Attacks are pure, compiled functions `attack(logits_fn, key, x, y, **hyper) -> x_adv` with
`logits_fn(x, key) -> logits` on inputs in [0,1]; models are Flax Linen modules with explicit
PRNG threading through the `stochastic` rng collection. Import the subpackages you need
(`jaxrobust.attacks` imports neither models nor training).
"""

__version__ = '0.1.0'

from jaxrobust.known_crashes import warn_if_crashing as _warn_if_crashing

_warn_if_crashing()
