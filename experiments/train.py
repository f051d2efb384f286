"""Train a model from an ml_collections config.

  python -m experiments.train --config=experiments/configs/fashion_mnist_cnn.py \
      --workdir=runs/cnn --config.seed=1 --config.train.num_epochs=2
"""

from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file(
  'config', 'experiments/configs/fashion_mnist_cnn.py', 'Experiment config file.', lock_config=True
)
flags.DEFINE_string('workdir', 'runs/default', 'Directory for checkpoints and metrics.')
flags.DEFINE_bool(
  'allow_config_change',
  False,
  'Resume a workdir whose stored config trains something else (model, objective, ...).',
)
flags.DEFINE_bool(
  'require_checksums', False, 'Refuse to resume from a checkpoint that has no checksum (older versions).'
)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from jaxrobust.train import distributed

  distributed.maybe_initialize(FLAGS.config.distributed)
  from jaxrobust.train import train_and_evaluate

  out = train_and_evaluate(
    FLAGS.config,
    FLAGS.workdir,
    allow_config_change=FLAGS.allow_config_change,
    require_checksums=FLAGS.require_checksums,
  )
  print(
    f'test accuracy {out["test_accuracy"]:.4f} after {out["steps"]} steps '
    f'({out["train_time_s"]:.0f} s of training); workdir {FLAGS.workdir}'
  )


if __name__ == '__main__':
  app.run(main)
