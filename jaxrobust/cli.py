"""The `jaxrobust` command: train, evaluate and publish from any folder after `pip install`.

  jaxrobust train --config=pgd_at:fashion_mnist --workdir=runs/pgd_at [--set train.num_epochs=2]
  jaxrobust train --config=my_config.py:arg --workdir=runs/mine
  jaxrobust evaluate --model=runs/pgd_at --suite=autoattack --num_test=1000 [--out=eval.json]
  jaxrobust certify --model=runs/gaussian_025 --method=smoothing --sigma=0.25 [--out=cert.json]
  jaxrobust certify --model=runs/interval --method=intervals --num_test=500
  jaxrobust reproduce --record=eval.json [--tolerance=0.02] [--verdict_out=verdict.json]
  jaxrobust reproduce --record=old.json --against=rerun.json   # a rerun made elsewhere: compare only
  jaxrobust publish --workdir=runs/pgd_at --out=published/pgd_at [--force] [--allow_older]

A config is named `defense:dataset[,variant...]` (`jaxrobust.configs.get`: every Table 1 defense on
fashion_mnist, cifar10 or synthetic) or given as a file (`path.py[:arg]`, whose `get_config(arg)`
returns an ml_collections config); `--set field=value` changes a field (strictly: an unknown field
is refused by name). `evaluate` and `certify` take a run's work directory or a published-weights
folder; `evaluate --out` writes a record that says how it was made, which `reproduce` trains and
evaluates again and compares (bit for bit, to a tolerance, or not at all). No command writes over
an existing file unless told to (`--force`). Every command says `--help`. The study's own scripts
(Table 1, the converged study) run from a checkout of the repository
(`python -m experiments.<study>`).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys


def load_config(spec: str):
  """The config a `--config` names: 'defense:dataset[,variant...]' or 'path.py[:arg]'.

  Raises:
    ValueError: for an unknown defense, dataset or variant, or a file without `get_config`.
    FileNotFoundError: for a config file that does not exist.
  """
  from jaxrobust import configs

  path, _, arg = spec.partition(':')
  if path.endswith('.py'):
    if not os.path.exists(path):
      raise FileNotFoundError(f'--config: no such config file {path!r}')
    module_spec = importlib.util.spec_from_file_location('user_config', path)
    if module_spec is None or module_spec.loader is None:
      raise ValueError(f'--config: {path} cannot be loaded as a Python module')
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, 'get_config'):
      raise ValueError(f'--config: {path} defines no get_config(arg)')
    return module.get_config(arg or None)
  dataset, *variants = (arg or 'fashion_mnist').split(',')
  return configs.get(path, dataset, *variants)


def apply_overrides(config, overrides: list[str]):
  """Sets each 'a.b.c=value' (a Python literal, or a string) on the config.

  Raises:
    ValueError: for an override without '=' or a field the config does not have.
  """
  for item in overrides:
    name, eq, raw = item.partition('=')
    if not eq:
      raise ValueError(f'--set {item!r}: expected field=value')
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    *parents, last = name.split('.')
    node = config
    for p in parents:
      if p not in node:
        raise ValueError(f'--set {item!r}: the config has no field {name!r}')
      node = node[p]
    if last not in node:
      raise ValueError(f'--set {item!r}: the config has no field {name!r}')
    node[last] = value
  return config


def _train(args) -> int:
  from jaxrobust.train import distributed, train_and_evaluate

  config = apply_overrides(load_config(args.config), args.set)
  distributed.maybe_initialize(config.distributed)
  out = train_and_evaluate(
    config,
    args.workdir,
    allow_config_change=args.allow_config_change,
    require_checksums=args.require_checksums,
    progress=not args.quiet,
  )
  print(f'test accuracy {out["test_accuracy"]:.4f} after {out["steps"]} steps; workdir {args.workdir}')
  return 0


def _evaluate(args) -> int:
  from jaxrobust.evaluation import EvalSpec, evaluate_test_set
  from jaxrobust.provenance import write_result_json
  from jaxrobust.train.weights import load_model

  spec = EvalSpec(dataset='synthetic', suite=args.suite, steps_scale=args.steps_scale, eot_samples=args.eot)
  config, model, variables, ds = load_model(args.model)
  from jaxrobust.reproduce import evaluation_invocation

  _refuse_existing(args.out, args.force)
  result = evaluate_test_set(
    model, variables, ds, spec, seed=args.seed, num_test=args.num_test, progress=not args.quiet
  )
  n = result['num_test']
  invocation = evaluation_invocation(
    args.model, suite=args.suite, num_test=n, steps_scale=args.steps_scale, eot=args.eot, seed=args.seed
  )
  record = {**result, 'source': {'model': os.path.abspath(args.model)}, 'invocation': invocation}
  numbers = {k: v for k, v in record.items() if isinstance(v, float)}
  print(json.dumps({'model': args.model, 'suite': args.suite, 'num_test': n, **numbers}))
  if args.out:
    write_result_json(args.out, record)
  return 0


def _refuse_existing(path: str, force: bool) -> None:
  """Raises FileExistsError for an existing output file without --force (checked before any work)."""
  if path and os.path.exists(path) and not force:
    raise FileExistsError(f'--out: {path} exists; pass --force to replace it')


def _certify(args) -> int:
  from jaxrobust.certify.bracket import settings_from
  from jaxrobust.evaluation.certified import certify_test_set
  from jaxrobust.provenance import write_result_json
  from jaxrobust.train.weights import load_model

  settings = settings_from(args)
  _refuse_existing(args.out, args.force)
  config, model, variables, ds = load_model(args.model)
  seed = config.seed if args.seed is None else args.seed
  record = certify_test_set(
    model, variables, ds, settings, seed=seed, num_test=args.num_test, source=f'--model={args.model}'
  )
  record.update(source={'model': os.path.abspath(args.model)}, seed=seed, model=config.model.name)
  summary = {k: record[k] for k in ('method', 'num_test') if k in record}
  if args.method == 'smoothing':
    summary.update(
      radii=record['radii'], certified=record['certified'], smoothadv=record['empirical']['accuracy']
    )
  else:
    summary.update(
      epsilons=record['epsilons'], verified=record['verified'], pgd=record['empirical']['accuracy']
    )
  print(json.dumps(summary))
  if args.out:
    write_result_json(args.out, record, indent=1)
  return 0


def _reproduce(args) -> int:
  from jaxrobust.provenance import write_result_json
  from jaxrobust.reproduce import compare, read_results_file, report, reproduce_evaluation, verdict_record

  _refuse_existing(args.verdict_out, args.force)
  if args.against:  # a rerun made elsewhere (any results file): compare, run nothing
    r = compare(read_results_file(args.record), read_results_file(args.against), tolerance=args.tolerance)
  else:
    r = reproduce_evaluation(
      args.record, tolerance=args.tolerance, scratch=args.scratch or None, progress=not args.quiet
    )
  print(report(args.record, r))
  if args.verdict_out:
    verdict = verdict_record(args.record, r, args.tolerance, against=args.against or None)
    write_result_json(args.verdict_out, verdict, indent=1)
  return 0 if r.verdict != 'not at all' else 1


def _publish(args) -> int:
  from jaxrobust.train.weights import publish

  print(f'published {publish(args.workdir, args.out, force=args.force, allow_older=args.allow_older)}')
  return 0


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog='jaxrobust', description=__doc__.split('\n\n')[0])
  sub = p.add_subparsers(dest='command', required=True)

  t = sub.add_parser('train', help='train a defense from a config (by name or file)')
  t.add_argument('--config', required=True, help="'defense:dataset[,variant]' or 'path.py[:arg]'")
  t.add_argument('--workdir', required=True, help='checkpoints and metrics go here (resumed if present)')
  t.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE', help='change a config field')
  t.add_argument(
    '--allow_config_change', action='store_true', help='resume a workdir trained from another config'
  )
  t.add_argument('--require_checksums', action='store_true', help='refuse a checkpoint without a checksum')
  t.add_argument('--quiet', action='store_true', help='no progress bar')
  t.set_defaults(run=_train)

  e = sub.add_parser('evaluate', help='attack a trained run or published weights')
  e.add_argument('--model', required=True, help="a run's work directory or a published-weights folder")
  e.add_argument(
    '--suite', default='standard', help='study, standard, autoattack, autoattack_rand or adaptive'
  )
  e.add_argument('--num_test', type=int, default=1000, help='the first test images (0: all)')
  e.add_argument('--steps_scale', type=float, default=1.0, help="scale every attack's iterations")
  e.add_argument('--eot', type=int, default=8, help='EOT draws per gradient (stochastic models)')
  e.add_argument('--seed', type=int, default=0, help='the evaluation seed')
  e.add_argument(
    '--out', default='', help='also write the record (JSON, with its environment and how it was made) here'
  )
  e.add_argument('--force', action='store_true', help='replace an existing --out file')
  e.add_argument('--quiet', action='store_true', help='no progress bars')
  e.set_defaults(run=_evaluate)

  c = sub.add_parser(
    'certify', help='a certified lower bound beside an attack (smoothing or interval bounds)'
  )
  c.add_argument('--model', required=True, help="a run's work directory or a published-weights folder")
  c.add_argument('--method', required=True, choices=('smoothing', 'intervals'))
  c.add_argument('--num_test', type=int, default=500, help='the first test images (0: all)')
  c.add_argument('--sigma', type=float, default=0.25, help='smoothing: σ of the noise')
  c.add_argument('--n0', type=int, default=100, help="smoothing: CERTIFY's selection draws")
  c.add_argument('--n', type=int, default=10_000, help="smoothing: CERTIFY's estimate draws")
  c.add_argument('--alpha', type=float, default=0.001, help='smoothing: failure probability')
  c.add_argument('--n_large', type=int, default=100_000, help='smoothing: estimate draws on the first images')
  c.add_argument('--num_large', type=int, default=50, help='smoothing: images certified with n_large draws')
  c.add_argument('--num_attack', type=int, default=200, help='smoothing: images SmoothAdv attacks')
  c.add_argument('--attack_steps', type=int, default=20, help='smoothing: SmoothAdv PGD-L2 steps')
  c.add_argument('--attack_samples', type=int, default=8, help='smoothing: noise draws per SmoothAdv step')
  c.add_argument(
    '--predict_draws', type=int, default=1000, help='smoothing: draws that classify an attacked point'
  )
  c.add_argument('--autoattack_epsilon', type=float, default=0.1, help='intervals: the ε of AutoAttack')
  c.add_argument('--seed', type=int, default=None, help="the evaluation seed (default: the config's)")
  c.add_argument('--out', default='', help='write the record (JSON, with its environment) here')
  c.add_argument('--force', action='store_true', help='replace an existing --out file')
  c.set_defaults(run=_certify)

  r = sub.add_parser(
    'reproduce', help='train and evaluate again from an evaluation record (or take another), and compare'
  )
  r.add_argument('--record', required=True, help='a record written by `jaxrobust evaluate --out`')
  r.add_argument(
    '--against',
    default='',
    help='compare --record with this results file (a rerun made elsewhere) instead of rerunning it',
  )
  r.add_argument('--tolerance', type=float, default=0.02, help='largest accuracy change (fraction) allowed')
  r.add_argument('--scratch', default='', help='where the rerun trains (default: a temporary folder)')
  r.add_argument('--verdict_out', default='', help='also write the verdict (JSON, with the environment)')
  r.add_argument('--force', action='store_true', help='replace an existing --verdict_out file')
  r.add_argument('--quiet', action='store_true', help='no progress bars')
  r.set_defaults(run=_reproduce)

  b = sub.add_parser('publish', help="write a run's weights as a checksummed folder")
  b.add_argument('--workdir', required=True, help='a trained run')
  b.add_argument('--out', required=True, help='the folder to write')
  b.add_argument('--force', action='store_true', help='replace a folder that holds published weights')
  b.add_argument(
    '--allow_older', action='store_true', help='publish the newest intact step if the final one is damaged'
  )
  b.set_defaults(run=_publish)
  return p


def main(argv: list[str] | None = None) -> int:
  args = parser().parse_args(argv)
  if getattr(args, 'num_test', 0) < 0:
    parser().error(f'--num_test must be >= 0, got {args.num_test}')
  try:
    return args.run(args)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    print(f'jaxrobust {args.command}: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
