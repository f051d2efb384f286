"""Training: state, optimisers, objectives, the per-device step, parallel wrappers, the loop."""
from jaxrobust.train.checkpoint import Checkpointer
from jaxrobust.train.loop import (BRANCH_DISPATCH, NonFiniteLossError, build_model, load_data,
                                  make_step_runner, seeded_keys, train_and_evaluate)
from jaxrobust.train.metrics import JsonlWriter, read_jsonl
from jaxrobust.train.objectives import (OBJECTIVES, adversarial_objective, build_objective,
                                        clean_objective, mixed_objective, mixed_policy_branch,
                                        trades_objective)
from jaxrobust.train.optim import decay_mask, make_optimizer, make_schedule
from jaxrobust.train.parallel import ParallelStep, data_mesh, make_parallel_step
from jaxrobust.train.state import TrainState, create_train_state
from jaxrobust.train.step import (accuracy, cross_entropy, evaluate_clean, make_train_step,
                                  model_forward, step_keys)
