"""Certified lower bounds of a trained model beside an attack's upper bound, in one command.

  python -m experiments.certify --workdir=runs/certified/fashion_mnist/gaussian_025 --method=smoothing --sigma=0.25
  python -m experiments.certify --workdir=runs/certified/fashion_mnist/interval --method=intervals

`--method=smoothing` certifies the Gaussian-smoothed classifier of the model (CERTIFY with n0
selection and n estimate draws at level α, `jaxrobust.certify.smooth_certify`) on the first
`num_test` test images, and again with `n_large` draws on the first `num_large`; beside each L2
radius it attacks the same smoothed classifier (PGD-L2 on the smoothed soft classifier with
`attack_samples` noise draws per step, SmoothAdv) and counts the attacked points whose plurality
over `predict_draws` fresh draws is still right: the empirical (upper) accuracy. The base
classifier is the model on its input clipped to [0, 1], as it saw its noisy inputs in training
(clipping is part of the base classifier, so the certificate holds as stated).

`--method=intervals` computes the verified L∞ accuracy from interval bounds
(`jaxrobust.certify.verified_accuracy`) over an ε grid and, as the upper bound, the accuracy under
PGD-20 at each ε and AutoAttack (standard) at `--autoattack_epsilon`.

Writes <out>/<row>_<method>.json (with the environment that produced it) and
<out>/figures/<row>_<method>.png: certified and empirical accuracy against the radius, the gap
shaded. A record that exists already is replaced only with `--force`, or when `--out` is given
explicitly (the default folder holds the committed results).

A stochastic model (PNI, LWTA: its traits say so) is refused: the certified rows are those of
deterministic models (docs/certification.md).
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from experiments import certified_table
from jaxrobust import keys
from jaxrobust.attacks import autoattack, pgd
from jaxrobust.certify import (
  certified_accuracy,
  class_counts,
  smooth_certify,
  smoothed_soft_logits,
  verified,
  interval_bounds,
)
from jaxrobust.evaluation.accuracy import as_unit_float
from jaxrobust.files import write_atomic
from jaxrobust.models import make_logits_fn, model_traits
from jaxrobust.provenance import write_result_json
from jaxrobust.train.restore import load_trained
from jaxrobust.train.weights import load_weights

OUT = os.path.join('results', 'certified')
RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)
EPSILONS = (0.0, 0.02, 0.05, 0.1, 0.15)


def clipped(logits_fn):
  """The base classifier on its input clipped to [0, 1] (how Gaussian augmentation trained it)."""
  return jax.tree_util.Partial(_clip_then, logits_fn)


def _clip_then(logits_fn, x, key):
  return logits_fn(jnp.clip(x, 0.0, 1.0), key)


def _batches(n, size):
  return [(i, min(i + size, n)) for i in range(0, n, size)]


def certify_smoothing(logits_fn, x, y, *, sigma, n0, n, alpha, key, batch=100, desc='certify'):
  """CERTIFY over the images in batches; each image's own key (`keys.example_keys`)."""
  ek = keys.example_keys(key, len(x))
  parts = [
    smooth_certify(logits_fn, ek[a:b], x[a:b], sigma=sigma, n0=n0, n=n, alpha=alpha)
    for a, b in tqdm(_batches(len(x), batch), desc=desc, leave=False)
  ]
  return type(parts[0])(*(np.concatenate(f) for f in zip(*parts)))


def smoothed_plurality_right(logits_fn, x, y, *, sigma, draws, key, batch=100) -> np.ndarray:
  """Per image: the plurality class of `draws` noisy copies is y (the smoothed classifier's
  answer without abstention)."""
  ek = keys.example_keys(key, len(x))
  counts = np.concatenate(
    [class_counts(logits_fn, ek[a:b], x[a:b], sigma=sigma, n=draws) for a, b in _batches(len(x), batch)]
  )
  return counts.argmax(1) == y


