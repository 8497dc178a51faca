"""QGNet against its controls, the way the field reports it: every fold, 1- and 5-shot, over seeds
of episode files, with bootstrap intervals and paired differences on the same episodes (issues 12,
18, 23). Writes the markdown that ``docs/results.md`` and ``docs/results-coco128.md`` quote.

    python bench/fewshot_table.py --data embedded --folds 0      # builds or reuses the shards and the prior it needs
    python bench/fewshot_table.py --data embedded                # all 4 folds
    python bench/fewshot_table.py --data coco128
    python bench/fewshot_table.py --data embedded --folds 0 --fit-seeds 3   # the spread over training seeds too

Rows (the plugins' own rows and controls, ``glocon.fewshot.variants``, as in the demo): QGNet with
the pretrained prior, with the prior map off, with an untrained prior of the same architecture,
with F's own ImageNet features (Lite0) as the prior; the training-free prototype on F's features
(as declared, and with its threshold and mode chosen on base-val) and on the prior's; and a
diagnostic, QGNet with the ground-truth map (``oracle_map_gain``). Every QGNet fit holds out
base-val images of the fit split and keeps its best step (``glocon.fewshot.baseval``). Fit reads
the train split, evaluation the held-out val split; the prior was pretrained on the fit split only.
With ``--fit-seeds N`` each trained row is fitted N times (training seeds ``fit.seed``: initial
weights, episode order; base-val and the eval episodes stay fixed): a row is the mean over its fits,
and its intervals resample the fits as well as the episodes (``glocon.fewshot.stats``), since one
fit's interval covers the episodes only. Headline figures print last as ``name = value``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# a diagnostic row, not a result: QGNet with the query's ground truth as its guided map (at the
# map's grid). oracle - qgnet is how much the decoder can read from a map at all (issue 23).
ORACLE = "qgnet-oracle-map"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=["embedded", "coco128"], default="embedded")
    ap.add_argument("--prior", default=None, help="the pretrained prior export (default: the recipe's, pretrained here on the fit split when missing)")
    ap.add_argument("--shards", default=None, help="folder holding shards-train/ and shards-val/ (default: runs/learning-<data>)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--rows", nargs="+", default=None, help="only these rows (default: every row and control, and the oracle map)")
    ap.add_argument("--fit-seeds", type=int, default=1, help="fits per trained row, training seeds seed, seed+1, ... (fit.seed); rows and differences are the mean over fits, intervals also resample the fits")
    ap.add_argument("overrides", nargs="*", help="key=value overrides of the few-shot config (e.g. fit.steps=300 eval.seeds=3)")
    # key=value overrides are taken out first, wherever they stand: argparse would read one placed
    # after --folds or --rows as a fold or a row name (a 4-fold run was lost to `--folds 0 1 2 eval.shots=[5]`)
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides = [a for a in argv if is_override(a)]
    args = ap.parse_args([a for a in argv if not is_override(a)])
    args.overrides = overrides

    from glocon.fewshot.runner import evaluate, fit
    from glocon.fewshot.variants import Variant, comparisons, resolve_row, variant_config, variants
    from glocon.models.prior import PriorArch, read_export, save_imagenet_export, save_untrained_export
    from glocon.plugins import load_plugin

    # rows are checked before anything is built: a misspelt row must not cost a pretraining run first
    rows = dict(variants(["qgnet", "proto"]))
    rows[ORACLE] = Variant("qgnet", ("model.guided_map_source=oracle",), "pretrained")
    if args.rows:
        unknown = [r for r in args.rows if r not in rows]
        if unknown:
            ap.error(f"--rows: unknown row(s) {unknown}; expected some of {list(rows)}")
        rows = {r: v for r, v in rows.items() if r in args.rows}
    t_start, t_store = time.perf_counter(), time.time()
    shards = Path(args.shards or REPO / "runs" / f"learning-{args.data}").resolve()
    args.prior = ensure_inputs(args.data, shards, args.prior)
    out = Path(args.out or REPO / "runs" / f"fewshot-table-{args.data}").resolve()
    arch = PriorArch.model_validate(read_export(args.prior)["arch"])
    controls = {"untrained": (out / "untrained.pt", save_untrained_export), "imagenet": (out / "imagenet-prior.pt", save_imagenet_export)}
    priors: dict = {"pretrained": args.prior, None: None}
    for kind, (path, save) in controls.items():
        if not path.is_file():
            save(arch, path)
        priors[kind] = str(path)
    config = REPO / "configs" / ("fewshot-demo.yaml" if args.data == "embedded" else "fewshot-coco128.yaml")
    dirs: dict[str, list[Path]] = {}
    fits, chosen = {}, {}
    for row, v in rows.items():
        plugin = load_plugin(v.plugin)
        # one fit per training seed; the first keeps the run's seed (fit.seed unset), so a table
        # with more fit seeds extends, and reuses, the fits of one with fewer
        names = [row] + [f"{row}-fit{i}" for i in range(1, args.fit_seeds)] if plugin.trainable else [row]
        for i, name in enumerate(names):
            cfg = variant_config(
                config, name, v, priors=priors, fit_shards=shards / "shards-train", eval_shards=shards / "shards-val", folds=args.folds,
                episodes_dir=out / "episodes", storage=out / "fit", eval_root=out / "eval", extra=args.overrides,
            )  # fmt: skip
            if i:
                cfg = cfg.model_copy(update={"fit": cfg.fit.model_copy(update={"seed": cfg.seed + i})})
            cfg, choice = resolve_row(plugin, cfg, v)
            if choice is not None:
                chosen[row] = choice
                scores = ", ".join(f"{' '.join(c)}: {m:.1f}" for c, m in choice["scores"])
                print(f"[{row}] chosen on base-val: {choice['chosen']} ({scores})", flush=True)
            if plugin.trainable:
                t0 = time.perf_counter()
                summary = fit(plugin, cfg)
                f = fits.setdefault(row, {"minutes": 0.0, "runs": {}, "fits": 0})
                f["minutes"] += (time.perf_counter() - t0) / 60
                f["fits"] += 1
                f["runs"].update({f"fold{fo}-{k}shot" + (f"-fit{i}" if i else ""): info for fo, per in summary["folds"].items() for k, info in per.items()})
            evaluate(plugin, cfg)
            dirs.setdefault(row, []).append(out / "eval" / name)
    pairs = [p for p in comparisons({r: v for r, v in rows.items() if r != ORACLE}) if p[0] in dirs and p[1] in dirs]
    if ORACLE in dirs and "qgnet" in dirs:
        pairs.append((ORACLE, "qgnet"))
    lines = _table(dirs, args, pairs, fits, chosen)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    _headline(dirs, pairs, fits, time.perf_counter() - t_start, t_store)
    return 0


def is_override(arg: str) -> bool:
    """A ``key=value`` config override (``eval.shots=[5]``), not an option or its value."""
    key, eq, _ = arg.partition("=")
    return bool(eq) and not arg.startswith("-") and key.replace(".", "").replace("_", "").isalnum()


def _headline(dirs: dict, pairs: list, fits: dict, seconds: float, t_store: float) -> None:
    """The issue's names, last, as ``name = value``."""
    from glocon.featstore import open_store, stats_since
    from glocon.fewshot.evaluate import compare

    short = {"proto-imagenet": "proto", "qgnet-no-prior": "no_prior", "qgnet-untrained-prior": "untrained_prior", "qgnet-imagenet-prior": "lite0_prior", "proto-imagenet-tuned": "proto_tuned"}
    out: dict[str, float] = {}
    for a, b in pairs:
        r = compare(dirs[a], dirs[b])["shots"]
        for k, v in r.items():
            if a == ORACLE:
                out[f"oracle_map_gain_{k}shot"] = 100 * v["difference"]
            elif b in short:
                out[f"qgnet_minus_{short[b]}_{k}shot"] = 100 * v["difference"]
                out[f"qgnet_minus_{short[b]}_ci_low_{k}shot"] = 100 * v["ci_low"]
            else:
                out[f"{a.replace('-', '_')}_minus_{b.replace('-', '_')}_{k}shot"] = 100 * v["difference"]
    if "proto-imagenet-tuned" in dirs:
        m = json.loads((dirs["proto-imagenet-tuned"][0] / "results.json").read_text())["mean"]
        out.update({f"proto_tuned_{k}shot": 100 * m[k]["miou"] for k in m})
    if "qgnet" in fits:
        runs = fits["qgnet"]["runs"]
        out["fit_steps_to_plateau"] = sum(i.get("best_step") or i["step"] for i in runs.values()) / len(runs)
        out["fit_minutes"] = fits["qgnet"]["minutes"] / fits["qgnet"]["fits"]  # one fit of the row, every fold
    store = open_store()
    if store is not None:  # every process's lookups since the bench started (fit caches, evaluations, base-val choices)
        s = stats_since(store.root, t_store)
        print(f"feature store {store.root}: {s.hits} hits, {s.misses} misses, read {s.bytes_read / 2**20:.0f} MiB, wrote {s.bytes_written / 2**20:.0f} MiB")
        out["store_hit_rate"] = s.hit_rate or 0.0
    out["fewshot_table_minutes"] = seconds / 60
    for k, v in out.items():
        print(f"{k} = {v:.2f}")


