"""Query a bank by patch (``main``) or score it by class purity (``stats_main``).

    python jobs/query_bank.py --config configs/bank-coco128.yaml key=coco128/train2017/000000000009 point=[40,30]
    python jobs/query_bank.py bank=runs/bank image=photo.jpg box=[10,10,50,60] k=12
    python jobs/query_bank.py stats --config configs/bank-coco128.yaml k=10

The config file is the bank's own YAML (a ``BankConfig``); overrides address its ``query:``
(or ``stats:``) section, so ``k=12`` means ``query.k=12``. ``bank`` defaults to the config's ``out``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from glocon.bank.config import BankConfig
from glocon.bank.query import query_bank
from glocon.bank.stats import bank_stats
from glocon.config import load_config, split_cli
from glocon.jobmain import run_job

if TYPE_CHECKING:  # annotations only
    from glocon.bank.config import QueryConfig, StatsConfig


def load_section(section: str, argv: list[str]) -> QueryConfig | StatsConfig:
    """The ``query``/``stats`` section of a bank config, with overrides applied inside it."""
    path, overrides = split_cli(argv)
    cfg = load_config(BankConfig, path, [f"{section}.{o}" for o in overrides])
    sub = getattr(cfg, section)
    if sub.bank is None:
        sub.bank = cfg.out
    return sub


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["stats"]:
        return stats_main(argv[1:])
    return run_job(argv, lambda args: load_section("query", args), show_query)


def show_query(query: QueryConfig) -> None:
    result = query_bank(query)
    q = result["query"]
    where = q["superpixel"] if q["superpixel"] is not None else q["box"]
    print(f"query {q['key'] or q['source']} {q['kind']} {where} class={q['class_name']} -> "
          f"{len(result['hits'])} hits ({result['factory']}, nprobe {result['nprobe']})")
    for h in result["hits"]:
        print(f"  #{h['rank']:<3} {h['score']:.4f}  {h['key']}  superpixel {h['superpixel']}  class {h['class_name']}")
    print(f"hits: {result['out']}/hits.json\nsheet: {result['sheet']['path']}")


def stats_main(argv: list[str] | None = None) -> int:
    return run_job(argv, lambda args: load_section("stats", args), show_stats)


def show_stats(stats: StatsConfig) -> None:
    result = bank_stats(stats)
    print(f"class purity@{result.get('k')} over {result['queries']} queries ({result.get('factory')}):")
    for row in result["per_class"].values():
        print(f"  {row['name']:<24} n={row['queries']:<5} purity={row['purity']:.3f}  chance={row['chance']:.3f}")
    bal = result.get("balanced") or {}
    if bal.get("macro") is not None:
        bg = bal.get("background")
        apart = f" (purity {bg['purity']:.3f}, chance {bg['chance']:.3f})" if bg else ""
        print(f"balanced: {bal['queries']} queries, up to {stats.per_class} per class; background apart{apart}")
    print(f"stats: {result['out']}")
    if result["overall"] is not None:
        print(f"overall = {result['overall']:.4f}\nmacro = {result['macro']:.4f}\nchance = {result['chance']:.4f}")
    if bal.get("macro") is not None:
        print(f"balanced_macro = {bal['macro']:.4f}\nbalanced_chance = {bal['chance']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
