"""The CPU findings the code relies on, each measured side by side in one run (alternating
variants, medians), printed as JSON lines; docs/performance.md quotes them.

  python -m benchmarks.cpu_findings [--batch=128] [--repeats=5] [--eigen=1]
      [--aa_workdir=runs/demo/fashion_mnist/pgd_at --aa_n=200] [--microbatch_workdir=...] [--side=28] [--aa_steps=100: smoke only]

1. a rolled attack loop against the unrolled one (PGD-10, small CNN), with the models'
   convolution (`models.Conv`) and with plain `nn.Conv`, whose input gradient XLA's CPU backend
   runs as a naive loop nest inside a loop;
2. a PGD attack inside `lax.switch` against the same attack outside it;
3. max pooling written as reshape + max against `reduce_window` (input gradient);
4. parameters passed as jit arguments against parameters closed over as constants;
5. (--eigen=1) WRN-16-4 input gradient with XLA's Eigen convolutions against the default,
   each in its own process (the flag must be set before JAX starts);
7. (--microbatch_workdir) APGD-CE (100 steps, batch 500) on a trained small CNN with the default
   gradient chunks of a rolled loop against the whole batch (`microbatch=0`);
8. (--eot_workdir) EOT-PGD-10 (20 draws in chunks of 6) on a trained randomised model, its
   10 steps straight-line against a rolled loop: compilation (first call) and run seconds;
6. (--aa_workdir) AutoAttack's gradient attacks (APGD-CE, APGD-T, FAB-T at their full budgets) on
   a trained small CNN, with `models.Conv` against plain `nn.Conv` (same weights; medians of 2).
"""

import functools
import json
import os
import statistics
import subprocess
import sys

import flax.linen as nn
import jax

from benchmarks import side_by_side
from absl import flags

from benchmarks.common import emit, parse_flags
from jaxrobust import attacks as A
from jaxrobust.attacks import _loop
from jaxrobust.models import create_model, make_logits_fn
from jaxrobust.machine import cpu_model


def alternate(variants: dict, repeats: int) -> dict:
  """Median seconds of each variant, compiled first, then run in turns (side_by_side)."""
  return {k: v['median_s'] for k, v in side_by_side.alternate(variants, repeats).items()}


def report(finding: str, t: dict, base: str, other: str, **extra):
  emit(
    finding=finding,
    **{f'{k}_s': round(v, 4) for k, v in t.items()},
    ratio=round(t[other] / t[base], 2),
    ratio_is=f'{other} / {base}',
    **extra,
  )


class _PoolCNN(nn.Module):
  pool: str

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(32, (3, 3))(x))
    if self.pool == 'reshape':
      n, h, w, c = x.shape
      x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    else:
      x = nn.max_pool(x, (2, 2), (2, 2))
    return nn.Dense(10)(x.reshape(x.shape[0], -1))


