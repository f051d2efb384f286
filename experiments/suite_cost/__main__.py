"""`python -m experiments.suite_cost`: see experiments/suite_cost/README.md."""

from experiments.suite_cost import command_line

command_line()
