"""Mixed precision: bfloat16 activations and convolutions, float32 parameters, BatchNorm
statistics, logits and attack arithmetic. A bfloat16 model agrees with its float32 twin to
bfloat16's precision, trains, and is attacked with every guarantee kept."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import attacks as A
from jaxrobust import train
from jaxrobust.models import create_model, make_logits_fn
from jaxrobust.train.metrics import read_jsonl


@pytest.mark.parametrize('name, shape', [('small_cnn', (28, 28, 1)), ('wrn_tiny', (8, 8, 3))])
def test_a_bfloat16_model_has_float32_parameters_and_logits_close_to_float32(name, shape):
  kwargs = {'width': 1} if name == 'small_cnn' else {}
  x = jax.random.uniform(jax.random.key(0), (4, *shape))
  full = create_model(name, num_classes=10, **kwargs)
  half = create_model(name, num_classes=10, dtype='bfloat16', **kwargs)
  variables = full.init(jax.random.key(1), x)
  assert jax.tree.structure(half.init(jax.random.key(1), x)) == jax.tree.structure(variables)
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(half.init(jax.random.key(1), x)))
  a = make_logits_fn(full, variables)(x, jax.random.key(2))
  b = make_logits_fn(half, variables)(x, jax.random.key(2))
  assert b.dtype == jnp.float32
  # bfloat16 keeps 8 bits of mantissa: agreement to a few percent of the logits' scale.
  assert float(jnp.abs(a - b).max()) <= 0.05 * float(jnp.abs(a).max()) + 1e-3, (a, b)
  assert not np.array_equal(a, b)  # it did compute in bfloat16


def test_an_unsupported_dtype_is_refused_by_name():
  model = create_model('small_cnn', num_classes=10, dtype='int8')
  with pytest.raises(ValueError, match="dtype must be float32, bfloat16 or float16, got 'int8'"):
    model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_a_bfloat16_small_cnn_trains(synthetic_config, tmp_path):
  c = synthetic_config
  c.model.kwargs = dict(width=1, dtype='bfloat16')
  c.train.num_steps, c.train.log_every = 16, 2
  out = train.train_and_evaluate(c, str(tmp_path), progress=False)
  losses = [r['train_loss'] for r in read_jsonl(str(tmp_path / 'metrics.jsonl')) if 'train_loss' in r]
  assert all(np.isfinite(losses)) and losses[-1] < losses[0], losses
  assert out['test_accuracy'] > 0.5  # 4 classes: chance is 0.25
  assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(out['state'].params))


def test_attacks_on_a_bfloat16_model_keep_every_guarantee():
  model = create_model('small_cnn', num_classes=10, width=1, dtype='bfloat16')
  x = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
  y = jax.random.randint(jax.random.key(1), (8,), 0, 10)
  variables = model.init(jax.random.key(2), x[:1])
  f = make_logits_fn(model, variables)
  key = jax.random.key(3)
  for adv in (
    A.fgsm(f, key, x, y, epsilon=0.1),
    A.pgd(f, key, x, y, epsilon=0.1, step_size=0.03, num_steps=5),
    A.apgd(f, key, x, y, epsilon=0.1, num_steps=5),
    A.pgd(f, key, x, y, epsilon=1.0, step_size=0.3, num_steps=5, norm='l2'),
  ):
    assert adv.dtype == jnp.float32
    d = adv - x
    assert float(jnp.abs(d).max()) <= 0.1 + 1e-6 or float(jnp.sqrt((d**2).sum((1, 2, 3))).max()) <= 1.0 + 1e-5
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
  # A bfloat16 model whose logits overflow to non-finite values is refused, not attacked.
  broken = make_logits_fn(model, jax.tree.map(lambda v: v * 1e30, variables))
  with pytest.raises(FloatingPointError):
    A.pgd(broken, key, x, y, epsilon=0.1, step_size=0.03, num_steps=2)
