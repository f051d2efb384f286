"""`python -m experiments.sampling_attacks`: see experiments/sampling_attacks/README.md."""

from experiments.sampling_attacks import command_line

command_line()
