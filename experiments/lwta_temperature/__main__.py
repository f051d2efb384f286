"""`python -m experiments.lwta_temperature`: see experiments/lwta_temperature/README.md."""

from experiments.lwta_temperature import command_line

command_line()
