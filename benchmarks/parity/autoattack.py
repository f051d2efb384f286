"""AutoAttack parity: jaxrobust against the reference implementation (`pyautoattack`, the code of
fra31/auto-attack) and torchattacks' AutoAttack, on the same weights and the same test images,
all timed in this run on this machine. Needs the `parity` extra (CPU torch).

  python -m benchmarks.parity.autoattack --workdir=runs/fashion_mnist/regular [--num_test=1000] [--eps=0.1]
      [--attacks=apgd-ce,apgd-t,fab-t,square,standard,fab-l2,square-reference-windows]
      [--out=results/parity/<run>_n<N>]
      [--chunk=250]

It copies a trained small CNN into its torch twin, checks that the logits agree to 1e-4, runs each
component (APGD-CE, APGD-T, FAB-T, Square) alone and the whole standard AutoAttack in each
library, and FAB-T in L2 with a budget no point needs (`fab-l2`: the median distance of the
adversarial points it finds), and prints one JSON line per measurement and a Markdown table.
Parity means robust accuracy within 0.5 points of the reference (1 point for Square), and FAB-L2
median distances within 2 %. `square-reference-windows` (not run by default) is jaxrobust's Square
with the reference's window positions, which never reach the last row or column, against the
reference's Square: it separates that difference of the two Squares from their random draws.

The reference's FAB-T alone runs for more than an hour on a PGD-trained model, so every
measurement is stored in `--out` as it finishes, chunk by chunk of `--chunk` images (250) with the
libraries alternating inside each chunk, and the same command goes on from there. A speed-up is
printed only for two measurements taken in the same run, and each names the CPU cores it ran on
(`taskset -c 1 python -m benchmarks.parity.autoattack ...` measures both libraries on one core).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from absl import flags

from benchmarks.common import emit, parse_flags
from jaxrobust import attacks as A
from jaxrobust.machine import cpu_model, usable_cores

COMPONENTS = {
  'apgd-ce': 'apgd_ce',
  'apgd-t': 'apgd_t',
  'fab-t': 'fab_t',
  'square': 'square',
  # Square with the window positions the reference draws (never the last row or column): what
  # separates the two Squares' results once their random draws are accounted for.
  'square-reference-windows': {'name': 'square', 'reference_windows': True},
}
# The reference's attack for each of ours (its Square draws its windows one way only).
REFERENCE_ATTACK = {'square-reference-windows': 'square'}


def run_ours(f, x, y, eps, names=None, batch_size=500, key_index=0, split=None, **budget):
  """(robust accuracy, seconds) of jaxrobust's AutoAttack: standard, or the listed attacks
  (`budget`: num_steps / num_queries, smaller only for smoke tests; `key_index`: the first image's
  index in the test set, so that each chunk of images draws its own random numbers; `split`, a
  dict, receives the seconds of each attack)."""
  t0 = time.perf_counter()
  _, rep = A.autoattack(
    f,
    jax.random.fold_in(jax.random.key(0), key_index) if key_index else jax.random.key(0),
    jnp.asarray(x),
    jnp.asarray(y),
    epsilon=eps,
    version='standard' if names is None else 'custom',
    attacks=names,
    batch_size=batch_size,
    **budget,
  )
  if split is not None:
    split.update(rep['seconds'])
  return list(rep['robust_accuracy'].values())[-1], time.perf_counter() - t0


# The reference's attack objects and the names of the standard version's attacks they run.
# (jaxrobust's report uses the same names.)
REFERENCE_PARTS = {'apgd': 'apgd_ce', 'apgd_targeted': 'apgd_t', 'fab': 'fab_t', 'square': 'square'}


def _time_parts(aa, split: dict) -> None:
  """Wraps the `perturb` of each of the reference's attack objects so that `split` gets the
  seconds spent in each attack of the standard version."""
  for attr, name in REFERENCE_PARTS.items():
    part = getattr(aa, attr)

    def timed(*args, _run=part.perturb, _name=name, **kwargs):
      t0 = time.perf_counter()
      try:
        return _run(*args, **kwargs)
      finally:
        split[_name] = split.get(_name, 0.0) + time.perf_counter() - t0

    part.perturb = timed


# The work each attack does on both sides: one restart (jaxrobust's attacks run one), 9 target
# classes, 5000 Square queries, 100 iterations. The reference's 'standard' version sets these
# itself; its 'custom' version keeps the constructor's 5 restarts of APGD-CE and FAB.
EQUAL_WORK = dict(restarts=1, target_classes=9, square_queries=5000, iterations=100)


def _equal_work(aa) -> None:
  """Sets the reference's attack objects to `EQUAL_WORK`, whatever its version."""
  for part in (aa.apgd, aa.apgd_targeted, aa.fab, aa.square):
    part.n_restarts = EQUAL_WORK['restarts']
  aa.apgd.n_iter = aa.apgd_targeted.n_iter = aa.fab.n_iter = EQUAL_WORK['iterations']
  aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = EQUAL_WORK['target_classes']
  aa.square.n_queries = EQUAL_WORK['square_queries']


