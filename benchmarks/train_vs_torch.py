"""PGD adversarial training in jaxrobust against PyTorch + torchattacks: one recipe, 3 seeds each,
runs alternating, accuracy and wall time (compilation included) as mean ± sd.

  python -m benchmarks.train_vs_torch [--seeds=0,1,2] [--epochs=2] [--variants=flax_init,torch_init] [--num_eval=2000] [--torch=1] [--batch=128]

Recipe: Fashion-MNIST, the small CNN (normalisation inside the model in both), PGD-10 training
attack (ε = 0.1, α = 0.025, random start), SGD lr 0.05, momentum 0.9, coupled weight decay 5e-4,
batch 128, constant rate. Both sides train on the same arrays; each draws its own data order
and initial weights from the seed. Evaluation of both with jaxrobust's `robust_accuracy` on the
first `num_eval` test images (the torch weights are copied into the Flax network): clean, FGSM
(ε = 0.1) and PGD-20 (α = 0.01, random start).

jaxrobust variants: `flax_init` (the layers' own initialisers) and `torch_init` (`model.init =
'torch'`: PyTorch's default kaiming-uniform kernels and uniform biases). Prints one JSON line per
run, then a Markdown table of mean ± sd per side and the speed-up of the mean wall times.
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
import time

import jax
import numpy as np

from benchmarks import side_by_side
from absl import flags

from benchmarks.common import emit, parse_flags
from jaxrobust import attacks as A
from jaxrobust.data import load_fashion_mnist
from jaxrobust.evaluation.accuracy import robust_accuracy
from jaxrobust.models import create_model, make_logits_fn
from jaxrobust.train import build_experiment, default_config, train
from jaxrobust.machine import cpu_model, usable_cores

EPS, ALPHA, STEPS = 0.1, 0.025, 10
BATCH, LR, MOMENTUM, WD = 128, 0.05, 0.9, 5e-4


def jax_config(seed: int, epochs: float, init: str, batch: int = BATCH):
  c = default_config()
  c.seed = seed
  c.model.init = init
  c.train.objective = 'pgd_at'
  c.train.attack = dict(name='pgd', epsilon=EPS, step_size=ALPHA, num_steps=STEPS, random_init='uniform')
  c.train.batch_size, c.train.learning_rate, c.train.momentum, c.train.weight_decay = batch, LR, MOMENTUM, WD
  c.train.schedule = 'constant'
  c.train.num_epochs = epochs
  c.train.log_every = 100
  return c


def train_jax(ds, seed: int, epochs: float, init: str, batch: int = BATCH):
  """(model, variables, seconds): jaxrobust's training as a user runs it (build + train)."""
  with tempfile.TemporaryDirectory() as work:
    t0 = time.perf_counter()
    out = train(build_experiment(jax_config(seed, epochs, init, batch), dataset=ds), work, progress=False)
    seconds = time.perf_counter() - t0
  return out['model'], out['state'].variables, seconds


