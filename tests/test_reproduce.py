"""What produced a result is recorded with it, and a recorded Table 1 row can be rerun and
judged: bit for bit, to a tolerance, or not at all (experiments.reproduce)."""

import copy
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from experiments import reproduce
from jaxrobust import provenance

FIELDS = {
  'versions',
  'python',
  'xla_flags',
  'backend',
  'device_kind',
  'device_count',
  'cpu',
  'commit',
  'dirty',
}


def check_environment(env):
  assert FIELDS <= env.keys(), FIELDS - env.keys()
  assert set(env['versions']) == {'jax', 'jaxlib', 'flax', 'optax', 'numpy'}
  assert all(env['versions'].values())  # every one of them is installed here
  assert env['device_count'] == 4 and env['backend'] == 'cpu'  # conftest's simulated devices
  assert env['commit'] is None or len(env['commit']) == 40


def test_a_benchmark_prints_its_environment_before_its_first_row():
  code = 'from benchmarks.common import emit; emit(a=1); emit(a=2)'
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
  lines = [json.loads(line) for line in out.splitlines()]
  assert [list(x) for x in lines[:1]] == [['environment']] and [x.get('a') for x in lines[1:]] == [1, 2]
  env = lines[0]['environment']
  assert FIELDS <= env.keys() and env['device_count'] == 1  # a fresh process: one CPU device


def test_environment_differences_are_named():
  env = provenance.environment()
  assert provenance.compare_environments(env, env) == []
  other = copy.deepcopy(env)
  other['versions']['jaxlib'], other['xla_flags'], other['commit'] = '0.0.1', '--xla_foo', 'f' * 40
  diff = provenance.compare_environments(other, env)
  assert diff == [
    f'jaxlib: 0.0.1 → {env["versions"]["jaxlib"]}',
    f"xla_flags: '--xla_foo' → {env['xla_flags']!r}",
  ]
  assert provenance.compare_environments(None, env)[0].startswith('environment: not recorded')


@pytest.mark.parametrize(
  'content,match',
  [
    ('{not json', 'not a readable results file'),
    ('[1, 2]', 'not a Table 1 row record'),
    ('{"row": "regular", "dataset": "synthetic", "result": {}}', 'does not say how it was made'),
  ],
)
def test_check_reproduces_refuses_files_it_cannot_rerun(tmp_path, content, match):
  p = tmp_path / 'row.json'
  p.write_text(content)
  with pytest.raises(ValueError, match=match) as e:
    reproduce.check_reproduces(str(p), progress=False)
  assert str(p) in str(e.value)
  with pytest.raises(ValueError, match='tolerance'):
    reproduce.check_reproduces(str(p), tolerance=2.0)