def run_reference(twin, xt, yt, eps, names=None, batch_size=500, split=None):
  """(robust accuracy, seconds) of the reference (pyautoattack, fra31/auto-attack's code);
  `split`, a dict, receives the seconds of each attack."""
  import torch
  from pyautoattack import AutoAttack

  aa = AutoAttack(
    twin,
    norm='Linf',
    eps=eps,
    device='cpu',
    seed=0,
    version='standard' if names is None else 'custom',
    attacks=names,
  )
  aa.verbose = False
  _equal_work(aa)
  if split is not None:
    split.clear()
    _time_parts(aa, split)
  t0 = time.perf_counter()
  adv, _ = aa.run_standard_evaluation(xt, yt, batch_size=batch_size)
  seconds = time.perf_counter() - t0
  with torch.no_grad():
    return float((twin(adv).argmax(1) == yt).float().mean()), seconds


def run_torchattacks(twin, xt, yt, eps, batch_size=500):
  """(robust accuracy, seconds) of torchattacks' AutoAttack (standard), as a user gets it: its
  APGD, APGD-T and FAB run 10 iterations (their constructors' default; the reference runs 100)."""
  import torch
  import torchattacks

  atk = torchattacks.AutoAttack(twin, norm='Linf', eps=eps, version='standard', n_classes=10, seed=0)
  t0 = time.perf_counter()
  adv = torch.cat(
    [atk(xt[i : i + batch_size], yt[i : i + batch_size]) for i in range(0, len(xt), batch_size)]
  )
  seconds = time.perf_counter() - t0
  with torch.no_grad():
    return float((twin(adv).argmax(1) == yt).float().mean()), seconds


# FAB-L2's budget: larger than any perturbation inside [0,1]^d (d ≤ 3072), so that every point
# FAB can break counts, and the distances it reaches are compared, not an accuracy at one ε.
FAB_L2_BUDGET = 100.0


def median_l2(x, x_adv, broken) -> float:
  """The median L2 distance of the adversarial points over all points (a point left unbroken
  counts as infinitely far), the statistic that FAB's paper reports."""
  d = np.sqrt(((np.asarray(x_adv, np.float64) - np.asarray(x, np.float64)) ** 2).reshape(len(x), -1).sum(1))
  return float(np.median(np.where(np.asarray(broken), d, np.inf)))


def run_fab_l2_ours(f, x, y, batch_size=500, **budget):
  """(median L2 distance, seconds) of jaxrobust's FAB-T in L2 with the reference's defaults."""
  t0 = time.perf_counter()
  parts = []
  for i in range(0, len(x), batch_size):
    xb, yb = jnp.asarray(x[i : i + batch_size]), jnp.asarray(y[i : i + batch_size])
    key = jax.random.fold_in(jax.random.key(0), i)
    parts.append(np.asarray(A.fab_targeted(f, key, xb, yb, norm='l2', epsilon=FAB_L2_BUDGET, **budget)))
  x_adv = np.concatenate(parts)
  seconds = time.perf_counter() - t0
  broken = np.asarray(f(jnp.asarray(x_adv), jax.random.key(0))).argmax(-1) != y
  return median_l2(x, x_adv, broken), seconds


def run_fab_l2_reference(twin, xt, yt, batch_size=500):
  """(median L2 distance, seconds) of the reference's FAB-T in L2 (pyautoattack's FABAttack_PT,
  targeted, its AutoAttack settings but one restart)."""
  import torch
  from pyautoattack.fab_pt import FABAttack_PT

  fab = FABAttack_PT(
    twin, norm='L2', n_restarts=1, n_iter=100, eps=FAB_L2_BUDGET, seed=0, targeted=True, device='cpu'
  )
  t0 = time.perf_counter()
  adv = torch.cat(
    [fab.perturb(xt[i : i + batch_size], yt[i : i + batch_size]) for i in range(0, len(xt), batch_size)]
  )
  seconds = time.perf_counter() - t0
  with torch.no_grad():
    broken = (twin(adv).argmax(1) != yt).numpy()
  return median_l2(xt.numpy(), adv.numpy(), broken), seconds


ATTACKS = tuple(COMPONENTS) + ('standard', 'fab-l2')
DEFAULT_ATTACKS = tuple(a for a in ATTACKS if a != 'square-reference-windows')


