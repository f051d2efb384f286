"""`python -m experiments.converged`: see experiments/converged/README.md."""

from experiments.converged import command_line

command_line()
