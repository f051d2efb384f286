"""`python -m experiments.paired`: see experiments/paired/README.md."""

from experiments.paired import command_line

command_line()
