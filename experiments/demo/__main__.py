"""`python -m experiments.demo`: see experiments/demo/README.md."""

from experiments.demo import command_line

command_line()