FLAGS = flags.FlagValues()
flags.DEFINE_integer('batch', 128, 'images per batch', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('side', 28, 'image side', lower_bound=8, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 5, 'timed calls per side', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool('eigen', True, 'the WRN-16-4 thread-pool finding (fresh processes)', flag_values=FLAGS)
flags.DEFINE_string(
  'aa_workdir', '', "a trained model: time AutoAttack's components on it", flag_values=FLAGS
)
flags.DEFINE_integer('aa_n', 200, 'test images for --aa_workdir', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('aa_steps', 100, 'APGD steps for --aa_workdir', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string(
  'microbatch_workdir', '', 'a trained model: time automatic microbatching (only that)', flag_values=FLAGS
)
flags.DEFINE_integer(
  'microbatch_n', 500, 'test images for --microbatch_workdir', lower_bound=1, flag_values=FLAGS
)
flags.DEFINE_string(
  'eot_workdir', '', 'a trained stochastic model: time EOT in a straight line (only that)', flag_values=FLAGS
)
flags.DEFINE_integer('eot_n', 100, 'test images for --eot_workdir', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool(
  'child_wrn', False, 'internal: one fresh process timing a WRN-16-4 gradient', flag_values=FLAGS
)


def main():
  F = parse_flags(FLAGS)
  if F.child_wrn:
    return child_wrn()
  batch, repeats = F.batch, F.repeats
  emit(cpu=cpu_model(), jax=jax.__version__, backend=jax.default_backend())
  if F.microbatch_workdir:
    return auto_microbatch(F.microbatch_workdir, F.microbatch_n, repeats)
  if F.eot_workdir:
    return eot_straight_line(F.eot_workdir, F.eot_n, repeats)
  model = create_model('small_cnn', num_classes=10)
  side = F.side
  x = jax.random.uniform(jax.random.key(0), (batch, side, side, 1))
  y = jax.random.randint(jax.random.key(1), (batch,), 0, 10)
  v = jax.jit(model.init)(jax.random.key(2), x[:2])
  f = make_logits_fn(model, v)
  key = jax.random.key(3)
  pgd = functools.partial(A.pgd, epsilon=0.1, step_size=0.025, num_steps=10)

  f_nn = make_logits_fn(model.clone(conv=nn.Conv), v)  # the same weights, flax's own convolution
  t = alternate(
    {
      'unrolled': lambda: pgd(f, key, x, y, unroll=10),
      'rolled': lambda: pgd(f, key, x, y, unroll=1),
      'nn_conv_unrolled': lambda: pgd(f_nn, key, x, y, unroll=10),
      'nn_conv_rolled': lambda: pgd(f_nn, key, x, y, unroll=1),
    },
    repeats,
  )
  report('rolled_loop', t, 'unrolled', 'rolled', model='small_cnn', batch=batch)
  report('rolled_loop_nn_conv', t, 'nn_conv_unrolled', 'nn_conv_rolled', model='small_cnn', batch=batch)
  report('rolled_loop_models_conv_vs_nn_conv', t, 'rolled', 'nn_conv_rolled', model='small_cnn', batch=batch)

  @jax.jit
  def in_switch(f, key, x, y, b):
    return jax.lax.switch(b, [lambda x: x, lambda x: pgd(f, key, x, y)], x)

  plain = jax.jit(lambda f, key, x, y: pgd(f, key, x, y))
  t = alternate({'plain': lambda: plain(f, key, x, y), 'switch': lambda: in_switch(f, key, x, y, 1)}, repeats)
  report('pgd_inside_lax_switch', t, 'plain', 'switch', model='small_cnn', batch=batch)

  grads = {}
  for pool in ('reshape', 'reduce_window'):
    m = _PoolCNN(pool)
    pv = m.init(jax.random.key(4), x[:2])
    g = jax.jit(jax.grad(lambda x, pv=pv, m=m: m.apply(pv, x).sum()))
    grads[pool] = functools.partial(g, x)
  t = alternate(grads, repeats)
  report('max_pool_gradient', t, 'reshape', 'reduce_window', batch=batch)

  as_arg = jax.jit(lambda f, x, y: A.loss_and_grad(f, A.cross_entropy, x, y, key)[2])
  as_const = jax.jit(lambda x, y: A.loss_and_grad(f, A.cross_entropy, x, y, key)[2])
  t = alternate({'argument': lambda: as_arg(f, x, y), 'constant': lambda: as_const(x, y)}, repeats)
  report('parameters_as_constants', t, 'argument', 'constant', model='small_cnn', batch=batch)

  if F.aa_workdir:
    autoattack_components(F.aa_workdir, F.aa_n, F.aa_steps)

  if F.eigen:
    flag = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
    t = {'default': [], 'eigen': []}
    for _ in range(3):
      for name, flags in (('default', ''), ('eigen', flag)):
        out = subprocess.run(
          [sys.executable, '-m', 'benchmarks.cpu_findings', '--child_wrn=1'],
          env=dict(os.environ, XLA_FLAGS=flags),
          capture_output=True,
          text=True,
          check=True,
        )
        t[name].append(json.loads(out.stdout.strip().splitlines()[-1])['seconds'])
    report(
      'eigen_convolutions',
      {k: statistics.median(v) for k, v in t.items()},
      'default',
      'eigen',
      model='wrn16_4',
      batch=32,
      measure='input_gradient',
    )


def _trained_test_batch(workdir: str, n: int):
  """The trained model of `workdir`, its variables, and its first n test images in [0, 1] with labels."""
  from jaxrobust.evaluation.accuracy import as_unit_float
  from jaxrobust.train.restore import load_trained

  _, model, variables, ds = load_trained(workdir)
  return model, variables, as_unit_float(ds.test_images[:n]), jax.numpy.asarray(ds.test_labels[:n])


def auto_microbatch(workdir: str, n: int, repeats: int):
  model, variables, x, y = _trained_test_batch(workdir, n)
  f = make_logits_fn(model, variables)
  apgd = functools.partial(A.apgd, f, jax.random.key(0), x, y, epsilon=0.1, num_steps=100)
  t = alternate({'default': lambda: apgd(), 'whole_batch': lambda: apgd(microbatch=0)}, repeats)
  report(
    'apgd_gradient_chunks',
    t,
    'default',
    'whole_batch',
    model=workdir,
    n=n,
    chunk=_loop.resolve_microbatch(None, n, rolled=True),
  )


def eot_straight_line(workdir: str, n: int, repeats: int):
  model, variables, x, y = _trained_test_batch(workdir, n)
  f = make_logits_fn(model, variables)
  pgd = functools.partial(
    A.pgd,
    f,
    jax.random.key(0),
    x,
    y,
    epsilon=0.1,
    step_size=0.025,
    num_steps=10,
    eot_samples=20,
    microbatch=6,
    loss='margin',
  )
  t = side_by_side.alternate(
    {'straight_line': lambda: pgd(unroll=10), 'rolled': lambda: pgd(unroll=1)}, repeats
  )
  report(
    'eot_straight_line',
    {k: v['median_s'] for k, v in t.items()},
    'straight_line',
    'rolled',
    first_call_s={k: round(v['first_s'], 2) for k, v in t.items()},
    model=workdir,
    n=n,
  )


def autoattack_components(workdir: str, n: int, num_steps: int):
  model, variables, x, y = _trained_test_batch(workdir, n)
  sides = {
    'models_conv': make_logits_fn(model, variables),
    'nn_conv': make_logits_fn(model.clone(conv=nn.Conv), variables),
  }
  acc, runs = {}, {}
  for attack in ('apgd_ce', 'apgd_t', 'fab_t'):
    for side, f in sides.items():

      def run(attack=attack, side=side, f=f):
        _, rep = A.autoattack(
          f,
          jax.random.key(0),
          x,
          y,
          epsilon=0.1,
          version='custom',
          attacks=[attack],
          batch_size=n,
          num_steps=num_steps,
        )
        acc[attack, side] = rep['robust_accuracy'][attack]

      runs[f'{attack}_{side}'] = run
  t = alternate(runs, 2)
  for attack in ('apgd_ce', 'apgd_t', 'fab_t'):
    report(
      f'{attack}_nn_conv',
      {k: v for k, v in t.items() if k.startswith(attack + '_')},
      f'{attack}_models_conv',
      f'{attack}_nn_conv',
      model=workdir,
      n=n,
      robust_accuracy={side: acc[attack, side] for side in sides},
    )


def child_wrn():
  """One process: the median WRN-16-4 input gradient at batch 32."""
  m = create_model('wrn16_4', num_classes=10)
  x = jax.random.uniform(jax.random.key(0), (32, 32, 32, 3))
  y = jax.random.randint(jax.random.key(1), (32,), 0, 10)
  f = make_logits_fn(m, jax.jit(m.init)(jax.random.key(2), x[:2]))
  g = jax.jit(lambda f, x, y: A.loss_and_grad(f, A.cross_entropy, x, y, jax.random.key(3))[2])
  t = alternate({'g': lambda: g(f, x, y)}, 3)
  print(json.dumps({'seconds': t['g']}))


if __name__ == '__main__':
  main()
