"""A tiny PGD-AT config on a BatchNorm model, shared by the parallel and multi-host tests."""
from experiments.configs.common import base_config


def tiny_parallel_config():
  c = base_config()
  c.data.name = 'synthetic'
  c.data.synthetic = dict(num_train=128, num_test=32, image_shape=(8, 8, 3), num_classes=4)
  c.model.name = 'wrn_tiny'
  c.train.objective = 'pgd_at'
  c.train.attack = dict(name='pgd', epsilon=0.05, step_size=0.02, num_steps=2)
  c.train.batch_size = 16
  c.train.num_steps = 3
  c.train.log_every = 3
  c.train.checkpoint_every = 3
  c.eval.batch_size = 32
  return c
