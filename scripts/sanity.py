"""Method quality check: every method in conf/method/ (and method=subset with every selector) trains on SST-2 at
its recommended learning rate, and must beat the majority-class baseline clearly with a falling training loss.

    python -m scripts.sanity                      # 2,000 rows, 3 epochs, full dev set, seed 1 (~30 min, 2 cores)
    python -m scripts.sanity --tiny               # CI's version: 320 rows, 2 epochs, the loss must fall
    python -m scripts.sanity --methods spafit,lora_ii --lr 1e-3    # try another rate for some methods

Each case is an ordinary run (`python -m spafit_exp ...`) under --out: a finished run of the same recipe is reused
(skip-if-done; its recorded time is reported), so an interrupted check continues. Writes <out>/sanity.{json,md}. A method
whose preset does not fit the model (SPAFIT's 24-layer splits on the 6-layer embedded model) is listed as n/a.
Exit status 1 when any case fails its check."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

from spafit_exp import CONF_DIR  # noqa: E402
from spafit_exp.core.errors import ConfigError  # noqa: E402
from spafit_exp.core.results import cpu_name  # noqa: E402
from spafit_exp.inputs.metrics import loss_falls  # noqa: E402
from spafit_exp.run.app import run  # noqa: E402
from spafit_exp.run.config import compose  # noqa: E402
from spafit_exp.run.validation import validate  # noqa: E402

MAJORITY = 0.509  # SST-2 dev: share of the larger class


def cases(methods: list[str] | None) -> list[tuple[str, list[str]]]:
    """(name, overrides) per method YAML; method=subset once per selector."""
    names = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
    selectors = sorted(p.stem for p in (CONF_DIR / "selector").glob("*.yaml") if p.stem != "none" and not p.stem.startswith("_"))
    out = []
    for name in names:
        if name == "subset":
            out += [(f"subset/{s}", ["method=subset", f"selector={s}"]) for s in selectors]
        else:
            out.append((name, [f"method={name}"]))
    if methods:
        out = [(n, o) for n, o in out if n in methods or n.split("/")[0] in methods]
    return out


def recipe(args) -> list[str]:
    overrides = [f"task={args.task}", f"trainer.max_train_samples={args.rows}", f"trainer.epochs={args.epochs}",
                 f"trainer.seed={args.seed}", "trainer.eval_train_samples=0", f"trainer.log_every={args.log_every}",
                 "trainer.checkpoint_every=0", "trainer.save_trainable=false",
                 f"experiment_name=sanity-{args.rows}x{args.epochs}", f"run.root={args.out}/runs"]
    if args.eval_rows:
        overrides.append(f"trainer.max_eval_samples={args.eval_rows}")
    if args.lr:
        overrides.append(f"trainer.lr={args.lr}")
    if args.batch:
        overrides.append(f"trainer.batch_size={args.batch}")
    return overrides + list(args.set)


def pruning_losses(info: dict) -> list:
    """The pruning fine-tune's logged losses while it still learns densely: under `prune_schedule=gradual` the
    first half of the pruning ramp (at least 1/8 of the candidates kept); pruning down to k then raises the loss on a
    run as short as CI's by design, which is not a method that stopped learning (the full check scores the model)."""
    losses = info.get("prune_losses") or []
    if info.get("prune_schedule") != "gradual" or not losses:
        return losses
    ramp_half = info["prune_end"] * losses[-1][0] / 2
    return [(step, loss) for step, loss in losses if step <= ramp_half]


