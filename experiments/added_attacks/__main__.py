"""`python -m experiments.added_attacks`: see experiments/added_attacks/README.md."""

from experiments.added_attacks import command_line

command_line()
