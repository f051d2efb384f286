"""Table 1 row: Stochastic LWTA (PGD-AT + ELBO).

  python -m experiments.train --config=experiments/configs/lwta.py:fashion_mnist,quick --workdir=runs/lwta
  python -m experiments.table1 --rows=lwta --epochs=1 --num_test=500 --steps_scale=0.5

Results: results/fashion_mnist/rows/lwta.json (docs/results.md).

Without ',quick' the Fashion-MNIST budget is 10 epochs (`python -m experiments.converged`); results: results/converged/fashion_mnist/rows/lwta.json (docs/results.md).

':cifar10' trains WRN-34-1 on CIFAR-10 as the study states (30 epochs, SGD at 0.1, PGD-5 with
ε = 8/255 and α = 0.007, the ELBO; a GPU job), ':cifar10,authors' as the LWTA authors' code
(100 epochs, PGD-10, the rate halved every epoch from epoch 75, cross-entropy without the KL).
':fashion_mnist,authors' drops the KL term (kl_beta = 0), to measure what it changes:
`python -m experiments.lwta_kl --seeds=0,1,2 --epochs=1 --num_test=500`
(results/lwta_kl/fashion_mnist/lwta_kl.md).
"""

from jaxrobust.configs.defenses import defense_config


def get_config(arg=None):
  return defense_config('lwta', arg)
