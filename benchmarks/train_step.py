"""PGD-10 adversarial training step: images/s and ratio_to_limit = t(step) / (t(PGD-10) +
t(one parameter-gradient step)) (target ≤ 1.10), for the small CNN and WRN-16-4 at batch 128.

  python -m benchmarks.train_step [--models=small_cnn,wrn16_4] [--batch=128]
"""

import jax
import numpy as np
import optax

from absl import flags

from benchmarks.common import emit, parse_flags
from benchmarks.side_by_side import alternate
from jaxrobust import attacks as A
from jaxrobust.models import create_model, make_logits_fn
from jaxrobust.train.objectives import adversarial_objective, clean_objective
from jaxrobust.train.state import create_train_state
from jaxrobust.train.step import make_train_step

SHAPES = {'wrn16_4': (32, 32, 3), 'small_cnn': (28, 28, 1)}


def bench(name, batch, repeats):
  model = create_model(name, num_classes=10)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.05, momentum=0.9))
  state = create_train_state(model, jax.random.key(0), np.zeros((1,) + SHAPES[name], np.float32), tx)
  imgs = np.asarray(jax.random.randint(jax.random.key(1), (batch,) + SHAPES[name], 0, 256), np.uint8)
  batch_d = {'image': imgs, 'label': np.asarray(jax.random.randint(jax.random.key(2), (batch,), 0, 10))}
  key = jax.random.key(3)
  spec = dict(name='pgd', epsilon=0.1, step_size=0.025, num_steps=10)
  adv = jax.jit(make_train_step(adversarial_objective(model.apply, 10, spec)))
  clean = jax.jit(make_train_step(clean_objective(model.apply, 10)))
  f = make_logits_fn(model, state.variables)
  x = jax.numpy.asarray(imgs, jax.numpy.float32) / 255
  pgd = lambda: A.pgd(f, key, x, batch_d['label'], **{k: v for k, v in spec.items() if k != 'name'})
  t = alternate(
    {
      'step': lambda: adv(state, batch_d, key)[1]['loss'],
      'clean': lambda: clean(state, batch_d, key)[1]['loss'],
      'pgd': pgd,
    },
    repeats=repeats,
  )
  t_step, t_clean, t_pgd = (t[k]['median_s'] for k in ('step', 'clean', 'pgd'))
  emit(
    model=name,
    batch=batch,
    measure='pgd10_at_step',
    seconds=round(t_step, 4),
    images_per_s=round(batch / t_step, 1),
    pgd10_s=round(t_pgd, 4),
    param_grad_step_s=round(t_clean, 4),
    ratio_to_limit=round(t_step / (t_pgd + t_clean), 3),
    target=1.10,
  )


FLAGS = flags.FlagValues()
flags.DEFINE_string('models', 'small_cnn,wrn16_4', 'models, comma-separated', flag_values=FLAGS)
flags.DEFINE_integer('batch', 128, 'images per batch', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('repeats', 3, 'timed calls per side', lower_bound=1, flag_values=FLAGS)


def main():
  F = parse_flags(FLAGS)
  for name in F.models.split(','):
    bench(name, F.batch, F.repeats)


if __name__ == '__main__':
  main()