def run_smoothing(model, variables, x, y, args, ck: keys.CertifyKeys) -> dict:
  f = clipped(make_logits_fn(model, variables))
  sigma = args.sigma
  t0 = time.time()
  cert = certify_smoothing(f, x, y, sigma=sigma, n0=args.n0, n=args.n, alpha=args.alpha, key=ck.certify)
  t_cert = time.time() - t0
  m = args.num_large
  large = certify_smoothing(
    f, x[:m], y[:m], sigma=sigma, n0=args.n0, n=args.n_large, alpha=args.alpha, key=ck.large
  )
  small_on_m = certified_accuracy(type(cert)(*(a[:m] for a in cert)), y[:m], RADII)
  soft = smoothed_soft_logits(f, sigma=sigma, samples=args.attack_samples)
  attack = jax.jit(
    lambda k, xx, yy, eps: pgd(
      soft, k, xx, yy, epsilon=eps, norm='l2', num_steps=args.attack_steps, random_init=None
    )
  )
  na = args.num_attack
  empirical = []
  for r in tqdm(RADII, desc='SmoothAdv', leave=False):
    if r == 0:
      adv = x[:na]
    else:
      adv = np.concatenate(
        [
          np.asarray(attack(keys.batch_keys(ck.attack, a).attacks, x[a:b], y[a:b], r))
          for a, b in _batches(na, 50)
        ]
      )
    right = smoothed_plurality_right(f, adv, y[:na], sigma=sigma, draws=args.predict_draws, key=ck.predict)
    empirical.append(float(right.mean()))
  cert_on_na = certified_accuracy(type(cert)(*(a[:na] for a in cert)), y[:na], RADII)
  return {
    'method': 'smoothing',
    'sigma': sigma,
    'n0': args.n0,
    'n': args.n,
    'alpha': args.alpha,
    'num_test': len(x),
    'radii': list(RADII),
    'certified': certified_accuracy(cert, y, RADII).tolist(),
    'abstain_rate': float(np.mean(cert.prediction < 0)),
    'certify_s': t_cert,
    'large_n': {
      'n': args.n_large,
      'num_test': m,
      'certified': certified_accuracy(large, y[:m], RADII).tolist(),
      'certified_with_n': small_on_m.tolist(),
      'mean_radius_right': float(np.mean(np.where(large.prediction == y[:m], large.radius, 0.0))),
      'mean_radius_right_with_n': float(
        np.mean(np.where(cert.prediction[:m] == y[:m], cert.radius[:m], 0.0))
      ),
    },
    'empirical': {
      'attack': f'SmoothAdv: PGD-L2, {args.attack_steps} steps, {args.attack_samples} noise draws per step, no random start',
      'prediction': f'plurality of {args.predict_draws} fresh draws (no abstention)',
      'num_test': na,
      'accuracy': empirical,
      'certified_on_same_images': cert_on_na.tolist(),
    },
  }


def run_intervals(model, variables, x, y, args, ck: keys.CertifyKeys) -> dict:
  f = make_logits_fn(model, variables)
  bound = jax.jit(lambda v, xx, yy, eps: verified(interval_bounds(model.apply, v, xx, eps), yy))
  attack = jax.jit(lambda k, xx, yy, eps: pgd(f, k, xx, yy, epsilon=eps, num_steps=20, step_size=eps / 4))
  predict = jax.jit(lambda xx: jnp.argmax(f(xx, ck.predict), -1))
  ver, emp = [], []
  t0 = time.time()
  for eps in tqdm(EPSILONS, desc='intervals', leave=False):
    ok, right = [], []
    for a, b in _batches(len(x), 250):
      ok.append(np.asarray(bound(variables, x[a:b], y[a:b], eps)))
      adv = x[a:b] if eps == 0 else attack(keys.batch_keys(ck.attack, a).attacks, x[a:b], y[a:b], eps)
      right.append(np.asarray(predict(adv)) == y[a:b])
    ver.append(float(np.concatenate(ok).mean()))
    emp.append(float(np.concatenate(right).mean()))
  t_iv = time.time() - t0
  eps_aa = args.autoattack_epsilon
  aa_right = []
  for a, b in tqdm(_batches(len(x), 250), desc='AutoAttack', leave=False):
    adv, _ = autoattack(
      f, keys.batch_keys(ck.autoattack, a).attacks, x[a:b], y[a:b], epsilon=eps_aa, version='standard'
    )
    aa_right.append(np.asarray(predict(adv)) == y[a:b])
  i_aa = EPSILONS.index(eps_aa) if eps_aa in EPSILONS else None
  return {
    'method': 'intervals',
    'num_test': len(x),
    'epsilons': list(EPSILONS),
    'verified': ver,
    'empirical': {'attack': 'PGD-20, step ε/4, uniform random start', 'accuracy': emp},
    'autoattack': {
      'epsilon': eps_aa,
      'accuracy': float(np.concatenate(aa_right).mean()),
      'verified_at_same_epsilon': None if i_aa is None else ver[i_aa],
    },
    'seconds': t_iv,
  }


