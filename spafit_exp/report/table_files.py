"""A built table as files: Markdown (also printed), a LaTeX `tabular` fragment and CSV, each with the same rows and
columns (`make tables --format md tex csv`)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from spafit_exp.report.cells import EDGE, MISSING

FORMATS = ("md", "tex", "csv")
TEXT_COLUMNS = {"Model", "Method", "Task", "Selector"}  # left-aligned in LaTeX; every other column holds numbers


def to_latex(table: pd.DataFrame, note: str) -> str:
    """A booktabs `tabular` fragment, pdflatex-safe (no raw ±, †, —), numbers right-aligned."""
    align = "".join("l" if column in TEXT_COLUMNS else "r" for column in table.columns)
    latex = table.to_latex(index=False, escape=True, column_format=align)
    tex = f"% {note}\n% needs \\usepackage{{booktabs}}\n{latex}"
    tex = re.sub(r"\*\*(.+?)\*\*", r"\\textbf{\1}", tex)  # the significance marks
    return tex.replace("±", r"$\pm$").replace(EDGE, r"$^\dagger$").replace(MISSING, "--").replace("×", r"$\times$")


def write(out: Path, name: str, table: pd.DataFrame, note: str, formats=("md", "tex")) -> Path:
    """`<out>/<name>.<format>` for each of `formats` (the Markdown is printed either way); returns the first.
    CSV: the table as printed, without bold marks or footer, for a spreadsheet or `pandas.read_csv`."""
    markdown = f"## {name}\n\n{table.to_markdown(index=False, disable_numparse=True)}\n\n{note}\n"
    writers = {"md": lambda path: path.write_text(markdown), "tex": lambda path: path.write_text(to_latex(table, note)),
               "csv": lambda path: table.replace(r"\*\*(.+?)\*\*", r"\1", regex=True).to_csv(path, index=False)}
    paths = [out / f"{name}.{kind}" for kind in formats]
    for kind, path in zip(formats, paths):
        writers[kind](path)
    print(markdown)
    return paths[0]