def combine_chunks(parts: list[dict], sizes: list[int]) -> dict:
  """One measurement from its chunks: the accuracy over all images, the summed seconds, and the
  chunks' runs in order, so that two sides compare as one run only if every chunk pair does."""
  n = sum(sizes)
  return {
    'accuracy': sum(p['accuracy'] * k for p, k in zip(parts, sizes)) / n,
    'seconds': sum(p['seconds'] for p in parts),
    'run': parts[0]['run'] if len({p['run'] for p in parts}) == 1 else '+'.join(p['run'] for p in parts),
    'cpu': ', '.join(sorted({p['cpu'] for p in parts})),
    'chunks': len(parts),
    # equal work only if every chunk was measured under it
    **(
      {'equal_work': parts[0]['equal_work']} if all(p.get('equal_work') == EQUAL_WORK for p in parts) else {}
    ),
  }


def measure_in_chunks(cache, attack: str, sides: dict, n: int, chunk: int, measured) -> dict[str, dict]:
  """Each side's measurement of `attack` on images [0, n), taken chunk by chunk with the sides
  alternating inside each chunk (so that a slower stretch of the machine hits every side), each
  chunk stored as it finishes: an interrupted run of hours loses at most one chunk. A side whose
  whole-set measurement is already stored (taken before chunks existed) is read as it is.

  Args:
    cache: the PieceCache of this model, image set and ε.
    attack: the attack's name, part of each piece's name.
    sides: {side: fn(start, stop) -> (accuracy, seconds)}.
    n: the number of images.
    chunk: images per chunk.
    measured: wraps fn() into a stored piece {'accuracy', 'seconds', 'run', 'cpu'}.
  """
  bounds = [(a, min(a + chunk, n)) for a in range(0, n, chunk)]
  whole = {side for side in sides if cache.has(f'{attack}_{side}')}
  parts = {side: [] for side in sides if side not in whole}
  for a, b in bounds:
    for side in parts:
      fn = sides[side]
      parts[side].append(
        cache.get(f'{attack}_{side}_{a:05d}-{b:05d}', lambda fn=fn, a=a, b=b: measured(lambda: fn(a, b)))
      )
  out = {side: cache.get(f'{attack}_{side}', None) for side in whole}
  sizes = [b - a for a, b in bounds]
  out.update({side: combine_chunks(p, sizes) for side, p in parts.items()})
  return {side: out[side] for side in sides}


RUN = f'{os.uname().nodename}-{os.getpid()}-{int(time.time())}'  # this process: one run


def _points(difference: float) -> str:
  """A difference of accuracies in signed points, one decimal, never '-0.0'."""
  return f'{round(100 * difference, 1) or 0.0:+.1f}'


def _speed_up(ref: dict, ours: dict) -> str:
  """The reference's time over ours, only for two measurements of the same run."""
  return (
    f'{ref["seconds"] / ours["seconds"]:.2f}×' if ref['run'] == ours['run'] else 'not measured in one run'
  )


def _where(*pieces: dict) -> str:
  """The CPU (and cores) the pieces were timed on: one name when they agree."""
  cpus = sorted({p.get('cpu', 'unrecorded') for p in pieces})
  return cpus[0] if len(cpus) == 1 else ' / '.join(p.get('cpu', 'unrecorded') for p in pieces)


def parity_table(pieces: dict[str, dict]) -> str:
  """The Markdown table from the stored measurements {'<attack>_<side>': {'accuracy', 'seconds',
  'run'}}. A speed-up is printed only for two measurements of the same run (side by side on one
  machine); accuracies compare whenever both exist."""
  w = EQUAL_WORK
  lines = [
    f'Both sides: {w["restarts"]} restart, {w["iterations"]} iterations, {w["target_classes"]} target classes, '
    f'{w["square_queries"]} Square queries (rows measured before the reference was held to this are marked *).',
    '',
    '| attack | reference | jaxrobust | Δ points | reference s | jaxrobust s | speed-up | measured on |',
    '|---|---|---|---|---|---|---|---|',
  ]
  for attack in ATTACKS:
    ref, ours = pieces.get(f'{attack}_reference'), pieces.get(f'{attack}_jaxrobust')
    if ref is None or ours is None or attack == 'fab-l2':
      continue
    speed = _speed_up(ref, ours)
    name = 'AutoAttack standard' if attack == 'standard' else attack
    if ref.get('equal_work') != EQUAL_WORK and attack != 'standard':
      name += ' *'
    lines.append(
      f'| {name} | {100 * ref["accuracy"]:.1f} | {100 * ours["accuracy"]:.1f} | '
      f'{_points(ours["accuracy"] - ref["accuracy"])} | {ref["seconds"]:.0f} | {ours["seconds"]:.0f} | {speed} | '
      f'{_where(ref, ours)} |'
    )
  ref, ours = pieces.get('fab-l2_reference'), pieces.get('fab-l2_jaxrobust')
  if ref is not None and ours is not None:
    speed = _speed_up(ref, ours)
    lines.append(
      f'\nFAB-T L2, median distance of the adversarial points: reference {ref["median_l2"]:.4f}, '
      f'jaxrobust {ours["median_l2"]:.4f} ({100 * (ours["median_l2"] / ref["median_l2"] - 1):+.1f} %), '
      f'{ref["seconds"]:.0f} s against {ours["seconds"]:.0f} s, speed-up {speed}'
    )
  ta = pieces.get('standard_torchattacks')
  if ta is not None:
    lines.append(
      f"\ntorchattacks' AutoAttack: {100 * ta['accuracy']:.1f} % in {ta['seconds']:.0f} s ({_where(ta)})"
    )
  return '\n'.join(lines) + '\n'


