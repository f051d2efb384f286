"""The training state: Flax's TrainState plus BatchNorm statistics."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax.training import train_state
from jax.typing import ArrayLike

from jaxrobust.models.common import STOCHASTIC
from jaxrobust.models.init import INITS, torch_default_init


class TrainState(train_state.TrainState):
  """params, opt_state and step from Flax, plus the model's `batch_stats` (empty if none)."""

  batch_stats: Any = None

  @property
  def variables(self) -> dict:
    v = {'params': self.params}
    if self.batch_stats:
      v['batch_stats'] = self.batch_stats
    return v

  def to_checkpoint(self) -> dict:
    """The arrays to save (apply_fn and tx are code, rebuilt from the config)."""
    return {
      'params': self.params,
      'opt_state': self.opt_state,
      'batch_stats': self.batch_stats,
      'step': self.step,
    }

  def from_checkpoint(self, tree: dict) -> 'TrainState':
    return self.replace(
      params=tree['params'], opt_state=tree['opt_state'], batch_stats=tree['batch_stats'], step=tree['step']
    )


def create_train_state(model, key: jax.Array, sample_input: ArrayLike, tx, init: str = 'flax') -> TrainState:
  """Initialises the model on `sample_input` and the optimiser on its parameters.

  Args:
    model: a Linen module called as `model(x, train=...)`.
    key: init key; split into the params key and the stochastic-layer key.
    sample_input: an input batch of the right shape (values unused).
    tx: an optax GradientTransformation.
    init: 'flax' (the layers' initialisers) or 'torch' (kernels and biases redrawn as PyTorch's
      defaults, `models.init.torch_default_init`, from the params key), except in networks whose
      reference code sets its own initialisation (`sets_own_init`: the WideResNets), which keep it.
  """
  k_params, k_noise = jax.random.split(key)
  variables = jax.jit(lambda x: model.init({'params': k_params, STOCHASTIC: k_noise}, x, train=False))(
    jnp.asarray(sample_input)
  )
  params = variables['params']
  if init not in INITS:
    raise ValueError(f'init must be one of {INITS}, got {init!r}')
  if init == 'torch' and not getattr(model, 'sets_own_init', False):
    params = torch_default_init(params, k_params)
  state = TrainState.create(
    apply_fn=model.apply, params=params, tx=tx, batch_stats=variables.get('batch_stats', {})
  )
  return state.replace(step=jnp.asarray(0, jnp.int32))
