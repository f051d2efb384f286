"""The GPU/TPU code paths, run on the CPU: every decision that depends on the backend
(`jaxrobust.backend`) is forced to the accelerator's choice and compared with the CPU's. Same
shapes, same keys, values within rounding: the two paths are different programs (plain
convolutions and JAX's derivative instead of materialised transposed kernels, grouped
convolutions instead of im2col, whole-batch gradients instead of chunks, `lax.switch` instead of
host dispatch), so they agree to a tolerance, not bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrobust import attacks as A
from jaxrobust import backend, train
from jaxrobust.models import create_model, make_logits_fn
from jaxrobust.train.metrics import read_jsonl
from tests.conftest import assert_attacks_agree, leaves
from tests.test_objectives import MIXED

# Every program here compiles twice (once per path): `make test-long`, which CI runs.
pytestmark = pytest.mark.long


def test_paths_of_forces_and_restores_the_choice():
  assert backend.cpu_paths() and backend.kind() == jax.default_backend() == 'cpu'
  with backend.paths_of('gpu'):
    assert not backend.cpu_paths() and backend.kind() == 'gpu'
  assert backend.cpu_paths()
  with pytest.raises(ValueError, match="backend must be one of \\('cpu', 'gpu', 'tpu'\\), got 'cuda'"):
    with backend.paths_of('cuda'):
      pass


def _on_both_paths(fn):
  """fn() on the CPU's paths and on the accelerator's, as host arrays."""
  cpu = jax.tree.map(np.asarray, fn())
  with backend.paths_of('gpu'):
    gpu = jax.tree.map(np.asarray, fn())
  return cpu, gpu


@pytest.mark.parametrize('name', ['small_cnn', 'wrn_tiny', 'small_cnn_lwta', 'small_cnn_pni'])
def test_models_give_the_same_logits_gradients_and_tangents_on_both_paths(name):
  shape = (28, 28, 1) if name.startswith('small_cnn') else (8, 8, 3)
  model = create_model(name, num_classes=10, **({'width': 1} if name.startswith('small_cnn') else {}))
  x = jax.random.uniform(jax.random.key(0), (4, *shape))
  variables = model.init({'params': jax.random.key(1), 'stochastic': jax.random.key(2)}, x)
  f = make_logits_fn(model, variables)
  key = jax.random.key(3)
  draws = jax.random.split(key, 3)

  def run():
    loss = lambda z: jnp.sum(jax.nn.log_softmax(f(z, key))[:, 0])
    # Per-draw parameters under vmap (EOT's draws): PNI's kernels become per-lane kernels.
    per_draw = jax.vmap(lambda k: f(x, k))(draws)
    out = [jax.jit(f)(x, key), jax.jit(jax.grad(loss))(x), per_draw]
    if not name.endswith('_pni'):  # lane_conv's derivative is reverse-mode only (its docstring)
      out.append(jax.jvp(lambda z: f(z, key), (x,), (jnp.ones_like(x),))[1])
    return out

  cpu, gpu = _on_both_paths(run)
  for a, b in zip(cpu, gpu):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_attacks_give_the_same_examples_on_both_paths():
  """PGD-25 (rolled: chunked gradients on the CPU at 80 examples, the whole batch on an
  accelerator) and APGD on the same keys."""
  model = create_model('small_cnn', num_classes=10, width=1)
  x = jax.random.uniform(jax.random.key(0), (80, 8, 8, 1))  # small: the GPU path's conv gradient is slow here
  y = jax.random.randint(jax.random.key(1), (80,), 0, 10)
  f = make_logits_fn(model, model.init(jax.random.key(2), x[:1]))
  key = jax.random.key(4)

  def run():
    adv = A.pgd(f, key, x, y, epsilon=0.1, num_steps=25, step_size=0.01)
    adv_apgd = A.apgd(f, key, x[:16], y[:16], epsilon=0.1, num_steps=10)
    return adv, adv_apgd

  cpu, gpu = _on_both_paths(run)
  for a, b in zip(cpu, gpu):
    assert float(np.abs(a - np.asarray(x[: len(a)])).max()) <= 0.1 + 1e-6
    assert_attacks_agree(a, b)


def test_mixed_training_switches_on_the_accelerator_path_to_the_same_parameters(synthetic_config, tmp_path):
  """branch_dispatch='auto' draws the branch on the host on the CPU and with `lax.switch`
  elsewhere: the same branch sequence and parameters within rounding."""
  runs = {}
  for path in ('cpu', 'gpu'):
    c = synthetic_config.copy_and_resolve_references()
    c.train.objective, c.train.mixed_attacks = 'mixed', MIXED
    c.train.num_steps, c.train.log_every = 6, 1
    with backend.paths_of(path):
      r = train.train_and_evaluate(c, str(tmp_path / path), progress=False)
    rows = read_jsonl(str(tmp_path / path / 'metrics.jsonl'))
    runs[path] = ([row['train_branch'] for row in rows if 'train_branch' in row], r['state'].params)
  assert runs['cpu'][0] == runs['gpu'][0] and len(set(runs['cpu'][0])) >= 2, runs
  for a, b in zip(leaves(runs['cpu'][1]), leaves(runs['gpu'][1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
