"""Test set-up: 4 simulated CPU devices (before JAX initialises), quiet logs, shared helpers."""

import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '')
import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', 4)
# Compile time dominates these tiny tests; XLA's heavy optimisations are not worth it here.
jax.config.update('jax_disable_most_optimizations', True)
# Many tests compile the same programs (same model, same attack) from fresh closures: a
# persistent cache, shared by the test processes of one run, compiles each of them once. It lives
# in $JAXROBUST_TEST_CACHE (default: <temp dir>/jaxrobust-test-xla-cache); each new version of
# the code, of jax or of the XLA flags adds a suite's worth of programs, and the oldest entries
# are pruned before a run once it holds more than CACHE_LIMIT_BYTES (docs/reproducibility.md).
_CACHE = os.environ.setdefault(
  'JAXROBUST_TEST_CACHE', os.path.join(tempfile.gettempdir(), 'jaxrobust-test-xla-cache')
)
CACHE_LIMIT_BYTES = 512 * 2**20
jax.config.update('jax_compilation_cache_dir', _CACHE)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)

from jaxrobust import attacks as _attacks  # noqa: E402

# Rolled attack loops compile several times faster; the tiny test models do not need the unrolled
# loops' run-time speed (tests/test_attacks.py checks that both give the same result).
_attacks.set_default_unroll(1)

import logging  # noqa: E402

import absl.logging  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

absl.logging.set_verbosity(absl.logging.WARNING)
logging.getLogger('absl').setLevel(logging.WARNING)


def prune_cache(directory: str, limit_bytes: int) -> int:
  """Deletes the least recently written files of `directory` until it holds at most
  `limit_bytes`; returns the bytes freed."""
  try:
    entries = [e for e in os.scandir(directory) if e.is_file()]
  except FileNotFoundError:
    return 0
  stats = sorted(((e.stat().st_mtime_ns, e.stat().st_size, e.path) for e in entries))
  total, freed = sum(size for _, size, _ in stats), 0
  for _, size, path in stats:
    if total - freed <= limit_bytes:
      break
    try:
      os.remove(path)
      freed += size
    except FileNotFoundError:
      pass
  return freed


def pytest_configure(config):
  # The controller prunes before any test process starts, so no process reads a file being removed.
  if not hasattr(config, 'workerinput'):
    prune_cache(_CACHE, CACHE_LIMIT_BYTES)


def leaves(tree) -> list[np.ndarray]:
  """The leaves of a pytree as numpy arrays."""
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def trees_equal(a, b) -> bool:
  """Bit-identical pytrees."""
  la, lb = leaves(a), leaves(b)
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def assert_attacks_agree(a, b, *, atol: float = 1e-5, share: float = 0.01) -> None:
  """Two *different* compiled programs' adversarial examples agree: equal to `atol` on all but
  `share` of the elements.

  Between two programs (rolled and unrolled loops, EOT of identical draws and one draw, a batch
  and one example of it, 1 and 4 devices) XLA may reassociate a float reduction. A gradient
  component within rounding of zero may then change sign, and that pixel's sign step goes the
  other way (docs/reproducibility.md). Real disagreements (another start, another key, another
  step size) move most elements, so a one-percent allowance still fails them.
  """
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape, (a.shape, b.shape)
  off = ~np.isclose(a, b, rtol=0, atol=atol)
  assert off.mean() <= share, (
    f'{int(off.sum())} of {off.size} elements differ by more than {atol} '
    f'(allowed: {share:.1%}); largest difference {np.abs(a - b).max():.3g}'
  )


def assert_mostly_equal(a, b, *, share: float = 0.05) -> None:
  """Two programs' per-example outcomes (broken or not, a query count) are equal on all but
  `share` of the examples: one example at a decision boundary may fall the other way when two
  programs round differently."""
  a, b = np.asarray(a), np.asarray(b)
  assert a.shape == b.shape, (a.shape, b.shape)
  off = a != b
  assert off.mean() <= share, f'{int(off.sum())} of {off.size} outcomes differ (allowed: {share:.0%})'


def tree_files(root) -> dict:
  """{relative path: (size, mtime_ns)} of every file below `root`: a snapshot to prove nothing
  on disk changed (the work-directory lock, which a refused run takes and releases, aside)."""
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      if f == '.lock':
        continue
      p = os.path.join(d, f)
      st = os.stat(p)
      out[os.path.relpath(p, root)] = (st.st_size, st.st_mtime_ns)
  return out


from tests.configs import synthetic_training_config  # noqa: E402


@pytest.fixture
def synthetic_config():
  return synthetic_training_config()
