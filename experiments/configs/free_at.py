"""Table 1 row: free adversarial training (Shafahi et al. 2019), reference.

  python -m experiments.train --config=experiments/configs/free_at.py:fashion_mnist,quick --workdir=runs/free_at
  python -m experiments.table1 --rows=free_at --epochs=1 --num_test=500 --steps_scale=0.5

  python -m experiments.fast_at --epochs=1 --num_test=200     # beside PGD-AT, under AutoAttack

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/free_at.json):
training took 111 s, alone on the cores; clean 83.5 % on the full test
set; on the first 500 test images, natural 84.6 %, PGD-L∞ 72.0 %, AutoAttack standard
68.8 %, worst case over the standard suite and AutoAttack 49.8 %.

Beside PGD-AT in `experiments.fast_at` (Fashion-MNIST, small CNN, 1 epoch, m = 4 replays per
batch, 2 CPU cores; results/fast_at/fashion_mnist/rows/free_at.json): training took 123 s
(PGD-AT: 182 s); on the first 200 test images, natural 85.0 %, AutoAttack 63.5 % (PGD-AT: 79.5 %, 64.5 %).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('free_at', arg)
