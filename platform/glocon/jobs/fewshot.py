"""Fit or evaluate a few-shot plugin on base / novel classes.

    python jobs/fewshot.py fit  --plugin qgnet --config configs/fewshot-demo.yaml [key=value ...]
    python jobs/fewshot.py eval --plugin qgnet --config configs/fewshot-demo.yaml [key=value ...]
    python jobs/fewshot.py compare runs/demo/eval/qgnet runs/demo/eval/proto-imagenet

``fit`` trains under Ray Train (rerun the same ``fit.name`` to resume); ``eval`` scores 1-shot and
5-shot episodes of the novel classes and writes results.{json,md} and Fig. 5 grids to
``eval.out_dir``, over ``eval.seeds`` episode files per fold and shot, with a 95% bootstrap
interval. ``compare A B`` reads two evaluations scored on the same episode files and reports A's
mIoU minus B's with its paired-bootstrap interval. Episode files in ``episodes_dir`` are drawn
once and reused by every model.
The plugin is found by its entry point (``glocon plugins`` lists them).
"""

from __future__ import annotations

from typing import Any

from glocon.config import load_config, split_cli
from glocon.errors import ConfigError
from glocon.jobmain import run_job

USAGE = "usage: fewshot.py fit|eval --plugin NAME --config FILE.yaml [key=value ...] | fewshot.py compare EVAL_DIR_A[,A_FIT2,...] EVAL_DIR_B[,...] (commas: one recipe fitted with several fit.seed)"


def parse(argv: list[str]) -> tuple[str, str | None, list[str]]:
    """-> (verb, plugin or None, remaining args for split_cli)."""
    if not argv or argv[0] not in ("fit", "eval", "compare"):
        raise ConfigError(f"expected 'fit' or 'eval' (or 'compare A B') first; {USAGE}")
    verb, rest, plugin = argv[0], [], None
    it = iter(argv[1:])
    for arg in it:
        if arg == "--plugin":
            plugin = next(it, None)
            if not plugin:
                raise ConfigError(f"--plugin needs a name; {USAGE}")
        elif arg.startswith("--plugin="):
            plugin = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return verb, plugin, rest


def main(argv: list[str] | None = None) -> int:
    return run_job(argv, load, run)


def load(argv: list[str]) -> tuple[str, Any, Any]:
    """-> (verb, plugin, FewShotConfig), checked before any work starts."""
    from glocon.fewshot.runner import FewShotConfig
    from glocon.plugins import load_plugin

    verb, plugin_name, rest = parse(argv)
    if verb == "compare":
        if len(rest) != 2:
            raise ConfigError(f"compare takes two evaluation folders; {USAGE}")
        return verb, None, [r.split(",") if "," in r else r for r in rest]
    path, overrides = split_cli(rest)
    if plugin_name:
        overrides = [*overrides, f"plugin={plugin_name}"]
    cfg = load_config(FewShotConfig, path, overrides)
    if not cfg.plugin:
        raise ConfigError(f"no plugin: pass --plugin NAME or set plugin: in the config; {USAGE}")
    plugin = load_plugin(cfg.plugin)
    plugin.make_config(cfg.model, f"{path or '<defaults>'}: model")  # a typo in model.* fails now, not in a worker
    return verb, plugin, cfg


def run(job: tuple[str, Any, Any]) -> None:
    from glocon.fewshot.runner import evaluate, fit

    verb, plugin, cfg = job
    if verb == "compare":
        from glocon.fewshot.evaluate import compare

        out = compare(*cfg)
        for k, r in out["shots"].items():
            print(f"{k}-shot: mIoU {100 * r['a_miou']:.2f} - {100 * r['b_miou']:.2f} = {100 * r['difference']:+.2f} "
                  f"(95% paired-bootstrap CI {100 * r['ci_low']:+.2f} .. {100 * r['ci_high']:+.2f}, {r['resamples']} resamples)")
            if "per_fit" in r:
                print(f"  over {r['fits']} training seeds; each fit's difference: " + ", ".join(f"{100 * d:+.2f}" for d in r["per_fit"]))
        for k, r in out["shots"].items():
            print(f"miou_difference_{k}shot = {100 * r['difference']:.3f}")
        return
    if verb == "fit":
        summary = fit(plugin, cfg)
        if not summary.get("trained"):
            print(f"{plugin.name}: {summary.get('reason')}")
        for fold, per_shot in summary.get("folds", {}).items():
            for shots, info in per_shot.items():
                print(f"fold {fold} {shots}-shot: {info['model']} (step {info['step']}, loss {info['first_loss']} -> {info['last_loss']})")
    else:
        results = evaluate(plugin, cfg)
        for k, r in results["mean"].items():
            ci = f"  95% CI {100 * r['miou_ci'][0]:.2f} .. {100 * r['miou_ci'][1]:.2f}" if "miou_ci" in r else ""
            print(f"{k}-shot: mIoU {100 * r['miou']:.2f} ± {100 * r['miou_std']:.2f} over {len(results['seeds'])} seeds{ci}  FB-IoU {100 * r['fb_iou']:.2f}")
        print(f"results: {cfg.eval.out_dir}/results.md")


if __name__ == "__main__":
    raise SystemExit(main())
