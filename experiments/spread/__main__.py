"""`python -m experiments.spread`: see experiments/spread/README.md."""

from experiments.spread import command_line

command_line()
