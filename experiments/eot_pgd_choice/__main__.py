"""`python -m experiments.eot_pgd_choice`: see experiments/eot_pgd_choice/README.md."""

from experiments.eot_pgd_choice import command_line

command_line()