FLAGS = flags.FlagValues()
flags.DEFINE_string('workdir', '', "the trained small CNN (a run's work directory)", flag_values=FLAGS)
flags.DEFINE_integer('num_test', 1000, 'test images', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float('eps', 0.1, 'L∞ radius', lower_bound=0.0, flag_values=FLAGS)
flags.DEFINE_string(
  'attacks', ','.join(DEFAULT_ATTACKS), 'attacks compared, comma-separated', flag_values=FLAGS
)
flags.DEFINE_string(
  'out', '', 'results directory (default results/parity/<workdir>_n<num_test>)', flag_values=FLAGS
)
flags.DEFINE_integer('chunk', 250, 'images per piece', lower_bound=1, flag_values=FLAGS)


def main():
  F = parse_flags(FLAGS)
  import torch

  from tests.fixtures.torch_twins import small_cnn_from_flax
  from jaxrobust.evaluation.cache import PieceCache, digest
  from jaxrobust.models import make_logits_fn
  from jaxrobust.train.restore import load_trained

  workdir, n, eps = F.workdir, F.num_test, F.eps
  attacks = F.attacks.split(',')
  unknown = sorted(set(attacks) - set(ATTACKS))
  if unknown:
    raise SystemExit(f'--attacks: unknown {unknown}; known: {",".join(ATTACKS)}')
  torch.set_num_threads(usable_cores())
  chunk = F.chunk
  _, model, variables, ds = load_trained(workdir)
  x = np.asarray(ds.test_images[:n], np.float32) / 255.0
  y = np.asarray(ds.test_labels[:n])
  out = F.out or os.path.join('results', 'parity', f'{os.path.basename(os.path.normpath(workdir))}_n{n}')
  # Hours of reference runs: every measurement is kept as it finishes, and a rerun goes on from
  # there; a directory of another model, image set or ε is refused.
  cache = PieceCache(out, dict(model=digest(variables), images=digest(x, y), eps=eps))
  f = make_logits_fn(model, variables)
  twin = small_cnn_from_flax(model, variables)
  xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype(np.int64))
  with torch.no_grad():
    diff = float(np.abs(twin(xt).numpy() - np.asarray(f(jnp.asarray(x), jax.random.key(0)))).max())
  emit(
    cpu=cpu_model(),
    workdir=workdir,
    n=n,
    eps=eps,
    max_logit_difference=diff,
    torch=torch.__version__,
    jax=jax.__version__,
    results=out,
  )
  if diff > 1e-4:
    raise SystemExit(f'the torch twin disagrees with the Flax model by {diff} > 1e-4')

  def measured(fn, what='accuracy'):
    value, seconds = fn()
    return {what: value, 'seconds': seconds, 'run': RUN, 'cpu': cpu_model(), 'equal_work': EQUAL_WORK}

  pieces = {}
  for attack in attacks:
    if attack == 'fab-l2':
      for side, fn in (
        ('reference', lambda: run_fab_l2_reference(twin, xt, yt)),
        ('jaxrobust', lambda: run_fab_l2_ours(f, x, y)),
      ):
        pieces[f'{attack}_{side}'] = piece = cache.get(
          f'{attack}_{side}', lambda fn=fn: measured(fn, 'median_l2')
        )
        emit(attack=attack, side=side, **piece)
      continue
    names = None if attack == 'standard' else [REFERENCE_ATTACK.get(attack, attack)]
    sides = {
      'reference': lambda a, b: run_reference(twin, xt[a:b], yt[a:b], eps, names),
      'jaxrobust': lambda a, b: run_ours(
        f, x[a:b], y[a:b], eps, None if names is None else [COMPONENTS[attack]], key_index=a
      ),
    }
    if attack == 'standard':
      sides['torchattacks'] = lambda a, b: run_torchattacks(twin, xt[a:b], yt[a:b], eps)
    for side, piece in measure_in_chunks(cache, attack, sides, n, chunk, measured).items():
      pieces[f'{attack}_{side}'] = piece
      emit(attack=attack, side=side, **piece)
  print('\n' + parity_table(pieces))


if __name__ == '__main__':
  main()
