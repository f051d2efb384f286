"""Test set-up: 4 simulated CPU devices (before JAX initialises), quiet logs, shared fixtures."""
import os

os.environ.setdefault('XLA_FLAGS', '')
import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 4)
# Compile time dominates these tiny tests; XLA's heavy optimisations are not worth it here.
jax.config.update('jax_disable_most_optimizations', True)

import logging  # noqa: E402

import absl.logging  # noqa: E402
import pytest  # noqa: E402

absl.logging.set_verbosity(absl.logging.WARNING)
logging.getLogger('absl').setLevel(logging.WARNING)


@pytest.fixture
def synthetic_config():
  """A tiny, fast training config on the synthetic dataset."""
  from experiments.configs.common import base_config
  c = base_config()
  c.data.name = 'synthetic'
  c.data.synthetic = dict(num_train=256, num_test=128, image_shape=(8, 8, 1), num_classes=4)
  c.model.kwargs = dict(width=1)
  c.train.batch_size = 32
  c.train.num_steps = 8
  c.train.learning_rate = 0.05
  c.train.log_every = 4
  c.train.checkpoint_every = 4
  return c
