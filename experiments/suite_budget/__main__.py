"""`python -m experiments.suite_budget`: see experiments/suite_budget/README.md."""

from experiments.suite_budget import command_line

command_line()
