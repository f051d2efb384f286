"""Table 1 row: FGSM with a random start (Wong, Rice & Kolter 2020), reference.

  python -m experiments.train --config=experiments/configs/fgsm_rs.py:fashion_mnist,quick --workdir=runs/fgsm_rs
  python -m experiments.table1 --rows=fgsm_rs --epochs=1 --num_test=500 --steps_scale=0.5

  python -m experiments.fast_at --epochs=1 --num_test=200     # beside PGD-AT, under AutoAttack

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/fgsm_rs.json):
training took 68 s, alone on the cores; clean 81.8 % on the full test
set; on the first 500 test images, natural 83.4 %, PGD-L∞ 68.6 %, AutoAttack standard
63.0 %, worst case over the standard suite and AutoAttack 50.2 %.

Beside PGD-AT in `experiments.fast_at` (Fashion-MNIST, small CNN, 1 epoch, with the guard on
1000 held-out training images, 2 CPU cores; results/fast_at/fashion_mnist/rows/fgsm_rs.json):
training took 95 s (PGD-AT: 182 s); on the first 200 test images, natural 84.0 %, AutoAttack 59.0 % (PGD-AT: 79.5 %, 64.5 %).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('fgsm_rs', arg)
