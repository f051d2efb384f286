"""PGD-10 on the same Flax small CNN: foolbox 3 (JAX through eagerpy, an eager loop of jitted-op
calls) against jaxrobust (one compiled program), side by side in this run; and where jaxrobust's
own call spends its time.

  python -m benchmarks.foolbox_pgd [--batch=128] [--repeats=10] [--workdir=runs/fashion_mnist/regular]

Equal work on both sides: L∞ ε = 0.1, step 0.01, 10 steps, a uniform random start, cross-entropy,
sign steps, the same images, labels and weights. foolbox also classifies its result once to
report success; jaxrobust does not. jaxrobust's call is split into what it adds to the compiled
program (the input checks and the dispatch of a call made outside `jit`), the compiled program
alone, and the program's floor: ten forward-and-backward passes through the network, measured as
one jitted input gradient. foolbox is optional (the `parity` extra); without it, only
jaxrobust's parts are timed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from benchmarks.common import arg, check_args, emit
from benchmarks.side_by_side import alternate
from jaxrobust import attacks as A
from jaxrobust.machine import cpu_model
from jaxrobust.models import create_model, make_logits_fn

OPTIONS = ('batch', 'repeats', 'workdir')
EPSILON, STEP, STEPS = 0.1, 0.01, 10


def _model(workdir: str, batch: int):
  """(logits_fn, x, y): a trained run's small CNN and test images, or an initialised one."""
  if workdir:
    from jaxrobust.data import to_float
    from jaxrobust.train.restore import load_trained

    _, model, variables, ds = load_trained(workdir)
    x, y = to_float(ds.test_images[:batch]), jnp.asarray(ds.test_labels[:batch])
  else:
    model = create_model('small_cnn')
    x = jax.random.uniform(jax.random.key(0), (batch, 28, 28, 1))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    variables = model.init(jax.random.key(2), x[:1])
  return make_logits_fn(model, variables), x, y


def main():
  check_args(OPTIONS)
  batch, repeats, workdir = arg('batch', 128), arg('repeats', 10), arg('workdir', '')
  f, x, y = _model(workdir, batch)
  key = jax.random.key(3)
  ours = functools.partial(A.pgd, epsilon=EPSILON, step_size=STEP, num_steps=STEPS, random_init='uniform')
  compiled = jax.jit(ours)  # the same program, called without the checks of a call outside jit
  grad = jax.jit(
    jax.grad(lambda f, z, y: optax.softmax_cross_entropy_with_integer_labels(f(z, key), y).sum(), argnums=1)
  )
  contenders = {
    'jaxrobust_call': lambda: ours(f, key, x, y),
    'jaxrobust_compiled': lambda: compiled(f, key, x, y),
    'one_input_gradient': lambda: grad(f, x, y),
  }
  try:
    import foolbox as fb

    fmodel = fb.JAXModel(lambda z: f(z, key), bounds=(0.0, 1.0))
    attack = fb.attacks.LinfPGD(steps=STEPS, abs_stepsize=STEP, random_start=True)
    contenders['foolbox'] = lambda: attack(fmodel, x, y, epsilons=EPSILON)[1]
  except ImportError:
    fb = None
  t = {k: v['median_s'] for k, v in alternate(contenders, repeats=repeats).items()}
  floor = STEPS * t['one_input_gradient']
  emit(
    bench='pgd10_foolbox_vs_jaxrobust',
    model='small_cnn',
    weights=workdir or 'initialised',
    batch=batch,
    cpu=cpu_model(),
    work=f'L∞ ε={EPSILON}, step {STEP}, {STEPS} steps, uniform start, CE, sign steps; both sides',
    repeats=repeats,
    seconds=t,
    speedup_vs_foolbox=t['foolbox'] / t['jaxrobust_call'] if fb else None,
    # Where jaxrobust's call goes: what the call adds to the program, the program beyond its
    # gradients (loop, projections, random start), and the gradients themselves.
    share_checks_and_dispatch=(t['jaxrobust_call'] - t['jaxrobust_compiled']) / t['jaxrobust_call'],
    share_loop_beyond_gradients=(t['jaxrobust_compiled'] - floor) / t['jaxrobust_call'],
    share_gradients=floor / t['jaxrobust_call'],
    foolbox_beyond_gradients_s=t['foolbox'] - floor if fb else None,
    note=None if fb else 'foolbox not installed (the parity extra): no ratio was measured',
  )


if __name__ == '__main__':
  main()
