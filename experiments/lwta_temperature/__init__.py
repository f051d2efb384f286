"""Does sampling fewer winners trade robustness for confidence? An LWTA model at several test-time
temperatures, and with argmax winners, under single-draw and EOT PGD (the study's Figure 4).

  python -m experiments.lwta_temperature --weights=results/published/fashion_mnist/lwta --num_test=1000

`--weights` is a published-weights folder or a training run's work directory. For each setting of
the same trained weights — the training temperature, lower ones, the
evaluation default (0.01) and argmax winners (`deterministic=True`, no sampling) — it measures
clean accuracy, PGD-20 accuracy with the attack and the prediction on one draw each (what the
study reports), EOT-PGD-20 accuracy (gradient averaged over `--eot` draws), and the mean max-softmax
confidence of the correct predictions, clean and attacked. Writes
<out>/<dataset>/{temperature.json, temperature.md} and figures/confidence_by_temperature.png (one
row of clean / PGD / EOT-PGD histograms per setting).
"""

from __future__ import annotations

import os


from jaxrobust import keys
from experiments import figures
from jaxrobust.evaluation import STANDARD_BUDGETS, examples_and_confidence
from jaxrobust.files import write_atomic
from jaxrobust.provenance import write_result_json
from jaxrobust.models import with_lwta_mode
from jaxrobust.evaluation.cache import digest
from jaxrobust.train.weights import load_model

TEMPERATURES = (0.67, 0.1, 0.01)


def settings(model) -> dict:
  """Label -> the same model sampling at that test temperature, then with argmax winners."""
  out = {f'T = {t:g}': with_lwta_mode(model, eval_temperature=t) for t in TEMPERATURES}
  out['argmax winners'] = model.clone(deterministic=True)
  return out


def run(
  weights: str, *, num_test: int = 1000, eot_samples: int = 8, out_dir: str = 'results/lwta_temperature'
):
  config, model, variables, ds = load_model(weights)
  b = STANDARD_BUDGETS[ds.name]
  pgd = dict(name='pgd', epsilon=b['linf'], step_size=b['linf_step'], num_steps=20)
  attacks = {'PGD-20': pgd, f'EOT{eot_samples}-PGD-20': dict(pgd, eot_samples=eot_samples)}
  n = min(num_test, len(ds.test_images))
  key = keys.eval_keys(keys.evaluation_key(config.seed)).study
  rows, conf, correct = [], {}, {}
  for label, m in settings(model).items():
    row = {'setting': label}
    for a_name, spec in attacks.items():
      ex = examples_and_confidence(m, variables, ds.test_images, ds.test_labels, spec, key=key, n=n)
      ok, ok_adv = ex['pred'] == ex['labels'], ex['pred_adv'] == ex['labels']
      row['clean'] = float(ok.mean())
      row['clean_confidence'] = float(ex['conf'][ok].mean())
      row[a_name] = float(ok_adv.mean())
      row[f'{a_name}_confidence'] = float(ex['conf_adv'][ok_adv].mean()) if ok_adv.any() else float('nan')
      conf[f'{label}: clean'], correct[f'{label}: clean'] = ex['conf'], ok
      conf[f'{label}: {a_name}'], correct[f'{label}: {a_name}'] = ex['conf_adv'], ok_adv
    rows.append(row)
    print(row, flush=True)
  names = list(attacks)
  lines = [
    '| setting | clean | '
    + ' | '.join(names)
    + ' | confidence clean | '
    + ' | '.join(f'confidence {a}' for a in names)
    + ' |',
    '|---' * (2 + 2 * len(names) + 1) + '|',
  ]
  for r in rows:
    accs = ' | '.join(f'{100 * r[a]:.1f}' for a in names)
    confs = ' | '.join(f'{r[f"{a}_confidence"]:.3f}' for a in names)
    lines.append(
      f'| {r["setting"]} | {100 * r["clean"]:.1f} | {accs} | {r["clean_confidence"]:.3f} | {confs} |'
    )
  table = '\n'.join(lines) + '\n'
  base = os.path.join(out_dir, ds.name)
  write_result_json(
    os.path.join(base, 'temperature.json'),
    {'weights': weights, 'model_digest': digest(variables), 'n': n, 'eot_samples': eot_samples, 'rows': rows},
  )
  write_atomic(os.path.join(base, 'temperature.md'), table)
  figures.confidence_histograms(
    os.path.join(base, 'figures', 'confidence_by_temperature.png'),
    conf,
    correct,
    title=f'{config.model.name} on {ds.name}: max-softmax confidence ({n} test images, ε = {b["linf"]:g})',
    ncols=1 + len(attacks),
  )
  return rows, table


def main(argv):
  del argv
  from absl import flags

  F = flags.FLAGS
  _, table = run(F.weights, num_test=F.num_test, eot_samples=F.eot, out_dir=F.out)
  print(table)


def command_line() -> None:
  """`python -m experiments.lwta_temperature`: the flags below, then the run (experiments/lwta_temperature/__main__.py)."""
  from absl import app, flags

  flags.DEFINE_string(
    'weights',
    'results/published/fashion_mnist/lwta',
    "an LWTA model's published-weights folder or its training run's work directory",
  )
  flags.DEFINE_integer('num_test', 1000, 'test images', lower_bound=1)
  flags.DEFINE_integer('eot', 8, 'EOT draws of the EOT-PGD attack', lower_bound=1)
  flags.DEFINE_string('out', 'results/lwta_temperature', 'results directory')
  app.run(main)
