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

from experiments import certified_table
from jaxrobust.certify.bracket import EPSILONS, RADII, SmoothingSettings, settings_from
from jaxrobust.evaluation.certified import certify_test_set, refuse_stochastic
from jaxrobust.files import write_atomic
from jaxrobust.provenance import write_result_json
from jaxrobust.train.restore import load_trained
from jaxrobust.train.weights import load_weights

OUT = os.path.join('results', 'certified')
__all__ = ['EPSILONS', 'RADII', 'certify_run', 'plot_record']


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
  settings = settings_from(args)
  if bool(args.workdir) == bool(args.weights):
    raise ValueError('give either --workdir (a trained run) or --weights (a published-weights folder)')
  row = args.row or os.path.basename(os.path.normpath(args.workdir or args.weights))
  name = f'{row}_smoothing_sigma{args.sigma:g}' if args.method == 'smoothing' else f'{row}_intervals'
  if args.weights:
    config, model, variables, ds = load_weights(args.weights)
  else:
    config, model, variables, ds = load_trained(args.workdir)
  refuse_stochastic(model, args.workdir or args.weights)  # before anything is written
  out = os.path.join(args.out, config.data.name)
  record = os.path.join(out, f'{name}.json')
  if os.path.exists(record) and args.out == OUT and not getattr(args, 'force', False):
    raise FileExistsError(
      f'{record} is a committed result: certifying again would replace it. Pass --force to replace '
      f'it, or --out=DIR to write elsewhere.'
    )
  num_test = min(args.num_test, len(ds.test_labels))
  rec = certify_test_set(model, variables, ds, settings, seed=config.seed, num_test=num_test)
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


# The flags the record's invocation names: the run, the method, every setting of both brackets.
_FLAG_NAMES = (
  ('workdir', 'weights', 'method', 'num_test')
  + SmoothingSettings._fields
  + ('autoattack_epsilon', 'row', 'out')
)


def command_line() -> None:
  """`python -m experiments.certify`: the flags below, then the run (experiments/certify/__main__.py)."""
  global FLAGS
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
