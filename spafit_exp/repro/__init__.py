"""Reproductions of the three papers (`python -m spafit_exp.repro PAPER`): the top layer of the package — it
runs ordinary runs and reads their records through the run, sweep and table code; nothing imports it."""
