"""PGD-10 under two jaxlib releases (or two XLA_FLAGS settings), side by side in one run.

  python -m benchmarks.jaxlib_versions \
    --settings='/venvs/0.10.1/bin/python|;/venvs/0.10.2/bin/python|;/venvs/0.10.2/bin/python|--xla_cpu_experimental_ynn_fusion_type='

A setting is `interpreter|XLA_FLAGS` (settings separated by ';'): the interpreter of a virtual
environment holding jaxrobust and one jaxlib release, and the flags its process starts with. The
settings alternate, one fresh process per setting and round; a process times PGD-10 (L∞,
ε = 8/255, step 2/255, random start, batch 128) on WRN-16-4 (32×32×3, random weights) and on the
small CNN (28×28×1): one warm-up call, then the median of `--repeats` calls. The parent prints
one JSON line per process and a summary line per setting and model: the median over rounds, and
each setting's time as a ratio of the first setting's. Equal work on both sides: the same
programs, inputs, keys and batch.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess

from absl import flags

from benchmarks.common import emit, parse_flags

MODELS = {'wrn16_4': (32, 32, 3), 'small_cnn': (28, 28, 1)}


def child(repeats: int) -> None:
  """One process: the median PGD-10 seconds of each model, as one JSON line."""
  import jax

  from benchmarks.side_by_side import alternate
  from jaxrobust.attacks import pgd
  from jaxrobust.machine import cpu_model
  from jaxrobust.models import create_model, make_logits_fn

  seconds = {}
  for name, shape in MODELS.items():
    model = create_model(name, num_classes=10)
    x = jax.random.uniform(jax.random.key(0), (128, *shape))
    y = jax.random.randint(jax.random.key(1), (128,), 0, 10)
    f = make_logits_fn(model, jax.jit(model.init)(jax.random.key(2), x[:2]))
    attack = jax.jit(lambda f, k, x, y: pgd(f, k, x, y, epsilon=8 / 255, step_size=2 / 255, num_steps=10))
    key = jax.random.key(3)
    seconds[name] = alternate({'pgd': lambda: attack(f, key, x, y)}, repeats)['pgd']['median_s']
  import jaxlib

  print(
    json.dumps(
      {
        'jaxlib': jaxlib.__version__,
        'xla_flags': os.environ.get('XLA_FLAGS', ''),
        'cpu': cpu_model(),
        'seconds': seconds,
      }
    ),
    flush=True,
  )


FLAGS = flags.FlagValues()
flags.DEFINE_string('settings', '', "two or more 'python|XLA_FLAGS', separated by ';'", flag_values=FLAGS)
flags.DEFINE_integer('rounds', 3, 'rounds over the settings (alternating)', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 3, 'timed calls per model in each process', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_bool('child', False, 'internal: one fresh process timing the models', flag_values=FLAGS)


def main() -> None:
  F = parse_flags(FLAGS)
  repeats = F.repeats
  if F.child:
    child(repeats)
    return
  settings = [tuple(s.split('|', 1)) for s in F.settings.split(';') if s]
  if len(settings) < 2 or any(len(s) != 2 or not s[0] for s in settings):
    raise SystemExit("give two or more --settings='python|XLA_FLAGS;python|XLA_FLAGS'")
  times: dict[int, dict[str, list[float]]] = {i: {m: [] for m in MODELS} for i in range(len(settings))}
  labels = {}
  for r in range(F.rounds):
    for i, (python, xla_flags) in enumerate(settings):
      env = {**os.environ, 'XLA_FLAGS': xla_flags}
      out = subprocess.run(
        [python, '-m', 'benchmarks.jaxlib_versions', '--child=1', f'--repeats={repeats}'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
      )
      row = json.loads(out.stdout.strip().splitlines()[-1])
      labels[i] = f'jaxlib {row["jaxlib"]}, XLA_FLAGS={row["xla_flags"]!r}'
      emit(round=r, setting=labels[i], python=python, **row)
      for m in MODELS:
        times[i][m].append(row['seconds'][m])
  for m in MODELS:
    base = statistics.median(times[0][m])
    for i in times:
      med = statistics.median(times[i][m])
      emit(
        summary=m,
        attack='PGD-10, batch 128',
        setting=labels[i],
        median_s=med,
        ratio_to_first=med / base,
        rounds=len(times[i][m]),
      )


if __name__ == '__main__':
  main()
