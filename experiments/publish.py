"""Publish a trained run's weights: a folder anyone can load without pickle and re-attack.

  python -m experiments.publish --workdir=runs/converged/fashion_mnist/pgd_at --out=results/published/fashion_mnist/pgd_at

writes <out>/{weights.npz, config.json, record.json, SHA256SUMS} (`jaxrobust.train.weights`); an
existing folder is replaced only with --force, and a run whose final checkpoint is damaged is
published (from its newest intact step) only with --allow_older. Then, on a fresh
clone with no training:

  python -m experiments.evaluate --weights=results/published/fashion_mnist/pgd_at --suite=adaptive
  python -m experiments.certify --weights=results/published/fashion_mnist/pgd_at --method=intervals
"""

from absl import app, flags

flags.DEFINE_string('workdir', None, 'a trained run', required=True)
flags.DEFINE_string('out', None, 'the folder to write', required=True)
flags.DEFINE_bool('force', False, 'replace a folder that already holds published weights')
flags.DEFINE_bool('allow_older', False, 'publish the newest intact step when the final one is damaged')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from jaxrobust.train.weights import publish

  print(f'published {publish(FLAGS.workdir, FLAGS.out, force=FLAGS.force, allow_older=FLAGS.allow_older)}')


if __name__ == '__main__':
  app.run(main)
