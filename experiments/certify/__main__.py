"""`python -m experiments.certify`: see experiments/certify/README.md."""

from experiments.certify import command_line

command_line()
