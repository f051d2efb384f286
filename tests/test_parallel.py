"""Data-parallel training steps (shard_map, pmap) and multi-host lockstep."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxrobust import train
from jaxrobust.train.parallel import make_parallel_step
from tests.conftest import leaves
from tests.configs import tiny_parallel_config


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def single_device_run(tmp_path_factory):
  c = tiny_parallel_config()
  c.train.parallel = 'none'
  return train.train_and_evaluate(c, str(tmp_path_factory.mktemp('single')), progress=False)


@pytest.mark.long
@pytest.mark.parametrize('mode', ['shard_map', 'pmap'])
def test_data_parallel_step_equals_single_device(single_device_run, tmp_path, mode):
  assert jax.device_count() == 4
  c = tiny_parallel_config()
  c.train.parallel = mode
  r = train.train_and_evaluate(c, str(tmp_path), progress=False)
  for a, b in zip(leaves(single_device_run['state'].params), leaves(r['state'].params)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  for a, b in zip(leaves(single_device_run['state'].batch_stats), leaves(r['state'].batch_stats)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)  # BatchNorm statistics synced (pmean)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.mark.long
def test_two_processes_train_in_lockstep_like_one(single_device_run, tmp_path):
  port = _free_port()
  # The workers set their own device count; of the parent's XLA flags they keep only the
  # compile-speed one that `make test` sets.
  fast = [f for f in os.environ.get('XLA_FLAGS', '').split() if f.startswith('--xla_cpu_use_fusion_emitters')]
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS=' '.join(fast))
  procs = [
    subprocess.Popen(
      [
        sys.executable,
        os.path.join(ROOT, 'tests', 'multihost_worker.py'),
        str(p),
        '2',
        str(port),
        str(tmp_path / 'work'),
        str(tmp_path / f'p{p}.npz'),
      ],
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
    )
    for p in range(2)
  ]
  for p in procs:
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out.decode()[-3000:]
  runs = [np.load(tmp_path / f'p{p}.npz') for p in range(2)]
  assert int(runs[0]['processes']) == 2 and int(runs[0]['devices']) == 4
  params = [[r[f'arr_{i}'] for i in range(len(r.files) - 2)] for r in runs]
  for a, b in zip(*params):
    np.testing.assert_array_equal(a, b)  # lockstep: identical on both hosts
  for a, b in zip(params[0], leaves(single_device_run['state'].params)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)  # = one process on the global batch
  # Only process 0 wrote metrics.
  assert sum(1 for _ in open(tmp_path / 'work' / 'metrics.jsonl')) == 2


def test_unknown_parallel_mode_is_named():
  with pytest.raises(ValueError, match="unknown parallel mode 'dp'"):
    make_parallel_step(lambda ax: None, 'dp')