def ensure_inputs(data: str, shards: Path, prior: str | None) -> str:
    """The shards (train and val split) and the pretrained prior the table needs: reused when
    present, else written by ``bench/learning_table.py``'s own functions (the demo's recipe,
    ``configs/pretrain-<data>.yaml``, from scratch, on the fit split only). Returns the prior."""
    sys.path.insert(0, str(REPO / "bench"))
    import learning_table as lt

    if not ((shards / "shards-train" / "manifest.json").is_file() and (shards / "shards-val" / "manifest.json").is_file()):
        lt.make_shards(data, shards)
    if prior is None:
        prior, _, _ = lt.pretrain(REPO / "configs" / lt.INITS["scratch"].format(data=data), shards / "shards-train", shards, "scratch-global-local", 300, [])
    return str(Path(prior).resolve())


def _table(dirs: dict, args, pairs: list, fits: dict, chosen: dict) -> list[str]:
    from glocon.fewshot.evaluate import compare, over_fits

    first = json.loads((next(iter(dirs.values()))[0] / "results.json").read_text())["mean"]
    shots = sorted(first, key=int)  # the shot counts evaluated (eval.shots: one of them alone is a valid table)
    lines = [
        "| model | " + " | ".join(f"{k}-shot mIoU" for k in shots) + " | " + " | ".join(f"{k}-shot FB-IoU" for k in shots) + " | fit: kept step (stopped early) / minutes |",
        "|---|" + "---|" * (2 * len(shots) + 1),
    ]
    for row, ds in dirs.items():
        m = json.loads((ds[0] / "results.json").read_text())["mean"]
        cell = lambda k: f"{100 * m[k]['miou']:.1f} ± {100 * m[k]['miou_std']:.1f} [{100 * m[k]['miou_ci'][0]:.1f}, {100 * m[k]['miou_ci'][1]:.1f}]"  # noqa: E731
        if len(ds) > 1:  # the mean over fits ± their std [two-level CI] (each fit's)
            m = over_fits(ds)
            cell = lambda k: f"{100 * m[k]['miou']:.1f} ± {100 * m[k]['fit_std']:.1f} [{100 * m[k]['miou_ci'][0]:.1f}, {100 * m[k]['miou_ci'][1]:.1f}] ({', '.join(f'{100 * x:.1f}' for x in m[k]['per_fit'])})"  # noqa: E731
        fit = fits.get(row)
        how = "; ".join(f"{r}: {i.get('best_step', i['step'])}{' (yes)' if i.get('stopped_early') else ''}" for r, i in fit["runs"].items()) + f" / {fit['minutes'] / fit['fits']:.1f}" if fit else "training-free"
        if row in chosen:
            how += f"; chosen on base-val: `{' '.join(chosen[row]['chosen'])}`"
        lines.append(f"| {row} | " + " | ".join(cell(k) for k in shots) + " | " + " | ".join(f"{100 * m[k]['fb_iou']:.1f}" for k in shots) + f" | {how} |")
    lines += ["", "| A - B (same episodes) | " + " | ".join(f"{k}-shot mIoU difference [95% paired CI]" for k in shots) + " |", "|---|" + "---|" * len(shots)]
    for a, b in pairs:
        r = compare(dirs[a], dirs[b])["shots"]
        each = lambda x: f" (fits: {', '.join(f'{100 * d:+.1f}' for d in x['per_fit'])})" if "per_fit" in x else ""  # noqa: E731
        lines.append(f"| {a} - {b} | " + " | ".join(f"{100 * r[k]['difference']:+.1f} [{100 * r[k]['ci_low']:+.1f}, {100 * r[k]['ci_high']:+.1f}]{each(r[k])}" for k in shots) + " |")
    lines += ["", f"Folds {args.folds}; mIoU in %, mean over folds of the mean over seeds ± the std over seeds of the fold mean [95% bootstrap CI]."]
    if args.fit_seeds > 1:
        lines.append(
            f"Trained rows: {args.fit_seeds} fits (training seeds, `fit.seed`), the mean over fits ± the std over fits [95% CI resampling episodes and fits] "
            "(each fit's score); differences pair fit i with fit i, and list each fit's difference."
        )
    if ORACLE in dirs:
        lines.append(f"`{ORACLE}` is a diagnostic (the query's ground truth as the guided map), not a result.")
    return lines


if __name__ == "__main__":
    sys.exit(main())
