"""Where QGNet's region maps are high once it is trained: objects or background (issue 20, item 3).

    python bench/region_maps.py runs/fewshot-table-coco128/eval            # every row's evaluation
    python bench/region_maps.py runs/fewshot-table-coco128/eval/qgnet ...  # or some of them

The dense probe (``glocon.probe.priormap``) scores the prior map of Eq. 9-12 between F's and the
prior's raw features. Inside QGNet the map is computed after a *learned* 3x3 conv on each side
(the release's ``down_learn_super`` / ``down_learn_unsuper``, ``model/PFENet_QGNet.py``; glocon's
``down_bridge_prior`` / ``down_prior``), so its sign on objects is whatever the fit made it. This
reads what every evaluation already measured on the novel-class query images of its episodes
(``glocon.fewshot.metrics.RegionMapAccumulator``: the mean of each map over object and over
background pixels, first episode seed of each fold and shot) and says which side each map is high
on. Training-free rows have no maps and are skipped. No computation: the evaluations' files.

Headline lines last: ``<row>_<map>_object_minus_background_<k>shot``, the mean over folds of the
object mean minus the background mean (> 0: high on objects; the paper's Sec. IV-C says the prior
map is low on objects).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def row_maps(results: dict) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """{shots: {map: [(fold, object_mean, background_mean), ...]}} from one evaluation's results."""
    out: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
    for fold, per in sorted(results["folds"].items(), key=lambda kv: int(kv[0])):
        for k, r in per.items():
            for name, m in (r.get("region_maps") or {}).items():
                out.setdefault(k, {}).setdefault(name, []).append((int(fold), m["object_mean"], m["background_mean"]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evals", nargs="+", type=Path, help="evaluation folders (holding results.json), or a folder of them")
    args = ap.parse_args(argv)
    dirs = []
    for d in args.evals:
        if (d / "results.json").is_file():
            dirs.append(d)
        elif d.is_dir() and any((c / "results.json").is_file() for c in d.iterdir()):
            dirs += sorted(c for c in d.iterdir() if (c / "results.json").is_file())
        else:
            print(f"error: {d}: no results.json in it or in its subfolders (expected a `glocon fewshot eval` output folder)", file=sys.stderr)
            return 2
    print("| row | map | shots | per fold: object / background mean | mean object - background | high on |")
    print("|---|---|---|---|---|---|")
    headline: dict[str, float] = {}
    for d in dirs:
        results = json.loads((d / "results.json").read_text())
        for k, maps in sorted(row_maps(results).items()):
            for name, folds in sorted(maps.items()):
                diff = sum(o - b for _, o, b in folds) / len(folds)
                cells = ", ".join(f"{f}: {o:.3f} / {b:.3f}" for f, o, b in folds)
                print(f"| {d.name} | {name} | {k} | {cells} | {diff:+.3f} | {'objects' if diff > 0 else 'background'} |")
                headline[f"{d.name.replace('-', '_')}_{name}_object_minus_background_{k}shot"] = diff
    for key, value in headline.items():
        print(f"{key} = {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
