"""QGNet against its controls, the way the field reports it: every fold, 1- and 5-shot, over seeds
of episode files, with bootstrap intervals and paired differences on the same episodes (issue 12).
Writes the markdown that ``docs/results.md`` and ``docs/results-coco128.md`` quote.

    python bench/fewshot_table.py --data embedded --prior runs/learning-embedded/pretrain/scratch-global-local/prior.pt
    python bench/fewshot_table.py --data coco128  --prior runs/learning-coco128/pretrain/scratch-global-local/prior.pt

Rows (the plugins' own rows and controls, ``glocon.fewshot.variants``, as in the demo): QGNet with the pretrained prior, QGNet with
the prior map off, QGNet with an untrained prior of the same architecture (same trained layers, no
pretraining), and the training-free prototype on F's own ImageNet features at the same stride.
Fit reads the train split, evaluation the held-out val split. Shards come from
``bench/learning_table.py``'s folders (``--shards``), so the prior was pretrained on the fit split only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROWS = ("qgnet", "qgnet-no-prior", "qgnet-untrained-prior", "proto-imagenet")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=["embedded", "coco128"], default="embedded")
    ap.add_argument("--prior", required=True, help="the pretrained prior export (bench/learning_table.py writes one)")
    ap.add_argument("--shards", default=None, help="folder holding shards-train/ and shards-val/ (default: runs/learning-<data>)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the few-shot config (e.g. fit.steps=300 eval.seeds=3)")
    args = ap.parse_args(argv)

    from glocon.fewshot.evaluate import compare
    from glocon.fewshot.runner import evaluate, fit
    from glocon.fewshot.variants import comparisons, variant_config, variants
    from glocon.models.prior import PriorArch, read_export, save_untrained_export
    from glocon.plugins import load_plugin

    shards = Path(args.shards or REPO / "runs" / f"learning-{args.data}").resolve()
    out = Path(args.out or REPO / "runs" / f"fewshot-table-{args.data}").resolve()
    untrained = out / "untrained.pt"
    if not untrained.is_file():
        save_untrained_export(PriorArch.model_validate(read_export(args.prior)["arch"]), untrained, seed=0)
    priors = {"pretrained": str(Path(args.prior).resolve()), "untrained": str(untrained), None: None}
    config = REPO / "configs" / ("fewshot-demo.yaml" if args.data == "embedded" else "fewshot-coco128.yaml")
    dirs = {}
    rows = {r: v for r, v in variants(["qgnet", "proto"]).items() if r in ROWS}
    for row, v in rows.items():
        cfg = variant_config(
            config, row, v, priors=priors, fit_shards=shards / "shards-train", eval_shards=shards / "shards-val", folds=args.folds,
            episodes_dir=out / "episodes", storage=out / "fit", eval_root=out / "eval", extra=args.overrides,
        )  # fmt: skip
        plugin_name = v.plugin
        plugin = load_plugin(plugin_name)
        if plugin.trainable:
            fit(plugin, cfg)
        evaluate(plugin, cfg)
        dirs[row] = out / "eval" / row
    pairs = comparisons(rows)
    lines = _table(dirs, args, pairs)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    for a, b in pairs:
        r = compare(dirs[a], dirs[b])["shots"]
        for k, v in r.items():
            print(f"{a.replace('-', '_')}_minus_{b.replace('-', '_')}_{k}shot = {100 * v['difference']:.2f}")
    return 0


def _table(dirs: dict, args, pairs: list) -> list[str]:
    from glocon.fewshot.evaluate import compare

    lines = ["| model | 1-shot mIoU | 5-shot mIoU | 1-shot FB-IoU | 5-shot FB-IoU |", "|---|---|---|---|---|"]
    for row, d in dirs.items():
        m = json.loads((d / "results.json").read_text())["mean"]
        cell = lambda k: f"{100 * m[k]['miou']:.1f} ± {100 * m[k]['miou_std']:.1f} [{100 * m[k]['miou_ci'][0]:.1f}, {100 * m[k]['miou_ci'][1]:.1f}]"  # noqa: E731
        lines.append(f"| {row} | {cell('1')} | {cell('5')} | {100 * m['1']['fb_iou']:.1f} | {100 * m['5']['fb_iou']:.1f} |")
    lines += ["", "| A - B (same episodes) | 1-shot mIoU difference [95% paired CI] | 5-shot |", "|---|---|---|"]
    for a, b in pairs:
        r = compare(dirs[a], dirs[b])["shots"]
        lines.append(f"| {a} - {b} | " + " | ".join(f"{100 * r[k]['difference']:+.1f} [{100 * r[k]['ci_low']:+.1f}, {100 * r[k]['ci_high']:+.1f}]" for k in ("1", "5")) + " |")
    lines += ["", f"Folds {args.folds}; mIoU in %, mean over folds of the mean over seeds ± the std over seeds of the fold mean [95% bootstrap CI]."]
    return lines


if __name__ == "__main__":
    sys.exit(main())
