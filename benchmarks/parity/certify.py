"""Certification against independent implementations on the same weights, and its cost.

  taskset -c 0 python -m benchmarks.parity.certify --workdir=runs/certified/fashion_mnist/gaussian_025 --sigma=0.25

Run it pinned to one core (taskset), so that XLA and torch have the same single core.

Needs the `parity` extra (torch). On the small CNN of `workdir` and its torch twin
(`tests/fixtures/torch_twins.py`), one run prints JSON lines (the first is the environment):

- interval bounds: ours against a plain interval transcription in torch (the affine layers' centre
  through W and radius through |W|, ReLU and max pooling at both ends), bound for bound, and
  against auto_LiRPA's IBP when that package imports (said in the line);
- randomized smoothing: our CERTIFY against a torch transcription of Cohen et al.'s algorithm (one
  image at a time, noise in batches, `argmax` counts, the Clopper–Pearson bound at 2α two-sided),
  with the same n0, n and α: certified accuracy at each radius on both sides, and the share of
  images whose radii differ by more than four Monte-Carlo standard errors;
- auto_LiRPA's PyPI release (0.3) requires torch < 1.13 and numpy < 2 and does not import with the
  parity extra's torch, so the independent reference is the plain transcription; the line says so;
- speed, measured side by side (alternating, medians; benchmarks/side_by_side.py): CERTIFY of
  `--num_speed` images on both sides with equal n0, n and batch of draws, and interval bounds
  against one forward pass of the same batch and against the same bounds written by hand as one
  JAX program (what the jaxpr evaluator itself costs).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from absl import flags

from benchmarks.common import emit, parse_flags
from benchmarks.side_by_side import alternate
from jaxrobust.certify.bracket import clipped
from jaxrobust.certify import interval_bounds, smooth_certify
from jaxrobust.evaluation.accuracy import as_unit_float
from jaxrobust.machine import cpu_model
from jaxrobust.models import make_logits_fn
from jaxrobust.train.restore import load_trained

RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)


def torch_intervals(twin, x, eps):
  """Interval bounds of the small CNN twin, layer by layer, in torch (float32)."""
  import torch

  lo = torch.clamp(x - eps, 0, 1)
  hi = torch.clamp(x + eps, 0, 1)
  lo, hi = (lo - twin.mean) / twin.std, (hi - twin.mean) / twin.std

  def affine(layer, lo, hi, conv):
    c, r = (hi + lo) / 2, (hi - lo) / 2
    if conv:
      mid = torch.nn.functional.conv2d(c, layer.weight, layer.bias, padding=1)
      rad = torch.nn.functional.conv2d(r, layer.weight.abs(), None, padding=1)
    else:
      mid, rad = c @ layer.weight.T + layer.bias, r @ layer.weight.abs().T
    return mid - rad, mid + rad

  with torch.no_grad():
    for conv in (twin.conv1, twin.conv2):
      lo, hi = affine(conv, lo, hi, True)
      lo, hi = twin._pool(torch.relu(lo)), twin._pool(torch.relu(hi))
    lo = lo.permute(0, 2, 3, 1).reshape(lo.shape[0], -1)
    hi = hi.permute(0, 2, 3, 1).reshape(hi.shape[0], -1)
    lo, hi = affine(twin.fc1, lo, hi, False)
    lo, hi = affine(twin.fc2, torch.relu(lo), torch.relu(hi), False)
  return lo.numpy(), hi.numpy()


def hand_written_intervals(variables, x, eps, mean, std):
  """The same bounds as one hand-written JAX program for the small CNN: what the jaxpr evaluator
  should cost, for the speed comparison."""
  p = variables['params']
  conv = lambda a, w: jax.lax.conv_general_dilated(
    a, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  pool = lambda a: a.reshape(a.shape[0], a.shape[1] // 2, 2, a.shape[2] // 2, 2, a.shape[3]).max((2, 4))
  m, s = jnp.asarray(mean), jnp.asarray(std)
  lo, hi = (jnp.clip(x - eps, 0, 1) - m) / s, (jnp.clip(x + eps, 0, 1) - m) / s
  for name in ('Conv_0', 'Conv_1'):
    c, r = (lo + hi) / 2, (hi - lo) / 2
    mid, rad = conv(c, p[name]['kernel']) + p[name]['bias'], conv(r, jnp.abs(p[name]['kernel']))
    lo, hi = pool(jax.nn.relu(mid - rad)), pool(jax.nn.relu(mid + rad))
  lo, hi = lo.reshape(lo.shape[0], -1), hi.reshape(hi.shape[0], -1)
  for name in ('Dense_0', 'Dense_1'):
    c, r = (lo + hi) / 2, (hi - lo) / 2
    mid, rad = c @ p[name]['kernel'] + p[name]['bias'], r @ jnp.abs(p[name]['kernel'])
    lo, hi = mid - rad, mid + rad
    if name == 'Dense_0':
      lo, hi = jax.nn.relu(lo), jax.nn.relu(hi)
  return lo, hi


def lirpa_intervals(twin, x, eps):
  """auto_LiRPA's IBP bounds of the twin, or None when auto_LiRPA does not import or run."""
  try:
    import torch
    from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
  except Exception:  # noqa: BLE001 - any import failure means "not available"
    return None
  try:
    bm = BoundedModule(twin, torch.zeros_like(x[:1]))
    ptb = PerturbationLpNorm(
      norm=float('inf'), x_L=torch.clamp(x - eps, 0, 1), x_U=torch.clamp(x + eps, 0, 1)
    )
    lb, ub = bm.compute_bounds(x=(BoundedTensor(x, ptb),), method='IBP')
    return lb.detach().numpy(), ub.detach().numpy()
  except Exception as e:  # noqa: BLE001 - reported, not hidden
    return str(e)[:200]


