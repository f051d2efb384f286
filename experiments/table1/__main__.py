"""`python -m experiments.table1`: see experiments/table1/README.md."""

from experiments.table1 import command_line

command_line()
