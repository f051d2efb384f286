"""PGD-10 on the same Flax small CNN: foolbox 3 (JAX through eagerpy, an eager loop of jitted-op
calls) against jaxrobust (one compiled program), side by side in this run; and where jaxrobust's
own call spends its time.

  python -m benchmarks.foolbox_pgd [--batch=128] [--repeats=10] [--workdir=results/published/fashion_mnist/pgd_at] [--load=0]

Equal work on both sides: L∞ ε = 0.1, step 0.01, 10 steps, a uniform random start, cross-entropy,
sign steps, the same images, labels and weights. foolbox also classifies its result once to
report success; jaxrobust does not. Each side also runs PGD-1, so that the cost of one more step
and what a call pays once (start, checks, results) come apart; jaxrobust's call is further split
into what it adds to the compiled program (the input checks and the dispatch of a call made
outside `jit`). foolbox is optional (the `parity` extra); without it only jaxrobust's parts are
timed.

`--load=N` keeps N busy-looping processes running during the measurement (0: quiet, nothing
else started); the row says which. An eager loop of many small dispatches suffers more from a
busy core than one compiled program, so a ratio measured under load is not the one a user on a
quiet machine sees: measure both, in the same way.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp

from absl import flags

from benchmarks.common import emit, parse_flags
from benchmarks.side_by_side import alternate
from jaxrobust import attacks as A
from jaxrobust.machine import cpu_model
from jaxrobust.models import create_model, make_logits_fn

FLAGS = flags.FlagValues()
flags.DEFINE_integer('batch', 128, 'images per batch', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 10, 'timed calls per side', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string(
  'workdir',
  '',
  "a run's work directory or published weights (default: an initialised small CNN)",
  flag_values=FLAGS,
)
flags.DEFINE_integer(
  'load', 0, 'busy-looping processes started beside the measurement', lower_bound=0, flag_values=FLAGS
)
EPSILON, STEP, STEPS = 0.1, 0.01, 10


def _model(workdir: str, batch: int):
  """(logits_fn, x, y): a trained run's small CNN and test images, or an initialised one."""
  if workdir:
    from jaxrobust.data import to_float
    from jaxrobust.train.weights import load_model

    _, model, variables, ds = load_model(workdir)  # a run's work directory or published weights
    x, y = to_float(ds.test_images[:batch]), jnp.asarray(ds.test_labels[:batch])
  else:
    model = create_model('small_cnn')
    x = jax.random.uniform(jax.random.key(0), (batch, 28, 28, 1))
    y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
    variables = model.init(jax.random.key(2), x[:1])
  return make_logits_fn(model, variables), x, y


def main():
  F = parse_flags(FLAGS)
  load = F.load
  # The load: fresh interpreters in a busy loop (started by exec, never forked from this JAX
  # process), ended when the measurement is.
  spinners = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(load)]
  try:
    measure(load, F.batch, F.repeats, F.workdir)
  finally:
    for p in spinners:
      p.kill()
      p.wait()


def measure(load: int, batch: int, repeats: int, workdir: str) -> None:
  f, x, y = _model(workdir, batch)
  key = jax.random.key(3)
  ours = functools.partial(A.pgd, epsilon=EPSILON, step_size=STEP, random_init='uniform')
  ours10 = functools.partial(ours, num_steps=STEPS)
  # The same programs called from inside jit: no input checks, one dispatch.
  compiled = {k: jax.jit(functools.partial(ours, num_steps=k)) for k in (1, STEPS)}
  contenders = {
    'jaxrobust_call': lambda: ours10(f, key, x, y),
    'jaxrobust_compiled': lambda: compiled[STEPS](f, key, x, y),
    'jaxrobust_compiled_1_step': lambda: compiled[1](f, key, x, y),
  }
  try:
    import foolbox as fb

    fmodel = fb.JAXModel(lambda z: f(z, key), bounds=(0.0, 1.0))
    for k, name in ((STEPS, 'foolbox'), (1, 'foolbox_1_step')):
      attack = fb.attacks.LinfPGD(steps=k, abs_stepsize=STEP, random_start=True)
      contenders[name] = functools.partial(lambda a: a(fmodel, x, y, epsilons=EPSILON)[1], attack)
  except ImportError:
    fb = None
  t = {k: v['median_s'] for k, v in alternate(contenders, repeats=repeats).items()}
  # Each side's cost of one more step, and what it pays once per call (start, checks, results).
  step = (t['jaxrobust_compiled'] - t['jaxrobust_compiled_1_step']) / (STEPS - 1)
  fb_step = (t['foolbox'] - t['foolbox_1_step']) / (STEPS - 1) if fb else None
  call = t['jaxrobust_call']
  emit(
    bench='pgd10_foolbox_vs_jaxrobust',
    model='small_cnn',
    weights=workdir or 'initialised',
    batch=batch,
    cpu=cpu_model(),
    load='quiet: nothing else started' if not load else f'{load} busy-looping process(es) beside it',
    work=f'L∞ ε={EPSILON}, step {STEP}, {STEPS} steps, uniform start, CE, sign steps; both sides',
    repeats=repeats,
    seconds=t,
    speedup_vs_foolbox=t['foolbox'] / call if fb else None,
    step_s={'jaxrobust': step, 'foolbox': fb_step},
    speedup_per_step=fb_step / step if fb else None,
    # Where jaxrobust's call goes: the checks and dispatch of a call made outside jit, the steps,
    # and the rest of the program (random start, projection of the result).
    share_checks_and_dispatch=(call - t['jaxrobust_compiled']) / call,
    share_steps=STEPS * step / call,
    share_once_per_call=(t['jaxrobust_compiled'] - STEPS * step) / call,
    foolbox_once_per_call_s=t['foolbox'] - STEPS * fb_step if fb else None,
    note=None if fb else 'foolbox not installed (the parity extra): no ratio was measured',
  )


if __name__ == '__main__':
  main()
