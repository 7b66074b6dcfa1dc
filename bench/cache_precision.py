"""Precision, recall and false-hit rate of the semantic cache's decision on labelled pairs.

Runs exactly the rule the sidecar ships (`sidecar.cache.semantic.decide`: eligibility,
cosine threshold with the packaged all-MiniLM-L6-v2, literal guards) over a TSV of
`source, label, text_a, text_b` pairs (label 1: the same request, 0: a different one) and
prints, per source group and threshold, with and without the guards:

- precision: served hits that were right;
- recall: right pairs that were served;
- FHR (false-hit rate): wrong pairs that were served, the figure that must stay low.

    python bench/cache_precision.py                       # ../shared/data/cache-pairs-dev.tsv
    python bench/cache_precision.py --pairs FILE --json
    python bench/cache_precision.py --show-false-hits     # the wrong pairs served at the default

Sources are grouped as: coding (coding_synth_*), qqp, template_collision, and all; the
coding hard negatives are also broken down by kind.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.cache.config import CacheConfig  # noqa: E402
from sidecar.cache.embedder import load_minilm  # noqa: E402
from sidecar.cache.semantic import decide  # noqa: E402
from sidecar.testing.captures import shared_dir  # noqa: E402

DEFAULT_PAIRS = shared_dir() / "data" / "cache-pairs-dev.tsv"
THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.95, 0.98)


@dataclass(frozen=True)
class Pair:
    """One labelled pair and its cosine similarity."""

    source: str
    label: int
    a: str
    b: str
    cosine: float = 0.0


def read_pairs(path: Path) -> list[Pair]:
    """The pairs of a `source, label, text_a, text_b` TSV with a header row."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header, body = rows[0], rows[1:]
    if header[:4] != ["source", "label", "text_a", "text_b"]:
        raise SystemExit(f"{path}: expected the columns source, label, text_a, text_b; got {header}")
    return [Pair(r[0], int(r[1]), r[2], r[3]) for r in body if len(r) >= 4]


def group_of(source: str) -> str:
    """The group a source is reported under."""
    return "coding" if source.startswith("coding_") else source


def score(pairs: list[Pair]) -> list[Pair]:
    """The pairs with their cosine under the packaged model."""
    model = load_minilm(threads=2)
    texts = sorted({p.a for p in pairs} | {p.b for p in pairs})
    vecs = model.encode(texts)
    index = {t: i for i, t in enumerate(texts)}
    return [Pair(p.source, p.label, p.a, p.b, float(np.dot(vecs[index[p.a]], vecs[index[p.b]]))) for p in pairs]


def metrics(pairs: list[Pair], served: list[bool]) -> dict[str, Any]:
    """Precision, recall and false-hit rate of the served decisions."""
    tp = sum(1 for p, s in zip(pairs, served, strict=True) if s and p.label == 1)
    fp = sum(1 for p, s in zip(pairs, served, strict=True) if s and p.label == 0)
    pos = sum(1 for p in pairs if p.label == 1)
    neg = len(pairs) - pos
    return {
        "pairs": len(pairs),
        "positives": pos,
        "negatives": neg,
        "hits": tp + fp,
        "false_hits": fp,
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / pos, 4) if pos else None,
        "fhr": round(fp / neg, 4) if neg else None,
    }


def evaluate(pairs: list[Pair], min_words: int) -> dict[str, Any]:
    """Every group x threshold x (guards on, cosine only)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(pairs):
        groups[group_of(p.source)].append(i)
        groups["all"].append(i)
        if p.source.startswith("coding_synth_hardneg_"):
            groups["coding:" + p.source.removeprefix("coding_synth_hardneg_")].append(i)
    out: dict[str, Any] = {}
    for t in THRESHOLDS:
        guarded = [decide(p.a, p.b, p.cosine, t, min_words).hit for p in pairs]
        plain = [p.cosine >= t for p in pairs]
        for g, idx in groups.items():
            sub = [pairs[i] for i in idx]
            out.setdefault(g, {})[f"{t:.2f}"] = {
                "guards": metrics(sub, [guarded[i] for i in idx]),
                "cosine_only": metrics(sub, [plain[i] for i in idx]),
            }
    return out


def _fmt(v: float | None) -> str:
    return "   -  " if v is None else f"{v:6.3f}"


def print_table(results: dict[str, Any], default: float) -> None:
    """One block per group: a row per threshold, guards on and cosine only side by side."""
    order = ["coding", "qqp", "template_collision", "all", *sorted(g for g in results if g.startswith("coding:"))]
    for g in [g for g in order if g in results]:
        first = next(iter(results[g].values()))["guards"]
        print(f"\n{g}  ({first['positives']} positive, {first['negatives']} negative pairs)")
        print("  t      | guards: prec  recall  FHR    hits | cosine only: prec  recall  FHR")
        for t, row in results[g].items():
            gr, co = row["guards"], row["cosine_only"]
            mark = " <- default" if abs(float(t) - default) < 1e-9 else ""
            print(
                f"  {t}   |       {_fmt(gr['precision'])} {_fmt(gr['recall'])} {_fmt(gr['fhr'])} {gr['hits']:5d} |"
                f"       {_fmt(co['precision'])} {_fmt(co['recall'])} {_fmt(co['fhr'])}{mark}"
            )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 when the coding FHR at the default threshold passes 1%."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS, help="the labelled TSV")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--show-false-hits", action="store_true", help="list wrong pairs served at the default")
    args = parser.parse_args(argv)
    if not args.pairs.exists():
        print(f"error: {args.pairs} does not exist; pass --pairs FILE", file=sys.stderr)
        return 2
    cfg = CacheConfig()
    t0 = time.perf_counter()
    pairs = score(read_pairs(args.pairs))
    elapsed = time.perf_counter() - t0
    results = evaluate(pairs, cfg.min_words)
    default_key = f"{cfg.threshold:.2f}"
    coding_fhr = results["coding"][default_key]["guards"]["fhr"]
    if args.json:
        print(json.dumps({"pairs_file": str(args.pairs), "default_threshold": cfg.threshold, "results": results}, indent=1))
    else:
        print(f"{len(pairs)} pairs from {args.pairs} scored in {elapsed:.1f} s; default threshold {cfg.threshold}")
        print_table(results, cfg.threshold)
        print(f"\ncoding false-hit rate at the default ({cfg.threshold}): {coding_fhr:.3%} (target <= 1%)")
    if args.show_false_hits:
        for p in pairs:
            v = decide(p.a, p.b, p.cosine, cfg.threshold, cfg.min_words)
            if v.hit and p.label == 0:
                print(f"FALSE HIT [{p.source}] cos={p.cosine:.3f}\n   a: {p.a}\n   b: {p.b}")
    return 0 if coding_fhr is not None and coding_fhr <= 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
