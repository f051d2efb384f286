"""The base config every experiment config starts from (Fashion-MNIST, small CNN, clean)."""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = ml_collections.ConfigDict(dict(
      name='fashion_mnist', data_dir='', num_train=0, num_test=0,   # 0 = the whole split
      augment=dict(pad=0, flip=False),                               # off for Fashion-MNIST
      synthetic=dict()))
  c.model = ml_collections.ConfigDict(dict(name='small_cnn', normalize='dataset', kwargs=dict()))
  c.train = ml_collections.ConfigDict(dict(
      objective='clean', batch_size=128, num_epochs=1.0, num_steps=0,
      optimizer='sgd', learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
      schedule='cosine', boundaries_epochs=(), schedule_factor=0.1, no_decay=('noise_scale',),
      label_smoothing=0.0, parallel='none', log_every=50, checkpoint_every=0, keep_checkpoints=3,
      stop_at_step=0,
      # Mixed training's branch: 'switch' (inside the program), 'host' (one program per branch,
      # chosen from the same key), 'auto' (host on the CPU, where conditionals are slow).
      branch_dispatch='auto'))
  c.eval = ml_collections.ConfigDict(dict(batch_size=500))
  return c
