"""``glocon``: one CLI whose subcommands mirror ``jobs/``.

Each job is a module of ``glocon.jobs`` (installed with the wheel) and, in a checkout, a plain
script ``jobs/X.py`` that calls it, so ``ray job submit`` can run it; the CLI imports the same
module and calls its ``main(argv)``, so there is one code path per job.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

EXAMPLES = """examples:
  glocon shards --config configs/shards-coco128.yaml longest_side=320
  glocon pretrain --config configs/pretrain-demo.yaml train.epochs=2
  glocon sweep --config configs/sweep-table6.yaml
  glocon bank build --config configs/bank-demo.yaml prior=runs/demo/pretrain/prior.pt
  glocon bank query --config configs/bank-demo.yaml key=embedded/000001 point=[40,60]   # overrides address the query: section
  glocon bank stats --config configs/bank-demo.yaml
  glocon probe --config configs/probe-demo.yaml run=runs/demo/pretrain/prior
  glocon fewshot fit --plugin qgnet --config configs/fewshot-demo.yaml
  glocon fewshot eval --plugin proto --config configs/fewshot-demo.yaml
  glocon show superpixels --shards runs/demo/shards --key embedded/000003 --out fig4.png
  glocon plugins
  glocon store du                  # the feature store: ls | du | prune --max-gb 2
  glocon export runs/demo/pretrain/prior/prior.pt --format onnx prior.onnx   # or --format timm|torchvision
  glocon demo                      # the whole pipeline on the embedded data
  glocon explore --config configs/explore-demo.yaml   # then open http://127.0.0.1:8765
"""

# subcommand -> (job script, help)
JOBS = {
    "shards": ("make_shards.py", "turn a folder / VOC / COCO / FSS-1000 layout into WebDataset shards"),
    "pretrain": ("pretrain.py", "pretrain the prior extractor (global + local InfoNCE) under Ray Train"),
    "sweep": ("sweep.py", "Ray Tune sweep over tau, patch method and epochs, scored downstream"),
    "probe": ("probe.py", "dense evaluation of priors: retrieval mIoU, linear probe, prior-map AUROC, purity"),
    "fewshot": ("fewshot.py", "fit or evaluate a few-shot plugin: fewshot fit|eval --plugin NAME"),
    "demo": ("demo.py", "run the whole pipeline end to end on the embedded default data"),
    "explore": ("explore.py", "a local web explorer of shards, banks, region maps and results"),
}
BANK = {"build": "build_bank.py", "query": "query_bank.py", "stats": "query_bank.py"}


def load_job(script: str) -> ModuleType:
    """The job module ``glocon.jobs.<name>`` for a script name (``pretrain.py`` or ``pretrain``)."""
    return importlib.import_module(f"glocon.jobs.{script.removesuffix('.py')}")


def _run_job(script: str, argv: list[str]) -> int:
    return int(load_job(script).main(argv) or 0)


def _plugins(_: list[str]) -> int:
    from glocon.plugins import list_plugins

    rows = list_plugins()
    for row in rows:
        print("  ".join(str(v) for v in row.values()))
    return 0 if rows else 1


def _show(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="glocon show superpixels", description="Write a Fig. 4-style picture: image, SLIC and FH boundaries.")
    parser.add_argument("what", choices=["superpixels"])
    parser.add_argument("--shards", required=True, help="shard folder, manifest.json or .tar files")
    parser.add_argument("--key", required=True, help="sample key, e.g. embedded/000003")
    parser.add_argument("--out", default="superpixels.png")
    args = parser.parse_args(argv)
    from glocon.errors import GloconError
    from glocon.viz.superpixels import show_superpixels

    try:
        out = show_superpixels(args.shards, args.key, args.out)
    except (GloconError, KeyError) as exc:  # a damaged shard, a key the shards do not hold: one line, no traceback
        print(f"error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is glocon's one line (``error: ...``, exit 2), not usage + message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        from glocon.errors import ConfigError

        raise ConfigError(f"{self.prog}: {message}")


def _export(argv: list[str]) -> int:
    parser = _OneLineParser(
        prog="glocon export",
        description="Write a prior export (prior.pt) for other frameworks: a timm or torchvision state dict that the "
        "matching model loads with strict=True (ResNets in both, EfficientNet-Lite0 in timm; the classification head, "
        "which a prior has not, is the framework's fresh init, seed 0), or an ONNX file of the dense map (normalisation "
        "inside). Each is checked against glocon's own features before it is written.",
    )
    parser.add_argument("prior", metavar="PRIOR", help="a prior export, e.g. runs/demo/pretrain/prior/prior.pt")
    parser.add_argument("--format", required=True, metavar="timm|torchvision|onnx", help="timm / torchvision: a state dict; onnx: the dense feature extractor")
    parser.add_argument("out", metavar="OUT", help="the file to write, in a folder that exists")
    parser.add_argument("--map", default=None, help="onnx only: which dense map (prior, backbone, local_head, layer2, layer3, layer4; default prior)")
    from glocon.errors import GloconError
    from glocon.models.export import export_prior, exit_code

    try:
        args = parser.parse_args(argv)
        done = export_prior(args.prior, args.format, args.out, args.map)
    except GloconError as exc:  # bad input: one line naming the file or argument, no traceback
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return exit_code(exc)
    print(done.what)
    print(done.check)
    for note in done.notes:
        print(note)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="glocon",
        description="glocon: global + local contrastive priors for few-shot segmentation.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
    for name, (_, text) in JOBS.items():
        sub.add_parser(name, help=text, add_help=False)
    sub.add_parser("bank", help="bank build|query|stats: FAISS bank of prior patch features", add_help=False)
    sub.add_parser("show", help="show superpixels: the Fig. 4 picture for one sample", add_help=False)
    sub.add_parser("plugins", help="list the few-shot plugins found by entry point")
    sub.add_parser("store", help="store ls|du|prune: the feature store of frozen encoder outputs", add_help=False)
    sub.add_parser("export", help="export PRIOR --format timm|torchvision|onnx OUT: a prior for other frameworks", add_help=False)
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd in JOBS:
        return _run_job(JOBS[cmd][0], rest)
    if cmd == "bank":
        if not rest or rest[0] not in BANK:
            parser.error("bank needs one of: build, query, stats")
        verb, script = rest[0], BANK[rest[0]]
        # query_bank.py answers a query by default and takes "stats" as its first word
        return _run_job(script, rest if verb == "stats" else rest[1:])
    if cmd == "show":
        return _show(rest)
    if cmd == "plugins":
        return _plugins(rest)
    if cmd == "store":
        from glocon.featstore.cli import main as store_main

        return store_main(rest)
    if cmd == "export":
        return _export(rest)
    parser.error(f"unknown command {cmd!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
