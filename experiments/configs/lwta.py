"""Table 1 row: Stochastic LWTA (PGD-AT + ELBO).

  python -m experiments.train --config=experiments/configs/lwta.py:fashion_mnist,quick --workdir=runs/lwta
  python -m experiments.table1 --rows=lwta --epochs=1 --num_test=500 --steps_scale=0.5

Measured (Fashion-MNIST, small CNN, 1 epoch, 2-core AMD EPYC; results/fashion_mnist/rows/lwta.json):
training took 316 s, alone on the cores; clean 81.1 % on the full test
set; on the first 500 test images, natural 82.2 %, PGD-L∞ 70.6 %, AutoAttack rand (EOT-20)
61.6 %, worst case over the standard suite (with EOT and transfer) and AutoAttack 53.2 %.

Without ',quick' the Fashion-MNIST budget is 10 epochs: `python -m experiments.converged
--rows=lwta` trained it in 2.5 h of one core (the other core busy), clean 85.55 % on the full
test set, and on the first 1000 test images the adaptive suite (4.2 h of one core) found single-draw
PGD-20 77.3 %, AA-rand 78.9 %, EOT-PGD 71.6 % and a per-point worst case of 70.0 %
(results/converged/fashion_mnist/rows/lwta.json).

':cifar10' trains WRN-34-1 on CIFAR-10 as the study states (30 epochs, SGD at 0.1, PGD-5 with
ε = 8/255 and α = 0.007, the ELBO; a GPU job), ':cifar10,authors' as the LWTA authors' code
(100 epochs, PGD-10, the rate halved every epoch from epoch 75, cross-entropy without the KL).
':fashion_mnist,authors' drops the KL term (kl_beta = 0), to measure what it changes:
`python -m experiments.lwta_kl --seeds=0,1,2 --epochs=1 --num_test=500` (2 h of one core of a
2-core Intel Xeon) found no change beyond a point (worst case 56.0 ± 1.1 % with the KL, 56.7 ± 0.9 %
without, paired difference -0.7 ± 1.5; results/lwta_kl/fashion_mnist/lwta_kl.md).
"""

from experiments.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('lwta', arg)