class TorchSmooth:
  """Randomized smoothing's CERTIFY in torch, one image at a time (Cohen et al., Algorithm 1)."""

  def __init__(self, base, num_classes, sigma):
    self.base, self.num_classes, self.sigma = base, num_classes, sigma

  def _counts(self, x, num, batch):
    import torch

    counts = np.zeros(self.num_classes, dtype=np.int64)
    with torch.no_grad():
      while num > 0:
        b = min(batch, num)
        num -= b
        noisy = x.repeat((b, 1, 1, 1))
        noisy = noisy + torch.randn_like(noisy) * self.sigma
        pred = self.base(torch.clamp(noisy, 0, 1)).argmax(1).numpy()
        counts += np.bincount(pred, minlength=self.num_classes)
    return counts

  def certify(self, x, n0, n, alpha, batch):
    top = int(self._counts(x, n0, batch).argmax())
    n_a = int(self._counts(x, n, batch)[top])
    p = stats.beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0
    return (-1, 0.0) if p < 0.5 else (top, self.sigma * stats.norm.ppf(p))


def certified(pred, radius, y, radii=RADII):
  return [float(np.mean((pred == y) & (radius >= r))) for r in radii]


FLAGS = flags.FlagValues()
flags.DEFINE_string(
  'workdir',
  'runs/certified/fashion_mnist/gaussian_025',
  'a model trained under Gaussian noise',
  flag_values=FLAGS,
)
flags.DEFINE_float('sigma', 0.25, 'the smoothing σ', lower_bound=0.0, flag_values=FLAGS)
flags.DEFINE_integer('num_test', 200, 'test images certified', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('num_speed', 20, 'test images timed', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('n0', 100, 'selection draws', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('n', 10_000, 'estimation draws', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float('alpha', 0.001, 'failure probability', lower_bound=0.0, upper_bound=1.0, flag_values=FLAGS)
flags.DEFINE_integer('batch', 1000, 'noise draws per forward pass', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('seed', 0, "torch's seed", flag_values=FLAGS)
flags.DEFINE_string(
  'parts', 'intervals,smoothing,speed,cost', 'parts to run, comma-separated', flag_values=FLAGS
)


def main():
  F = parse_flags(FLAGS)
  parts = set(F.parts.split(','))
  import torch

  from tests.fixtures.torch_twins import small_cnn_from_flax

  torch.set_num_threads(1)
  workdir = F.workdir
  sigma, n0, n, alpha = F.sigma, F.n0, F.n, F.alpha
  num, num_speed, batch = F.num_test, F.num_speed, F.batch
  torch.manual_seed(F.seed)
  config, model, variables, ds = load_trained(workdir)
  x = np.asarray(as_unit_float(ds.test_images[:num]))
  y = np.asarray(ds.test_labels[:num])
  twin = small_cnn_from_flax(model, variables).eval()
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
  common = dict(workdir=workdir, model=config.model.name, cpu=cpu_model(), threads=1)

  if 'intervals' in parts:
    # ---- interval bounds, bound for bound
    for eps in (0.01, 0.1):
      ours = jax.jit(lambda v, z, e=eps: interval_bounds(model.apply, v, z, e))(variables, x)
      tl, tu = torch_intervals(twin, xt, eps)
      scale = float(np.abs(tu).max())
      row = dict(
        common,
        bench='interval_parity',
        epsilon=eps,
        images=num,
        reference='plain torch interval transcription',
        max_abs_diff=float(max(np.abs(ours.lower - tl).max(), np.abs(ours.upper - tu).max())),
        max_rel_diff=float(max(np.abs(ours.lower - tl).max(), np.abs(ours.upper - tu).max()) / scale),
      )
      lirpa = lirpa_intervals(twin, xt, eps)
      if isinstance(lirpa, tuple):
        row['auto_lirpa_max_abs_diff'] = float(
          max(np.abs(ours.lower - lirpa[0]).max(), np.abs(ours.upper - lirpa[1]).max())
        )
      else:
        row['auto_lirpa'] = 'not importable' if lirpa is None else f'failed: {lirpa}'
      emit(**row)

  f = clipped(make_logits_fn(model, variables))  # the base classifier experiments.certify certifies
  ek = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(num))
  sm = TorchSmooth(twin, 10, sigma)
  if 'smoothing' in parts:
    # ---- smoothing, certificate for certificate (independent noise: agreement within MC error)
    ours = [
      smooth_certify(
        f, ek[a : a + 100], x[a : a + 100], sigma=sigma, n0=n0, n=n, alpha=alpha, draws_per_pass=100
      )
      for a in range(0, num, 100)
    ]
    pred = np.concatenate([c.prediction for c in ours])
    rad = np.concatenate([c.radius for c in ours])
    p_ours = np.concatenate([c.p_lower for c in ours])
    ref = [sm.certify(xt[i : i + 1], n0, n, alpha, batch) for i in range(num)]
    pred_t, rad_t = np.array([r[0] for r in ref]), np.array([r[1] for r in ref])
    # one Monte-Carlo standard error of a radius: σ/φ(Φ⁻¹(p))·sqrt(p(1−p)/n), at our p
    p = np.clip(p_ours, 0.5, 1 - 1 / n)
    se = sigma / stats.norm.pdf(stats.norm.ppf(p)) * np.sqrt(p * (1 - p) / n) * math.sqrt(2)
    both = (pred >= 0) & (pred_t >= 0)
    emit(
      **common,
      bench='smoothing_parity',
      sigma=sigma,
      n0=n0,
      n=n,
      alpha=alpha,
      images=num,
      reference='torch transcription of Cohen et al. CERTIFY',
      certified_ours=certified(pred, rad, y),
      certified_reference=certified(pred_t, rad_t, y),
      radii=list(RADII),
      abstain_ours=float(np.mean(pred < 0)),
      abstain_reference=float(np.mean(pred_t < 0)),
      same_prediction=float(np.mean(pred == pred_t)),
      radius_beyond_4se=float(np.mean(np.abs(rad - rad_t)[both] > 4 * se[both] + 1e-3))
      if both.any()
      else None,
    )

  if 'speed' in parts:
    # ---- speed: equal work on both sides (same images, n0, n; draws in batches of `batch`)
    xs, xts = x[:num_speed], xt[:num_speed]
    eks = ek[:num_speed]
    timed = alternate(
      {
        'jaxrobust': lambda: smooth_certify(
          f, eks, xs, sigma=sigma, n0=n0, n=n, alpha=alpha, draws_per_pass=max(1, batch // num_speed)
        ),
        'torch_reference': lambda: [
          sm.certify(xts[i : i + 1], n0, n, alpha, batch) for i in range(num_speed)
        ],
      },
      repeats=3,
    )
    emit(
      **common,
      bench='smoothing_speed',
      images=num_speed,
      n0=n0,
      n=n,
      draws_per_forward=batch,
      jaxrobust_s=timed['jaxrobust']['median_s'],
      reference_s=timed['torch_reference']['median_s'],
      speedup=timed['torch_reference']['median_s'] / timed['jaxrobust']['median_s'],
      note='equal work: same images, n0, n, α and forward batch of noisy copies on both sides; one thread each',
    )

  if 'cost' in parts:
    # ---- interval bounds against one forward pass
    xb = x[:256] if len(x) >= 256 else np.resize(x, (256,) + x.shape[1:])
    fwd = jax.jit(lambda v, z: model.apply(v, z))
    ivb = jax.jit(lambda v, z: interval_bounds(model.apply, v, z, 0.1))
    hand = jax.jit(lambda v, z: hand_written_intervals(v, z, 0.1, model.mean, model.std))
    timed = alternate(
      {
        'forward': lambda: fwd(variables, xb),
        'interval_bounds': lambda: ivb(variables, xb),
        'hand_written': lambda: hand(variables, xb),
      },
      repeats=20,
    )
    emit(
      **common,
      bench='interval_cost',
      batch=256,
      forward_s=timed['forward']['median_s'],
      interval_s=timed['interval_bounds']['median_s'],
      hand_written_s=timed['hand_written']['median_s'],
      ratio=timed['interval_bounds']['median_s'] / timed['forward']['median_s'],
      hand_written_ratio=timed['hand_written']['median_s'] / timed['forward']['median_s'],
    )


if __name__ == '__main__':
  main()
