"""AutoAttack parity: jaxrobust against the reference implementation (`pyautoattack`, the code of
fra31/auto-attack) and torchattacks' AutoAttack, on the same weights and the same test images,
all timed in this run on this machine. Needs the `parity` extra (CPU torch).

  python -m benchmarks.parity_torch --workdir=runs/fashion_mnist/regular [--num_test=1000] [--eps=0.1]

It copies a trained small CNN into its torch twin, checks that the logits agree to 1e-4, runs each
component (APGD-CE, APGD-T, FAB-T, Square) alone and the whole standard AutoAttack in each
library, and prints one JSON line per measurement and a Markdown table. Parity means robust
accuracy within 0.5 points of the reference (1 point for Square).
"""

from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import side_by_side
from benchmarks.common import arg
from jaxrobust import attacks as A

COMPONENTS = {'apgd-ce': 'apgd_ce', 'apgd-t': 'apgd_t', 'fab-t': 'fab_t', 'square': 'square'}


def emit(**row):
  print(json.dumps(row), flush=True)


def run_ours(f, x, y, eps, names=None, batch_size=500, **budget):
  """(robust accuracy, seconds) of jaxrobust's AutoAttack: standard, or the listed attacks
  (`budget`: num_steps / num_queries, smaller only for smoke tests)."""
  t0 = time.perf_counter()
  _, rep = A.autoattack(
    f,
    jax.random.key(0),
    jnp.asarray(x),
    jnp.asarray(y),
    epsilon=eps,
    version='standard' if names is None else 'custom',
    attacks=names,
    batch_size=batch_size,
    **budget,
  )
  return list(rep['robust_accuracy'].values())[-1], time.perf_counter() - t0


def run_reference(twin, xt, yt, eps, names=None, batch_size=500):
  """(robust accuracy, seconds) of the reference (pyautoattack, fra31/auto-attack's code)."""
  import torch
  from pyautoattack import AutoAttack

  aa = AutoAttack(
    twin,
    norm='Linf',
    eps=eps,
    device='cpu',
    seed=0,
    version='standard' if names is None else 'custom',
    attacks=names,
  )
  aa.verbose = False
  t0 = time.perf_counter()
  adv, _ = aa.run_standard_evaluation(xt, yt, batch_size=batch_size)
  seconds = time.perf_counter() - t0
  with torch.no_grad():
    return float((twin(adv).argmax(1) == yt).float().mean()), seconds


def run_torchattacks(twin, xt, yt, eps, batch_size=500):
  """(robust accuracy, seconds) of torchattacks' AutoAttack (standard)."""
  import torch
  import torchattacks

  atk = torchattacks.AutoAttack(twin, norm='Linf', eps=eps, version='standard', n_classes=10, seed=0)
  t0 = time.perf_counter()
  adv = torch.cat(
    [atk(xt[i : i + batch_size], yt[i : i + batch_size]) for i in range(0, len(xt), batch_size)]
  )
  seconds = time.perf_counter() - t0
  with torch.no_grad():
    return float((twin(adv).argmax(1) == yt).float().mean()), seconds


def main():
  import torch

  from benchmarks.torch_twins import small_cnn_from_flax
  from jaxrobust.models import make_logits_fn
  from jaxrobust.train.restore import load_trained

  workdir, n, eps = arg('workdir', ''), arg('num_test', 1000), arg('eps', 0.1)
  torch.set_num_threads(2)
  _, model, variables, ds = load_trained(workdir)
  x = np.asarray(ds.test_images[:n], np.float32) / 255.0
  y = np.asarray(ds.test_labels[:n])
  f = make_logits_fn(model, variables)
  twin = small_cnn_from_flax(model, variables)
  xt, yt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(y.astype(np.int64))
  with torch.no_grad():
    diff = float(np.abs(twin(xt).numpy() - np.asarray(f(jnp.asarray(x), jax.random.key(0)))).max())
  emit(
    cpu=side_by_side.cpu_model(),
    workdir=workdir,
    n=n,
    eps=eps,
    max_logit_difference=diff,
    torch=torch.__version__,
    jax=jax.__version__,
  )
  if diff > 1e-4:
    raise SystemExit(f'the torch twin disagrees with the Flax model by {diff} > 1e-4')

  rows = []
  for ref_name, our_name in list(COMPONENTS.items()) + [('standard', None)]:
    acc_ref, t_ref = run_reference(twin, xt, yt, eps, None if our_name is None else [ref_name])
    acc_ours, t_ours = run_ours(f, x, y, eps, None if our_name is None else [our_name])
    row = dict(
      attack=ref_name if our_name else 'AutoAttack standard',
      reference=acc_ref,
      jaxrobust=acc_ours,
      difference_points=round(100 * (acc_ours - acc_ref), 2),
      reference_s=round(t_ref, 1),
      jaxrobust_s=round(t_ours, 1),
      speedup=round(t_ref / t_ours, 2),
    )
    if our_name is None:
      acc_ta, t_ta = run_torchattacks(twin, xt, yt, eps)
      row.update(torchattacks=acc_ta, torchattacks_s=round(t_ta, 1))
    emit(**row)
    rows.append(row)
  print('\n| attack | reference | jaxrobust | Δ points | reference s | jaxrobust s | speed-up |')
  print('|---|---|---|---|---|---|---|')
  for r in rows:
    print(
      f'| {r["attack"]} | {100 * r["reference"]:.1f} | {100 * r["jaxrobust"]:.1f} | {r["difference_points"]:+.1f} | '
      f'{r["reference_s"]} | {r["jaxrobust_s"]} | {r["speedup"]}× |'
    )
  if 'torchattacks' in rows[-1]:
    print(
      f"\ntorchattacks' AutoAttack: {100 * rows[-1]['torchattacks']:.1f} % in {rows[-1]['torchattacks_s']} s"
    )


if __name__ == '__main__':
  main()
