"""`python -m experiments.lwta_kl`: see experiments/lwta_kl/README.md."""

from experiments.lwta_kl import command_line

command_line()
