"""Publish a trained run's weights: a folder anyone can load without pickle and re-attack.

  python -m experiments.publish --workdir=runs/converged/fashion_mnist/pgd_at --out=results/published/fashion_mnist/pgd_at

writes <out>/{weights.npz, config.json, SHA256SUMS} (`jaxrobust.train.weights`). Then, on a fresh
clone with no training:

  python -m experiments.evaluate --weights=results/published/fashion_mnist/pgd_at --suite=adaptive
  python -m experiments.certify --weights=results/published/fashion_mnist/pgd_at --method=intervals
"""

from absl import app, flags

flags.DEFINE_string('workdir', None, 'a trained run', required=True)
flags.DEFINE_string('out', None, 'the folder to write', required=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from jaxrobust.train.weights import publish

  print(f'published {publish(FLAGS.workdir, FLAGS.out)}')


if __name__ == '__main__':
  app.run(main)