def train_torch(ds, seed: int, epochs: float, batch: int = BATCH):
  """(torch twin, seconds): the same recipe in PyTorch with torchattacks' PGD."""
  import torch
  import torchattacks

  from tests.fixtures.torch_twins import SmallCNN

  torch.manual_seed(seed)
  mean, std = ds.channel_stats()
  model = SmallCNN(num_classes=10, in_ch=1, hw=28, mean=tuple(mean), std=tuple(std))
  opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
  atk = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
  loss_fn = torch.nn.CrossEntropyLoss()
  x_all = torch.from_numpy(ds.train_images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
  y_all = torch.from_numpy(ds.train_labels.astype(np.int64))
  rng = np.random.RandomState(seed)
  steps = int(round(epochs * (len(x_all) // batch)))
  t0 = time.perf_counter()
  step = 0
  while step < steps:
    perm = torch.from_numpy(rng.permutation(len(x_all)))
    for i in range(0, len(perm) - batch + 1, batch):
      if step == steps:
        break
      idx = perm[i : i + batch]
      x, y = x_all[idx], y_all[idx]
      x_adv = atk(x, y)
      model.train()
      loss = loss_fn(model(x_adv), y)
      opt.zero_grad()
      loss.backward()
      opt.step()
      step += 1
  return model.eval(), time.perf_counter() - t0


def flax_from_twin(twin, mean, std):
  """The torch small CNN's weights in our Flax small CNN (OIHW → HWIO, dense transposed)."""
  model = create_model('small_cnn', num_classes=10, mean=tuple(mean), std=tuple(std))
  t = {k: v.detach().numpy() for k, v in twin.state_dict().items()}
  params = {
    'Conv_0': {'kernel': t['conv1.weight'].transpose(2, 3, 1, 0), 'bias': t['conv1.bias']},
    'Conv_1': {'kernel': t['conv2.weight'].transpose(2, 3, 1, 0), 'bias': t['conv2.bias']},
    'Dense_0': {'kernel': t['fc1.weight'].T, 'bias': t['fc1.bias']},
    'Dense_1': {'kernel': t['fc2.weight'].T, 'bias': t['fc2.bias']},
  }
  return model, {'params': jax.tree.map(jax.numpy.asarray, params)}


def evaluate(model, variables, ds, n: int) -> dict:
  attacks = {
    'fgsm': functools.partial(A.fgsm, epsilon=EPS),
    'pgd20': functools.partial(A.pgd, epsilon=EPS, step_size=0.01, num_steps=20, random_init='uniform'),
  }
  r = robust_accuracy(
    make_logits_fn(model, variables), ds.test_images[:n], ds.test_labels[:n], attacks, key=jax.random.key(0)
  )
  return {k: round(100 * r.accuracy[k], 2) for k in ('clean', 'fgsm', 'pgd20')}


def _mean_sd(v):
  return f'{statistics.mean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.1f}'


FLAGS = flags.FlagValues()
flags.DEFINE_float('epochs', 2.0, 'training epochs of each side', lower_bound=0.0, flag_values=FLAGS)
flags.DEFINE_string('seeds', '0,1,2', 'seeds, comma-separated', flag_values=FLAGS)
flags.DEFINE_integer('batch', BATCH, 'training batch', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer('num_eval', 2000, 'test images evaluated', lower_bound=1, flag_values=FLAGS)
flags.DEFINE_string(
  'variants', 'flax_init,torch_init', "jaxrobust's initialisations, comma-separated", flag_values=FLAGS
)
flags.DEFINE_bool('torch', True, 'train the torch side too, when torch is installed', flag_values=FLAGS)


def main():
  F = parse_flags(FLAGS)
  seeds = [int(s) for s in F.seeds.split(',')]
  epochs, n_eval, batch = F.epochs, F.num_eval, F.batch
  variants = F.variants.split(',')
  ds = load_fashion_mnist()
  with_torch = side_by_side.torch_available() and F.torch
  if with_torch:
    import torch

    torch.set_num_threads(usable_cores())
  emit(cpu=cpu_model(), jax=jax.__version__, epochs=epochs, seeds=seeds, torch=with_torch)
  runs = {}
  for seed in seeds:  # alternate: torch, then each jaxrobust variant, per seed
    if with_torch:
      twin, sec = train_torch(ds, seed, epochs, batch)
      mean, std = ds.channel_stats()
      row = dict(
        side='torch+torchattacks',
        seed=seed,
        train_s=round(sec, 1),
        **evaluate(*flax_from_twin(twin, mean, std), ds, n_eval),
      )
      emit(**row)
      runs.setdefault(row['side'], []).append(row)
    for v in variants:
      model, variables, sec = train_jax(
        ds, seed, epochs, {'flax_init': 'flax', 'torch_init': 'torch'}[v], batch
      )
      row = dict(
        side=f'jaxrobust ({v})', seed=seed, train_s=round(sec, 1), **evaluate(model, variables, ds, n_eval)
      )
      emit(**row)
      runs.setdefault(row['side'], []).append(row)
  print('\n| run | clean | FGSM | PGD-20 | train s |')
  print('|---|---|---|---|---|')
  for side, rows in runs.items():
    cols = [_mean_sd([r[k] for r in rows]) for k in ('clean', 'fgsm', 'pgd20', 'train_s')]
    print(f'| {side}, {len(rows)} seeds | ' + ' | '.join(cols) + ' |')
  if with_torch:
    t_torch = statistics.mean(r['train_s'] for r in runs['torch+torchattacks'])
    for side, rows in runs.items():
      if side.startswith('jaxrobust'):
        print(
          json.dumps(
            {
              'side': side,
              'speedup_train_wall_time': round(t_torch / statistics.mean(r['train_s'] for r in rows), 2),
            }
          )
        )
  else:
    print(json.dumps({'note': 'torch not installed (the parity extra) or --torch=0: no ratio was measured'}))


if __name__ == '__main__':
  main()
