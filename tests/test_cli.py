"""The `jaxrobust` command, as a user runs it after `pip install`: from an empty folder, configs
by name or by file, fields changed strictly, a trained run evaluated and published."""

import json
import pathlib
import subprocess
import sys

import pytest

from jaxrobust import cli

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_configs_by_name_or_file_and_strict_overrides(tmp_path):
  c = cli.load_config('pgd_at:cifar10')
  assert c.data.name == 'cifar10' and c.train.objective == 'pgd_at'
  assert cli.load_config('lwta:fashion_mnist,quick').train.num_epochs == 1.0
  f = tmp_path / 'mine.py'
  f.write_text(
    'from jaxrobust import configs\n\ndef get_config(arg):\n  return configs.get("regular", arg)\n'
  )
  assert cli.load_config(f'{f}:synthetic').data.name == 'synthetic'
  cli.apply_overrides(c, ['train.num_epochs=2.5', 'seed=3'])
  assert c.train.num_epochs == 2.5 and c.seed == 3
  for bad, match in (
    ('train.num_epocs=2', "no field 'train.num_epocs'"),
    ('nothing.here=1', "no field 'nothing.here'"),
    ('seed', 'expected field=value'),
  ):
    with pytest.raises(ValueError, match=match):
      cli.apply_overrides(c, [bad])
  with pytest.raises(FileNotFoundError, match="no such config file 'absent.py'"):
    cli.load_config('absent.py')
  with pytest.raises(ValueError, match="unknown defense 'pgd'"):
    cli.load_config('pgd:cifar10')


@pytest.mark.long
def test_the_command_trains_evaluates_and_publishes_from_an_empty_folder(tmp_path):
  script = pathlib.Path(sys.executable).parent / 'jaxrobust'
  assert script.exists(), 'the console script is installed beside the interpreter'
  run = lambda *a: subprocess.run([str(script), *a], cwd=tmp_path, capture_output=True, text=True)  # noqa: E731
  assert run('--help').returncode == 0
  done = run('train', '--config=pgd_at:synthetic', '--workdir=run', '--set', 'train.num_steps=4', '--quiet')
  assert done.returncode == 0 and 'test accuracy' in done.stdout, done.stderr[-2000:]
  done = run('publish', '--workdir=run', '--out=pub')
  assert done.returncode == 0 and (tmp_path / 'pub' / 'SHA256SUMS').exists(), done.stderr[-2000:]
  published = str(ROOT / 'results' / 'published' / 'fashion_mnist' / 'pgd_at')
  done = run(
    'evaluate', f'--model={published}', '--num_test=8', '--steps_scale=0.1', '--quiet', '--out=e.json'
  )
  assert done.returncode == 0, done.stderr[-2000:]
  row = json.loads(done.stdout.strip().splitlines()[-1])
  assert 0.0 <= row['worst_case'] <= row['clean'] <= 1.0 and row['num_test'] == 8
  assert 'environment' in json.loads((tmp_path / 'e.json').read_text())
  done = run('train', '--config=pgd_at:synthetic', '--workdir=x', '--set', 'train.num_epocs=1')
  assert done.returncode == 2 and "no field 'train.num_epocs'" in done.stderr
  imported = subprocess.run([sys.executable, '-c', 'import experiments'], cwd=tmp_path, capture_output=True)
  assert imported.returncode != 0  # the wheel ships the library only
