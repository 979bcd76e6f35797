"""The papers a reproduction knows, by the name the command takes."""

from spafit_exp.core.errors import ConfigError
from spafit_exp.repro import spafit, stoc, subset
from spafit_exp.repro.recipe import Paper

PAPERS: dict[str, Paper] = {p.name: p for p in (spafit.PAPER, stoc.PAPER, subset.PAPER)}


def paper(name: str) -> Paper:
    if name not in PAPERS:
        raise ConfigError(f"paper {name!r}: choose from {', '.join(PAPERS)}")
    return PAPERS[name]
