"""`python -m experiments.fast_at`: see experiments/fast_at/README.md."""

from experiments.fast_at import command_line

command_line()