def run_case(name: str, overrides: list[str], args, in_process: bool = False) -> dict:
    full = overrides + recipe(args)
    if name.startswith("subset/") and "pretrain_samples" in compose(full).selector:
        full.append(f"selector.pretrain_samples={args.rows}")  # WikiText statistics over all 30k paragraphs: hours
    try:
        cfg = compose(full)
        validate(cfg)
    except ConfigError as err:
        return {"case": name, "status": "n/a", "reason": str(err)}
    started = time.time()
    if in_process:  # the test suite: no interpreter start-up per case
        run(compose(full))
    else:
        env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        proc = subprocess.run([sys.executable, "-m", "spafit_exp", *full], cwd=REPO, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"case": name, "status": "error", "reason": tail[0], "wall_s": time.time() - started}
    record_path = Path(cfg.run.dir) / "results.json"
    record = json.loads(record_path.read_text())
    losses = record["train"]["losses"]
    if not losses and record["metrics"]["best"].get("epoch") == 0:  # nothing retrained (diff pruning, evaluated)
        losses = pruning_losses(record["method_info"])  # what learned: the pruning fine-tune
    acc = record["metrics"]["best"]["dev"].get("accuracy")
    ok_loss = loss_falls(losses)
    ok_acc = args.min_acc is None or (acc is not None and acc >= args.min_acc)
    return {"case": name, "status": "pass" if ok_loss and ok_acc else "FAIL", "lr": record["lr"],
            "trainable": record["params"]["trainable"], "fraction": record["params"]["fraction"], "accuracy": acc,
            "first_loss": losses[0][1] if losses else None, "last_loss": losses[-1][1] if losses else None,
            "loss_falls": ok_loss, "wall_s": record["timing"]["wall_s"], "train_s": record["timing"]["train_s"]}


def markdown(rows: list[dict], args, header: str) -> str:
    lines = [header, "", "| method | lr | trainable | dev acc | first loss | last loss | time (s) | check |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r["status"] in ("n/a", "error"):
            lines.append(f"| {r['case']} |  |  |  |  |  |  | {r['status']}: {r['reason']} |")
            continue
        lines.append(f"| {r['case']} | {r['lr']:g} | {r['trainable']:,} ({100 * r['fraction']:.2f}%) | "
                     f"{r['accuracy']:.4f} | {r['first_loss']:.4f} | {r['last_loss']:.4f} | {r['wall_s']:.0f} | "
                     f"{r['status']} |")
    return "\n".join(lines) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--eval-rows", type=int, default=None, help="dev rows scored (default: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--batch", type=int, default=None, help="training batch (default: the task's)")
    parser.add_argument("--min-acc", type=float, default=0.70, help="dev accuracy a method must reach")
    parser.add_argument("--methods", default=None, help="comma list of method (or subset/<selector>) names")
    parser.add_argument("--lr", default=None, help="override every case's recommended rate")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra override for every case (repeatable), e.g. --set method.update=masked_grad; "
                             "use its own --out: a run directory holds one recipe")
    parser.add_argument("--tiny", action="store_true", help="CI's version: 320 rows, 2 epochs, only the loss must fall")
    parser.add_argument("--out", default="outputs/sanity")
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    if args.tiny:
        # 40 optimizer steps over the same 320 rows twice: enough for the slow starters (LoRA's B starts at zero,
        # Multi-Head at 1e-4) to move the loss at their own rate; 1 epoch of 200 rows was not
        args.rows, args.epochs, args.eval_rows, args.log_every, args.min_acc = 320, 2, 64, 2, None
    args.out = str(Path(args.out).resolve())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    rows = []
    selected = cases(args.methods.split(",") if args.methods else None)
    for i, (name, overrides) in enumerate(selected, 1):
        row = run_case(name, overrides, args)
        rows.append(row)
        print(f"[{i}/{len(selected)}] {name}: {row['status']} acc={row.get('accuracy')} lr={row.get('lr')} "
              f"loss {row.get('first_loss')} -> {row.get('last_loss')} ({row.get('wall_s', 0):.0f}s)"
              + (f" {row['reason']}" if "reason" in row else ""), flush=True)
    header = (f"SST-2 sanity check: `python -m scripts.sanity {' '.join(argv if argv is not None else sys.argv[1:])}` "
              f"— {args.rows} training rows, {args.epochs} epoch(s), seed {args.seed}, "
              f"dev rows: {args.eval_rows or 'all'}; pass = loss falls"
              + (f" and dev accuracy >= {args.min_acc} (majority class {MAJORITY})" if args.min_acc else "")
              + f". {datetime.date.today()}, {cpu_name()}, {os.cpu_count()} cores.")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sanity.json").write_text(json.dumps(rows, indent=2))
    (out / "sanity.md").write_text(markdown(rows, args, header))
    print(markdown(rows, args, header))
    return 1 if any(r["status"] in ("FAIL", "error") for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