def test_the_compilation_cache_is_pruned_oldest_first(tmp_path):
  import os

  from tests.conftest import prune_cache

  for i in range(5):
    p = tmp_path / f'entry{i}'
    p.write_bytes(b'x' * 100)
    os.utime(p, ns=(i * 10**9, i * 10**9))
  assert prune_cache(str(tmp_path), 250) == 300  # 500 bytes down to 200: the three oldest go
  assert sorted(p.name for p in tmp_path.iterdir()) == ['entry3', 'entry4']
  assert prune_cache(str(tmp_path), 250) == 0 and prune_cache(str(tmp_path / 'absent'), 0) == 0


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script(name: str):
  """A module of scripts/ (they are run from the repository root, not imported as a package)."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'scripts', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_committed_result_names_its_environment(monkeypatch):
  """Each results file records its environment, or is one of the files written before that
  existed, described (commit, CPU; versions said to be unknown) in results/LEGACY_ENVIRONMENTS.json."""
  legacy = _script('legacy_environments')
  monkeypatch.chdir(ROOT)
  manifest = json.load(open(legacy.OUT))
  unnamed = [p for p in legacy.result_files() if not legacy.records_environment(p) and p not in manifest]
  assert not unnamed, f'results without an environment record: {unnamed}'
  assert all(e['commit_added'] for e in manifest.values())


def _env(jaxlib):
  return {'environment': {'versions': {'jaxlib': jaxlib}}}


def test_the_lock_ledger_counts_what_the_files_say(tmp_path, monkeypatch):
  ledger = _script('lock_ledger')
  monkeypatch.chdir(tmp_path)
  files = {
    'results/study/a/new.json': {'accuracy': 0.5, **_env('0.10.1')},
    'results/study/a/old.json': {'accuracy': 0.5, **_env('0.10.2')},
    'results/study/a/older.json': {'accuracy': 0.5, **_env('0.10.2')},
    'results/study/a/bare.json': {'accuracy': 0.5},
    'results/bench.jsonl': [{'x': 1, **_env('0.10.2')}, {'x': 2, **_env('0.10.1')}],
    # A verdict under the lock for old.json; one under another jaxlib does not count.
    'results/study/checks/old.json': {
      'record': 'results/study/a/old.json',
      'verdict': 'not at all',
      'largest_difference': None,
      'largest_common_difference': 0.026,
      **_env('0.10.1'),
    },
    'results/study/checks/older.json': {
      'record': 'results/study/a/older.json',
      'verdict': 'x',
      **_env('0.9'),
    },
  }
  for path, value in files.items():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      f.write('\n'.join(map(json.dumps, value)) if path.endswith('.jsonl') else json.dumps(value))
  with open('requirements.lock', 'w') as f:
    f.write("jax==0.10.1 ; python_full_version < '3.12' \\\njaxlib==0.10.1 ; python_full_version < '3.12'\n")
  text = ledger.ledger(sorted(files), ledger.locked_jaxlib())
  assert '| `results/study/a` | 4 | 1 | 2 | 1 | 1 |' in text
  assert '| `results/bench.jsonl` | 1 | 0 | 1 | 0 | 0 |' in text  # judged by its first record
  assert '| all | 5 | 1 | 3 | 1 | 1 |' in text
  assert '| `results/study/a/old.json` | not at all |  | 2.6 | `results/study/checks/old.json` |' in text
  assert 'older.json` | x' not in text
  with open('requirements.lock', 'w') as f:
    f.write('numpy==2.0\n')
  with pytest.raises(ValueError, match='requirements.lock: no jaxlib pin'):
    ledger.locked_jaxlib()


def test_the_committed_lock_ledger_is_current(monkeypatch):
  """results/LOCK_LEDGER.md says what the committed results say (rerun scripts/lock_ledger.py)."""
  ledger = _script('lock_ledger')
  legacy = _script('legacy_environments')
  monkeypatch.chdir(ROOT)
  assert open(ledger.OUT).read() == ledger.ledger(legacy.result_files(), ledger.locked_jaxlib())


def test_per_point_scores_are_outcomes_not_accuracies():
  """A convergence record's per-point margins and measurements (and nested per-example scores)
  are compared as outcomes: a margin that moved by 0.7 logits is three changed outcomes, not a
  change of 70 accuracy points; the accuracies beside them still decide the verdict."""
  from jaxrobust import reproduce as verdicts

  rec = {
    'result': {'pgd': 0.7, 'per_example': {'scores': {'pgd': {'select_margin': [0.5, -1.0]}}}},
    'convergence': {
      'at_budget': 0.69,
      'robust_at_double_budget': [True, False, True],
      'scores_at_double_budget': {'select_margin': [0.1, -2.0, 3.0], 'measure_mean': [1.0, 0.0, 0.9]},
    },
  }
  assert verdicts.compare(rec, copy.deepcopy(rec)).verdict == verdicts.BIT_FOR_BIT
  moved = copy.deepcopy(rec)
  moved['convergence']['scores_at_double_budget']['select_margin'][0] = 0.8
  moved['convergence']['scores_at_double_budget']['measure_mean'][1] = 0.1
  moved['convergence']['robust_at_double_budget'][2] = False
  moved['result']['per_example']['scores']['pgd']['select_margin'][1] = -1.5
  r = verdicts.compare(rec, moved)
  assert (r.verdict, r.largest_difference, r.changed, r.changed_outcomes) == (
    verdicts.TO_A_TOLERANCE,
    0.0,
    {},
    4,
  )
  moved['convergence']['at_budget'] = 0.6
  r = verdicts.compare(rec, moved)
  assert r.verdict == verdicts.NOT_AT_ALL and list(r.changed) == ['convergence.at_budget']
