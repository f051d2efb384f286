"""What the adaptive suite's budget costs on this CPU: one stochastic forward pass and one EOT
input gradient of a trained stochastic model, measured, times the calls each attack makes per
point that survives it.

  python -m benchmarks.adaptive_budget [--workdir=runs/converged/fashion_mnist/lwta] [--batch=250]
      [--eot=20] [--microbatch=6] [--square_microbatch=5] [--square_queries=10] [--repeats=3]

The adaptive suite (`jaxrobust.evaluation.adaptive`) makes, per point that survives the whole
budget: EOT-Square 1000 queries × 20 draws forward passes; EOT-PGD 2 restarts × 100 steps × 20
draws input gradients; AA-rand (APGD-CE, then APGD-DLR on the points left) 2 × 100 × 20 input
gradients. A point broken early costs less, so these are the costs of a robust point, and
n × (robust share) × (cost per point) is a floor under each attack's time. The script times, in
turns (medians), the stochastic forward pass of `--eot` draws vmapped over `--batch` images, the
same images through the deterministic argmax surrogate, and the EOT input gradient of the
cross-entropy in gradient chunks of `--microbatch` examples (6: what `experiments.converged` gives
the LWTA row; 0: the whole batch), and EOT Square itself (`--square_queries` queries) with its
draws evaluated over the whole batch at once and in chunks of `--square_microbatch` examples;
it prints one JSON line with the per-image costs and the per-point floors. It
names the cores it ran on (`taskset -c 0` gives one).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import side_by_side
from absl import flags

from benchmarks.common import emit, parse_flags
from jaxrobust import attacks as A
from jaxrobust.evaluation.adaptive import surrogates
from jaxrobust.machine import cpu_model
from jaxrobust.models import make_logits_fn

# Calls per surviving point of each EOT attack of the suite, in units of one draw of one image
# (its defaults: `adaptive_attacks` and AutoAttack's rand version).
FORWARDS = {'eot_square': 1000}  # queries; × draws
GRADIENTS = {'eot_pgd': 2 * 100, 'aa_rand': 2 * 100}  # restarts (attacks) × steps; × draws


def per_point_seconds(forward_s: float, gradient_s: float, draws: int) -> dict[str, float]:
  """Seconds each EOT attack spends on one point that survives its whole budget, from the cost of
  one stochastic forward pass and one input gradient per image and draw."""
  out = {k: q * draws * forward_s for k, q in FORWARDS.items()}
  out.update({k: s * draws * gradient_s for k, s in GRADIENTS.items()})
  return out


FLAGS = flags.FlagValues()
flags.DEFINE_string(
  'workdir', 'runs/converged/fashion_mnist/lwta', 'a trained stochastic model', flag_values=FLAGS
)
flags.DEFINE_integer('batch', 250, 'test images', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('eot', 20, 'EOT draws', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer(
  'microbatch', 6, "EOT gradient's draws per chunk (0: all at once)", lower_bound=0, flag_values=FLAGS
)
flags.DEFINE_integer('square_microbatch', 5, "EOT Square's draws per chunk", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer(
  'square_queries', 10, 'Square queries timed (< 50)', lower_bound=1, upper_bound=49, flag_values=FLAGS
)
flags.DEFINE_integer('repeats', 3, 'timed calls per side', lower_bound=1, flag_values=FLAGS)


def main():
  F = parse_flags(FLAGS)
  from jaxrobust.train.restore import load_trained

  workdir, batch, draws, repeats = F.workdir, F.batch, F.eot, F.repeats
  microbatch, square_chunk, queries = F.microbatch, F.square_microbatch, F.square_queries
  _, model, variables, ds = load_trained(workdir)
  x = jnp.asarray(np.asarray(ds.test_images[:batch], np.float32) / 255.0)
  y = jnp.asarray(np.asarray(ds.test_labels[:batch]))
  f = make_logits_fn(model, variables)
  sur = surrogates(model)
  det = make_logits_fn(next(iter(sur.values())), variables)
  keys = jax.random.split(jax.random.key(0), draws)
  stochastic = jax.jit(lambda x: jax.vmap(lambda k: f(x, k))(keys).mean(0))
  deterministic = jax.jit(lambda x: det(jnp.tile(x, (draws, 1, 1, 1)), keys[0]))
  gradient = jax.jit(
    lambda x, y: A.loss_and_grad(
      f, A.cross_entropy, x, y, keys[0], eot_samples=draws, microbatch=microbatch or None, mapped=True
    )[2]
  )

  def square(m):
    return A.square(f, keys[1], x, y, epsilon=0.1, num_queries=queries, eot_samples=draws, microbatch=m)

  t = side_by_side.alternate(
    {
      'stochastic_forward': lambda: stochastic(x),
      'deterministic_forward': lambda: deterministic(x),
      'eot_gradient': lambda: gradient(x, y),
      'eot_square_query': lambda: square(0),
      'eot_square_query_chunked': lambda: square(square_chunk),
    },
    repeats,
  )
  # Square makes one margin evaluation to start and one per query; below 50 queries it drops no
  # broken point, so every call covers the whole batch.
  calls = {'eot_square_query': queries + 1, 'eot_square_query_chunked': queries + 1}
  per_image = {k: v['median_s'] / (batch * draws * calls.get(k, 1)) for k, v in t.items()}
  emit(
    workdir=workdir,
    cpu=cpu_model(),
    batch=batch,
    draws=draws,
    microbatch=microbatch,
    repeats=repeats,
    ms_per_image_and_draw={k: round(1000 * v, 4) for k, v in per_image.items()},
    square_microbatch=square_chunk,
    square_queries=queries,
    sampling_share_of_forward=round(
      1 - per_image['deterministic_forward'] / per_image['stochastic_forward'], 3
    ),
    square_chunked_speedup=round(
      t['eot_square_query']['median_s'] / t['eot_square_query_chunked']['median_s'], 2
    ),
    seconds_per_surviving_point={
      k: round(v, 2)
      for k, v in per_point_seconds(per_image['eot_square_query'], per_image['eot_gradient'], draws).items()
    },
    seconds_per_surviving_point_square_chunked=round(
      per_point_seconds(per_image['eot_square_query_chunked'], 0.0, draws)['eot_square'], 2
    ),
  )


if __name__ == '__main__':
  main()
