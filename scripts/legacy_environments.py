"""Writes results/LEGACY_ENVIRONMENTS.json: what is known of the environment of every committed
result written before results recorded their own (`jaxrobust.provenance`).

For each such file: the commit that first added it and the last commit that changed it (from git),
and the CPU if the file names one. The package versions and XLA flags of those runs were not
recorded and are said to be unknown, not guessed. Run from the repository root:

  python scripts/legacy_environments.py
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

sys.path.insert(0, os.getcwd())
from jaxrobust.files import write_json_atomic  # noqa: E402

OUT = os.path.join('results', 'LEGACY_ENVIRONMENTS.json')


# Records copied from an earlier commit of another path (the earlier weights' row records): their
# environment is that of the commit that wrote the original, not of the commit that copied them.
_EARLIER = 'results/converged/fashion_mnist/earlier_weights/'
COPIED_FROM = {
  _EARLIER + 'lwta.json': ('results/converged/fashion_mnist/rows/lwta.json', '04ae28e'),
  _EARLIER + 'pgd_at.json': ('results/converged/fashion_mnist/rows/pgd_at.json', 'eb0afc5'),
  _EARLIER + 'noise_injection.json': (
    'results/converged/fashion_mnist/rows/noise_injection.json',
    '43374f6',
  ),
  _EARLIER + 'smoothing_pgd_fgsm_cw_pni.json': (
    'results/converged/fashion_mnist/rows/smoothing_pgd_fgsm_cw_pni.json',
    'f359cb5',
  ),
}


def records(path: str) -> list:
  """The JSON values of a results file: each line of a .jsonl, each entry of a list, or the one."""
  with open(path) as f:
    if path.endswith('.jsonl'):
      return [json.loads(line) for line in f if line.strip()]
    d = json.load(f)
  return d if isinstance(d, list) else [d]


def records_environment(path: str) -> bool:
  """True when the file carries its own environment record (a list of records, as table1.json:
  each of them; JSON lines: the first)."""
  rs = records(path)
  if path.endswith('.jsonl'):
    rs = rs[:1]
  return bool(rs) and all(isinstance(r, dict) and 'environment' in r for r in rs)


def _ignored(path: str) -> bool:
  """True when git ignores `path` (a local run's output, never committed)."""
  return subprocess.run(['git', 'check-ignore', '-q', path]).returncode == 0


def result_files() -> list[str]:
  """Every committed results file that holds numbers (JSON, JSON lines); cached attack pieces
  are sealed with their settings instead and are not results."""
  files = glob.glob('results/**/*.json', recursive=True) + glob.glob('results/**/*.jsonl', recursive=True)
  # Committed files only: what a local run writes and git ignores (results/demo/) is no record.
  tracked = subprocess.run(['git', 'ls-files', 'results'], capture_output=True, text=True)
  if tracked.returncode == 0 and tracked.stdout:
    committed = set(tracked.stdout.split())
    files = [f for f in files if f in committed or not _ignored(f)]
  # Published weights (results/published/) are models, not results: their config.json and
  # SHA256SUMS describe them.
  return sorted(
    f for f in files if '/pieces/' not in f and not f.startswith('results/published/') and f != OUT
  )


def _git(*args) -> str:
  return subprocess.run(['git', *args], capture_output=True, text=True, check=True).stdout.strip()


def _cpu(path: str) -> str | None:
  with open(path) as f:
    text = f.read()
  for line in text.splitlines():
    try:
      d = json.loads(line)
    except json.JSONDecodeError:
      break
    if isinstance(d, dict) and isinstance(d.get('cpu'), str):
      return d['cpu']
  try:
    d = json.loads(text)
  except json.JSONDecodeError:
    return None
  return d.get('cpu') if isinstance(d, dict) and isinstance(d.get('cpu'), str) else None


def main():
  legacy = {}
  for path in result_files():
    if records_environment(path):
      continue
    copied = COPIED_FROM.get(path)
    if copied:
      original, commit = copied
      last = _git('log', '-1', '--format=%H %cI', commit, '--', original)
      added = [last]
    else:
      added = _git('log', '--diff-filter=A', '--format=%H %cI', '--', path).splitlines()
      last = _git('log', '-1', '--format=%H %cI', '--', path)
    first = (added[-1] if added else last).split()
    legacy[path] = {
      **({'copied_from': f'{copied[0]} at {copied[1]}'} if copied else {}),
      'commit_added': first[0] if first else None,
      'date_added': first[1] if len(first) > 1 else None,
      'commit_last_changed': last.split()[0] if last else None,
      'cpu': _cpu(path),
      'versions': 'not recorded (written before results recorded their environment)',
      'xla_flags': 'not recorded',
    }
  write_json_atomic(OUT, legacy, indent=1, sort_keys=True)
  print(f'{len(legacy)} legacy results described in {OUT}')


if __name__ == '__main__':
  main()
