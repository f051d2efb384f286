"""The jaxlib releases that crash the WideResNet on the CPU: excluded by the package's metadata,
warned about at import, and (a long test) the study's model run in fresh processes."""

import json
import pathlib
import subprocess
import sys
import warnings

import pytest
from packaging.requirements import Requirement

from jaxrobust import known_crashes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_package_metadata_excludes_every_crashing_release():
  import tomllib

  deps = [
    Requirement(d) for d in tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['dependencies']
  ]
  for name in ('jax', 'jaxlib'):
    (req,) = [d for d in deps if d.name == name]
    for bad in known_crashes.CRASHING_JAXLIB:
      assert bad not in req.specifier, (name, bad, str(req))
    assert '0.10.1' in req.specifier and '0.12.0.1' in req.specifier


def test_a_crashing_jaxlib_is_warned_about_unless_ynn_fusion_is_off():
  with pytest.warns(
    RuntimeWarning,
    match=r'jaxlib 0.10.2 intermittently crashes.*XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=',
  ):
    assert known_crashes.warn_if_crashing('0.10.2', '')
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert not known_crashes.warn_if_crashing('0.10.1', '')
    assert not known_crashes.warn_if_crashing('0.11.0', '--foo --xla_cpu_experimental_ynn_fusion_type=')
    assert not known_crashes.warn_if_crashing('0.12.0.1', '')


@pytest.mark.long
def test_wrn16_4_forward_and_gradient_at_batch_128_survive_fresh_processes():
  """The study's WideResNet, forward and input gradient at batch 128, twice in each of three
  fresh processes under this process's XLA_FLAGS (the crash depends on the process's heap)."""
  done = subprocess.run(
    [
      sys.executable,
      str(ROOT / 'scripts' / 'wrn_crash.py'),
      '--net=wrn16_4',
      '--runs=3',
      '--calls=2',
      '--timeout=280',
    ],
    capture_output=True,
    text=True,
    timeout=900,
  )
  report = json.loads(done.stdout.strip().splitlines()[-1])
  assert report['crashes'] == 0 and done.returncode == 0, report
