"""Parameter initialisation conventions other than the models' own.

Flax's `nn.Conv`/`nn.Dense` draw kernels from a truncated LeCun normal (variance 1/fan_in) and set
biases to zero. PyTorch's `nn.Conv2d`/`nn.Linear` draw kernels from kaiming_uniform(a=√5), which
is U(−1/√fan_in, 1/√fan_in) (variance 1/(3·fan_in), a third of Flax's), and biases from the same
uniform. `torch_default_init` redraws a parameter tree the PyTorch way, so a network starts as its
torch twin would (in distribution; not the same numbers).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxrobust import keys

INITS = ('flax', 'torch')


def torch_default_init(params, key):
  """`params` with every 'kernel' (HWIO or (in, out)) and its module's 'bias' redrawn from
  U(−1/√fan_in, 1/√fan_in), fan_in = the product of the kernel's dimensions but the last.
  Other parameters (BatchNorm scale and bias, noise scales, LWTA/IBP parameters) are kept."""

  def visit(tree, key):
    if not isinstance(tree, dict):
      return tree
    out = {}
    for i, (name, sub) in enumerate(sorted(tree.items())):
      out[name] = visit(sub, jax.random.fold_in(key, i))
    kernel = tree.get('kernel')
    if kernel is not None and not isinstance(kernel, dict):
      fan_in = 1
      for d in kernel.shape[:-1]:
        fan_in *= d
      bound = 1.0 / jnp.sqrt(fan_in)
      kk, kb = jax.random.split(jax.random.fold_in(key, keys.TAG_INIT_REDRAW))
      out['kernel'] = jax.random.uniform(kk, kernel.shape, kernel.dtype, -bound, bound)
      if 'bias' in tree and not isinstance(tree['bias'], dict):
        out['bias'] = jax.random.uniform(kb, tree['bias'].shape, tree['bias'].dtype, -bound, bound)
    return out

  return visit(dict(params), key)
