"""Times `make test` from a fresh clone, set-up included, with a cold and then a warm compilation
cache, and records the ten slowest tests of each run (docs/performance.md).

  python scripts/suite_time.py --label=after [--rev=HEAD] [--runs=cold,warm]
  python scripts/suite_time.py --report    # the results file as the table in docs/performance.md

Each run is one `make test` in a clone of `--rev` made for it (its own `.venv`, installed from the
lock as CI does; pip's download cache is the machine's), with `JAXROBUST_TEST_CACHE` pointing at a
folder of the clone: empty for 'cold', left by the cold run for 'warm'. Appends one JSON line per
run to results/test_suite/durations.jsonl: the wall time of `make test`, pytest's own time, the
ten slowest tests (set-up + call + teardown), the pass counts, the clone's versions and test XLA
flags, the load average before and after, and the environment of this script's process.
Wall times are of this machine only; compare runs of one file, made one after the other.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())
from jaxrobust.files import write_atomic  # noqa: E402
from jaxrobust.provenance import cpu_model, with_environment  # noqa: E402

OUT = os.path.join('results', 'test_suite', 'durations.jsonl')
DURATION = re.compile(r'^\s*([\d.]+)s (setup|call|teardown)\s+(\S+)')
SUMMARY = re.compile(r'(\d+) passed(?:, (\d+) (?:xfailed|skipped))?.* in ([\d.]+)s')


VERSIONS = 'import sys, jax, jaxlib, flax; print(sys.version.split()[0], jax.__version__, jaxlib.__version__, flax.__version__)'


def slowest(output: str, k: int = 10) -> list[dict]:
  """The k tests with the largest set-up + call + teardown time in pytest's --durations output."""
  total = collections.Counter()
  for line in output.splitlines():
    m = DURATION.match(line)
    if m:
      total[m.group(3)] += float(m.group(1))
  return [{'test': t, 'seconds': round(s, 2)} for t, s in total.most_common(k)]


def run_make_test(clone: str, cache: str) -> dict:
  env = dict(os.environ, JAXROBUST_TEST_CACHE=cache, PYTEST_ARGS='--durations=0 --durations-min=0.5')
  load0 = os.getloadavg()[0]
  t0 = time.perf_counter()
  done = subprocess.run(['make', 'test'], cwd=clone, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - t0
  out = done.stdout + done.stderr
  m = SUMMARY.search(out)
  return {
    'returncode': done.returncode,
    'make_test_s': round(wall, 1),
    'pytest_s': float(m.group(3)) if m else None,
    'passed': int(m.group(1)) if m else None,
    'slowest': slowest(out),
    'load_1min_before_after': [round(load0, 2), round(os.getloadavg()[0], 2)],
  }


def report(path: str = OUT) -> str:
  """The results file as Markdown: each run's times, then its ten slowest tests side by side."""
  runs = [json.loads(line) for line in open(path) if line.strip()]
  head = ' | '.join(f'{r["label"]}, {r["run"]} ({r["commit"][:7]})' for r in runs)
  lines = [
    f'| | {head} |',
    '|---' * (len(runs) + 1) + '|',
    '| `make test`, set-up included | ' + ' | '.join(f'{r["make_test_s"]:.0f} s' for r in runs) + ' |',
    '| pytest | ' + ' | '.join(f'{r["pytest_s"]:.0f} s, {r["passed"]} tests' for r in runs) + ' |',
  ]
  for i in range(10):
    cells = []
    for r in runs:
      t = r['slowest'][i] if i < len(r['slowest']) else None
      cells.append(f'`{t["test"].split("::")[-1][:60]}` {t["seconds"]:.1f} s' if t else '')
    lines.append(f'| slowest {i + 1} | ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--report', action='store_true', help='print the results file as Markdown and stop')
  parser.add_argument('--label', help="what this measures, e.g. 'before' or 'after'")
  parser.add_argument('--rev', default='HEAD', help='the commit to clone')
  parser.add_argument('--runs', default='cold,warm', help="'cold', 'warm' or both, in order")
  args = parser.parse_args()
  if args.report:
    print(report())
    return
  if not args.label:
    parser.error('--label is required to measure')
  rev = subprocess.run(
    ['git', 'rev-parse', args.rev], capture_output=True, text=True, check=True
  ).stdout.strip()
  with tempfile.TemporaryDirectory(prefix='suite-time-') as tmp:
    clone = os.path.join(tmp, 'clone')
    subprocess.run(['git', 'clone', '-q', os.getcwd(), clone], check=True)
    subprocess.run(['git', 'checkout', '-q', rev], cwd=clone, check=True)
    cache = os.path.join(tmp, 'xla-cache')
    lines = []
    for run in args.runs.split(','):
      r = run_make_test(clone, cache)
      r.update(label=args.label, run=run, commit=rev, cpu=cpu_model(), cores=os.cpu_count())
      r['versions'] = subprocess.run(
        [os.path.join(clone, '.venv', 'bin', 'python'), '-c', VERSIONS], capture_output=True, text=True
      ).stdout.strip()
      flags = [ln for ln in open(os.path.join(clone, 'Makefile')) if ln.startswith('TEST_XLA_FLAGS')]
      r['xla_flags'] = flags[0].split('=', 1)[1].strip() if flags else ''
      r = with_environment(r)  # this process's: the script's commit and machine
      print(json.dumps(r), flush=True)
      lines.append(json.dumps(r))
  old = open(OUT).read() if os.path.exists(OUT) else ''
  write_atomic(OUT, old + ''.join(line + '\n' for line in lines))


if __name__ == '__main__':
  main()
