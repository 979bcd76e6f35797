"""`python -m spafit_exp.predict RUN_DIR FILE [--out FILE]`: a finished run's predictions for the rows of FILE, as
a GLUE submission file: a header `index<TAB>prediction`, then one line per row with the row's `index` (FILE's own
`index` column where it has one, as GLUE's test files do; else 0, 1, ...) and the prediction as GLUE expects it:
the label name for tasks with named labels (`entailment` / `not_entailment` for RTE and QNLI, MNLI's three),
the class id for the others (`0` / `1` for CoLA, SST-2, MRPC, QQP, WNLI), a number with three decimals for
STS-B. The default --out is `<task display name>.tsv` (`RTE.tsv`) in the current folder.

FILE is read with the task's reader: for GLUE tasks a TSV with a header naming the task's text fields (GLUE's
`test.tsv`; a `dev.tsv` with a header works too, its labels are ignored), so a malformed row is one line naming
`file:line`. The model is the run's best epoch (`checkpoint.load_run`), inputs tokenized and cut at the run's
`trainer.max_len` as in training; a GPU is used when there is one. Token tasks (CoNLL-2003) are refused: one
prediction per row is what this writes. The same refusals as the export (spafit_exp/export.py): a RUN_DIR that is
no completed run, an --out that is a symbolic link or inside a run directory. The file is written atomically."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from omegaconf import OmegaConf

from spafit_exp.core import results
from spafit_exp.core.errors import ConfigError
from spafit_exp.core.run_files import exit_status
from spafit_exp.core.spec import stored_specs
from spafit_exp.export import check_out, completed_run, label_names, load_model, model_spec

HEADER = "index\tprediction"


def read_rows(path: Path, cfg) -> tuple[list[str], list[list[str]]]:
    """(row ids, texts per text field) of a file in the task's format."""
    from spafit_exp.inputs.readers import READERS, utf8_errors

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    with utf8_errors(path):
        raw = READERS[cfg.task.reader](Path(path), stored_specs(cfg)[1], labelled=cfg.task.reader != "glue_tsv")
        ids = [str(i) for i in range(len(raw.labels))]
        if cfg.task.reader == "glue_tsv":
            with open(path, encoding="utf-8-sig", newline="") as handle:
                rows = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
                header = next(rows)
                if "index" in header:  # GLUE's own row ids: the submission is matched on them
                    column = header.index("index")
                    ids = [row[column] for row in rows]
    return ids, raw.texts


def prediction_lines(task, ids: list[str], logits) -> list[str]:
    """The submission lines for `logits` ([rows, labels] array), header first."""
    if task.type == "regression":
        values = [f"{float(v):.3f}" for v in logits[:, 0]]
    else:
        names = label_names(task)
        values = [names[int(i)] for i in logits.argmax(-1)]
    return [HEADER, *(f"{i}\t{v}" for i, v in zip(ids, values, strict=True))]


def _logits(model, tokenizer, texts: list[list[str]], max_len: int, batch_size: int):
    import numpy as np
    import torch

    from spafit_exp.inputs.data import clip

    encoded = tokenizer(*(clip(field, max_len) for field in texts), truncation=True, max_length=max_len)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model.to(device).eval()
    pads = {"input_ids": tokenizer.pad_token_id or 0, "attention_mask": 0, "token_type_ids": 0}
    out = []
    with torch.inference_mode():
        for start in range(0, len(encoded["input_ids"]), batch_size):
            rows = {k: encoded[k][start:start + batch_size] for k in keys}
            width = max(len(r) for r in rows["input_ids"])  # padded to the batch's longest row, as in training
            batch = {k: torch.tensor([r + [pads[k]] * (width - len(r)) for r in v], device=device)
                     for k, v in rows.items()}
            out.append(model(**batch).logits.float().cpu().numpy())
    return np.concatenate(out)


def predict(run_dir: Path, path: Path, out: Path | None = None, batch_size: int = 64) -> tuple[Path, int]:
    """Write the predictions file; returns (its path, rows)."""
    record = completed_run(run_dir)
    cfg = OmegaConf.create(record["config"])
    if cfg.task.type == "token_classification":
        raise ConfigError(f"task={cfg.task.name}: tags tokens; predict writes one prediction per row (sentence "
                          "tasks only)")
    out = check_out(Path(out) if out else Path(f"{cfg.task.display}.tsv"), folder=False)
    ids, texts = read_rows(path, cfg)
    from spafit_exp.inputs.modeling import build_tokenizer

    tokenizer = build_tokenizer(model_spec(cfg))
    logits = _logits(load_model(run_dir, cfg).model, tokenizer, texts, int(cfg.trainer.max_len), batch_size)
    lines = prediction_lines(cfg.task, ids, logits)
    with results.replace_atomically(out) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out, len(lines) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m spafit_exp.predict", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a completed run's directory (it holds results.json)")
    parser.add_argument("file", type=Path, help="rows to predict, in the task's format (GLUE: test.tsv)")
    parser.add_argument("--out", type=Path, default=None, help="predictions file (default: <task display>.tsv)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    def command() -> int:
        if args.batch_size < 1:
            raise ConfigError(f"--batch-size {args.batch_size}: must be >= 1")
        out, rows = predict(args.run_dir, args.file, args.out, args.batch_size)
        print(f"predictions: {out} ({rows} rows)")
        return 0

    return exit_status(command)


if __name__ == "__main__":
    sys.exit(main())
