"""Tiny training configs shared by the tests and the multi-host worker (no JAX set-up here)."""


def synthetic_training_config():
  """A tiny, fast training config on the synthetic dataset."""
  from jaxrobust.train import default_config

  c = default_config()
  c.data.name = 'synthetic'
  c.data.synthetic = dict(num_train=256, num_test=128, image_shape=(8, 8, 1), num_classes=4)
  c.model.kwargs = dict(width=1)
  c.train.batch_size = 32
  c.train.num_steps = 8
  c.train.learning_rate = 0.05
  c.train.log_every = 4
  c.train.checkpoint_every = 4
  return c


def tiny_parallel_config():
  """A tiny PGD-AT config on a BatchNorm model, shared by the parallel and multi-host tests."""
  from jaxrobust.train import default_config

  c = default_config()
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
