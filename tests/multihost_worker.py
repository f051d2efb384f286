"""One process of the 2-process test: trains a few steps with shard_map and saves its parameters.

python tests/multihost_worker.py <process_id> <num_processes> <port> <workdir> <out.npz>
"""

import os
import sys

import jax

jax.config.update('jax_num_cpu_devices', 2)
jax.config.update('jax_cpu_collectives_implementation', 'gloo')


def main():
  pid, n, port, workdir, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
  os.environ['JAXROBUST_COORDINATOR'] = f'127.0.0.1:{port}'
  os.environ['JAXROBUST_NUM_PROCESSES'] = str(n)
  os.environ['JAXROBUST_PROCESS_ID'] = str(pid)
  from jaxrobust.train import distributed

  assert distributed.maybe_initialize(None)
  import numpy as np
  from tests.configs import tiny_parallel_config
  from jaxrobust.train import train_and_evaluate

  config = tiny_parallel_config()
  config.train.parallel = 'shard_map'
  res = train_and_evaluate(config, workdir, progress=False)
  leaves = jax.tree.leaves(res['state'].params)
  np.savez(out, *[np.asarray(l) for l in leaves], devices=jax.device_count(), processes=jax.process_count())


if __name__ == '__main__':
  main()
