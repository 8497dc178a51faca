"""The demo's config: which data, which stage configs, what it changes on top of them."""

from __future__ import annotations

from glocon.config import GloconModel
from glocon.data.layouts import LayoutConfig

# which few-shot benchmark (fold split) a layout's classes follow
BENCHMARK = {"embedded": "embedded", "voc": "pascal", "coco": "coco", "fss": "fss", "folder": "embedded"}


class DemoConfig(GloconModel):
    out: str = "runs/demo"
    data: LayoutConfig = LayoutConfig()  # embedded default; `make demo DATA=... LAYOUT=...` sets root/layout
    # the held-out split the probe (and few-shot evaluation) scores on: the layout's val split
    # (embedded: val, COCO: val2017, VOC: val); None: no val split (the probe holds out a share of the train keys)
    val_split: str | None = "val"
    val_images: int | None = 200  # embedded layout: how many val images to generate (None: as many as train)
    probe_config: str = "configs/probe-demo.yaml"
    # transductive: pretraining also sees the val images (the paper's "all the images"); the default is inductive
    transductive: bool = False
    shards_config: str = "configs/shards-embedded.yaml"
    pretrain_config: str = "configs/pretrain-demo.yaml"
    bank_config: str = "configs/bank-demo.yaml"
    fewshot_config: str = "configs/fewshot-demo.yaml"
    # extra dotted overrides per stage: shards, pretrain, bank, fewshot (every variant), and per
    # plugin (by its name) for its model keys, e.g. {"pretrain": ["epochs=1"], "qgnet": ["model.dilated=true"]}
    overrides: dict[str, list[str]] = {}
    folds: list[int] = [0]  # the demo evaluates one fold; the full benchmark uses all four
    # the few-shot plugins whose rows (each plugin's own and its controls: Plugin.variants) the demo scores
    plugins: list[str] = ["qgnet", "proto"]
    query_point: tuple[int, int] | None = None  # bank query point (x, y); None: centre of the first masked sample
