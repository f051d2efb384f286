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


@pytest.mark.long
def test_evaluate_writes_a_record_that_reproduce_reruns_and_judges(tmp_path, capsys):
  """`evaluate --out` records how it was made; `reproduce` trains and evaluates again from it: the
  same program on the same machine gives the same bits; a record whose number was changed does
  not reproduce (exit 1); an existing file is never replaced without --force."""
  run, out = str(tmp_path / 'run'), str(tmp_path / 'e.json')
  assert (
    cli.main(
      ['train', '--config=regular:synthetic', f'--workdir={run}', '--set', 'train.num_steps=3', '--quiet']
    )
    == 0
  )
  evaluate = ['evaluate', f'--model={run}', '--num_test=8', '--steps_scale=0.05', '--suite=study', '--quiet']
  assert cli.main([*evaluate, f'--out={out}']) == 0
  record = json.loads(pathlib.Path(out).read_text())
  assert (
    record['invocation']['evaluate']['num_test'] == 8
    and record['invocation']['config']['data']['name'] == 'synthetic'
  )
  assert cli.main([*evaluate, f'--out={out}']) == 2 and 'exists; pass --force' in capsys.readouterr().err
  assert cli.main(['reproduce', f'--record={out}', '--quiet']) == 0
  assert 'reproduces bit for bit' in capsys.readouterr().out
  record['clean'] = record['clean'] + 0.5 if record['clean'] < 0.5 else record['clean'] - 0.5
  pathlib.Path(out).write_text(json.dumps(record))
  verdict = str(tmp_path / 'v.json')
  assert cli.main(['reproduce', f'--record={out}', '--quiet', f'--verdict_out={verdict}']) == 1
  assert json.loads(pathlib.Path(verdict).read_text())['verdict'] == 'not at all'
  (tmp_path / 'bad.json').write_text('{"clean": 0.5}')
  assert cli.main(['reproduce', f'--record={tmp_path / "bad.json"}']) == 2
  assert 'says how it was made' in capsys.readouterr().err


def test_reproduce_against_compares_two_records_and_runs_nothing(tmp_path, capsys):
  """`reproduce --against` judges a rerun made elsewhere: wall times are not compared, a moved
  accuracy within the tolerance is 'to a tolerance', beyond it 'not at all' (exit 1), and the
  verdict names both files."""
  rec = {'verified': [0.8, 0.72], 'autoattack': 0.736, 'num_test': 500, 'seconds': 22.9, 'certify_s': 3.0}
  a, b, verdict = tmp_path / 'a.json', tmp_path / 'b.json', tmp_path / 'v.json'
  a.write_text(json.dumps(rec))
  b.write_text(json.dumps(dict(rec, seconds=99.0, certify_s=50.0)))
  assert cli.main(['reproduce', f'--record={a}', f'--against={b}']) == 0
  assert 'reproduces bit for bit' in capsys.readouterr().out
  b.write_text(json.dumps(dict(rec, verified=[0.8, 0.71])))
  assert cli.main(['reproduce', f'--record={a}', f'--against={b}', f'--verdict_out={verdict}']) == 0
  v = json.loads(verdict.read_text())
  assert (
    v['verdict'] == 'to a tolerance'
    and v['against'] == str(b)
    and v['changed'] == {'verified[1]': [0.72, 0.71]}
  )
  b.write_text(json.dumps(dict(rec, autoattack=0.70)))
  assert cli.main(['reproduce', f'--record={a}', f'--against={b}']) == 1
  assert 'reproduces not at all' in capsys.readouterr().out


@pytest.mark.long
def test_certify_brackets_a_published_model_and_refuses_a_stochastic_one(tmp_path, capsys):
  """Randomized smoothing's certificate on the published Gaussian σ = 0.25 weights: at every radius
  the certified accuracy lies below SmoothAdv's on the same images (a lower bound under an upper
  one), and both fall as the radius grows. The PNI weights are refused by name, writing nothing."""
  published = ROOT / 'results' / 'published' / 'fashion_mnist'
  small = ['--num_test=16', '--n0=10', '--n=200', '--n_large=400', '--num_large=4', '--num_attack=16']
  small += ['--attack_steps=3', '--attack_samples=2', '--predict_draws=50', '--alpha=0.01']
  out = tmp_path / 'c.json'
  args = ['certify', f'--model={published / "gaussian_025"}', '--method=smoothing', '--sigma=0.25', *small]
  assert cli.main([*args, f'--out={out}']) == 0
  rec = json.loads(out.read_text())
  lower, upper = rec['empirical']['certified_on_same_images'], rec['empirical']['accuracy']
  assert all(lo <= up for lo, up in zip(lower, upper)), (lower, upper)
  assert lower == sorted(lower, reverse=True) and rec['certified'][0] > 0.5
  assert 'environment' in rec and rec['source']['model'].endswith('gaussian_025')
  refused = tmp_path / 'pni.json'
  assert (
    cli.main(
      ['certify', f'--model={published / "noise_injection"}', '--method=intervals', f'--out={refused}']
    )
    == 2
  )
  assert 'is stochastic' in capsys.readouterr().err and not refused.exists()
  assert cli.main([*args, '--sigma=0']) == 2 and 'sigma must be > 0' in capsys.readouterr().err
  assert (
    cli.main([*args, '--num_test=100000']) == 2
    and 'num_test must be an integer in [0, 10000]' in capsys.readouterr().err
  )