def plot_record(rec: dict, path: str) -> None:
  """The bracket figure of a certify record: lower and upper bound on the same images."""
  if rec['method'] == 'smoothing':
    e = rec['empirical']
    lower, upper, xs, xlabel = e['certified_on_same_images'], e['accuracy'], rec['radii'], 'L2 radius'
    lo_l, up_l = (
      f'certified (CERTIFY, n = {rec["n"]}, α = {rec["alpha"]})',
      'SmoothAdv on the smoothed classifier',
    )
    title = f'{rec["row"]}, σ = {rec["sigma"]:g}: {e["num_test"]} test images'
  else:
    lower, upper, xs, xlabel = rec['verified'], rec['empirical']['accuracy'], rec['epsilons'], 'ε (L∞)'
    lo_l, up_l = 'verified (interval bounds)', 'PGD-20'
    title = f'{rec["row"]}: {rec["num_test"]} test images'
  plot_bracket(
    path, xs, [100 * v for v in lower], [100 * v for v in upper], xlabel=xlabel, title=title,
    lower_label=lo_l, upper_label=up_l,
  )  # fmt: skip


def plot_bracket(path, xs, lower, upper, *, xlabel, title, lower_label, upper_label):
  """Certified (lower) and empirical (upper) accuracy against the radius, the gap shaded."""
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(5, 3.4))
  ax.fill_between(xs, lower, upper, color='tab:orange', alpha=0.25, label='where the truth lies')
  ax.plot(xs, upper, 'o-', color='tab:red', label=upper_label)
  ax.plot(xs, lower, 's-', color='tab:blue', label=lower_label)
  ax.set_xlabel(xlabel)
  ax.set_ylabel('accuracy (%)')
  ax.set_ylim(0, 100)
  ax.set_title(title, fontsize=9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  write_atomic(path, lambda fh: fig.savefig(fh, format='png', dpi=120))
  plt.close(fig)


def main(argv):
  del argv
  certify_run(FLAGS)


def certify_run(args) -> dict:
  """One certification from options named as the flags below (an absl FLAGS object or any
  namespace); returns the record it wrote."""
  if args.method not in ('smoothing', 'intervals'):
    raise ValueError(f"--method must be 'smoothing' or 'intervals', got {args.method!r}")
  if args.method == 'smoothing' and not (args.sigma and args.sigma > 0):
    raise ValueError(f'--sigma must be > 0 for --method=smoothing, got {args.sigma!r}')
  if bool(args.workdir) == bool(args.weights):
    raise ValueError('give either --workdir (a trained run) or --weights (a published-weights folder)')
  row = args.row or os.path.basename(os.path.normpath(args.workdir or args.weights))
  name = f'{row}_smoothing_sigma{args.sigma:g}' if args.method == 'smoothing' else f'{row}_intervals'
  if args.weights:
    config, model, variables, ds = load_weights(args.weights)
  else:
    config, model, variables, ds = load_trained(args.workdir)
  if model_traits(model).stochastic:
    raise ValueError(
      f'{args.workdir or args.weights}: model {config.model.name} is stochastic (its traits say it '
      f'draws noise in the forward pass); the certify command certifies deterministic models only.'
    )
  out = os.path.join(args.out, config.data.name)
  record = os.path.join(out, f'{name}.json')
  if os.path.exists(record) and args.out == OUT and not getattr(args, 'force', False):
    raise FileExistsError(
      f'{record} is a committed result: certifying again would replace it. Pass --force to replace '
      f'it, or --out=DIR to write elsewhere.'
    )
  n = min(args.num_test, len(ds.test_labels))
  x, y = np.asarray(as_unit_float(ds.test_images[:n])), np.asarray(ds.test_labels[:n])
  ck = keys.certify_keys(keys.eval_keys(keys.evaluation_key(config.seed)).certify)
  if args.method == 'smoothing':
    rec = run_smoothing(model, variables, x, y, args, ck)
  else:
    rec = run_intervals(model, variables, x, y, args, ck)
  rec.update(
    row=row,
    dataset=config.data.name,
    model=config.model.name,
    workdir=args.workdir,
    weights=args.weights,
    invocation='python -m experiments.certify ' + ' '.join(f'--{k}={getattr(args, k)}' for k in _FLAG_NAMES),
  )
  write_result_json(os.path.join(out, f'{name}.json'), rec, indent=1)
  plot_record(rec, os.path.join(out, 'figures', f'{name}.png'))
  certified_table.write(out)
  print(f'wrote {os.path.join(out, name)}.json and {os.path.join(out, "certified.md")}')
  return rec


_FLAG_NAMES = (
  'workdir',
  'weights',
  'method',
  'sigma',
  'num_test',
  'n0',
  'n',
  'alpha',
  'n_large',
  'num_large',
  'num_attack',
  'attack_steps',
  'attack_samples',
  'predict_draws',
  'autoattack_epsilon',
  'row',
  'out',
)

if __name__ == '__main__':
  from absl import app, flags

  flags.DEFINE_string('workdir', '', 'a trained run (config.json + checkpoints)')
  flags.DEFINE_string('weights', '', 'or a published-weights folder (weights.npz, config.json, SHA256SUMS)')
  flags.DEFINE_string('method', 'smoothing', "'smoothing' or 'intervals'")
  flags.DEFINE_float('sigma', 0.25, 'smoothing: σ of the noise')
  flags.DEFINE_integer('num_test', 500, 'test images (the first ones)', lower_bound=1)
  flags.DEFINE_integer('n0', 100, 'smoothing: selection draws', lower_bound=1)
  flags.DEFINE_integer('n', 10_000, 'smoothing: estimate draws', lower_bound=1)
  flags.DEFINE_float('alpha', 0.001, 'smoothing: failure probability')
  flags.DEFINE_integer(
    'n_large', 100_000, 'smoothing: estimate draws on the first num_large images', lower_bound=1
  )
  flags.DEFINE_integer('num_large', 50, 'smoothing: images certified with n_large draws', lower_bound=1)
  flags.DEFINE_integer('num_attack', 200, 'smoothing: images attacked at each radius', lower_bound=1)
  flags.DEFINE_integer('attack_steps', 20, 'smoothing: SmoothAdv PGD-L2 steps', lower_bound=1)
  flags.DEFINE_integer('attack_samples', 8, 'smoothing: noise draws per SmoothAdv step', lower_bound=1)
  flags.DEFINE_integer(
    'predict_draws', 1000, 'smoothing: draws that classify an attacked point', lower_bound=1
  )
  flags.DEFINE_float('autoattack_epsilon', 0.1, 'intervals: the ε of the AutoAttack column')
  flags.DEFINE_string('row', '', 'the row name in the results (default: the work directory name)')
  flags.DEFINE_string('out', OUT, 'results directory')
  flags.DEFINE_bool('force', False, 'replace an existing record in the default results directory')
  FLAGS = flags.FLAGS
  app.run(main)
