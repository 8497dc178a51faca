"""``glocon store ls|du|prune``: what the feature store holds, how big it is, and trimming it."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from glocon.featstore.store import META, FeatureStore, default_root


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="glocon store", description="The feature store of frozen encoder outputs (glocon.featstore).")
    parser.add_argument("verb", choices=["ls", "du", "prune"], help="ls: one line per namespace; du: total size; prune: evict least-recently-used entries")
    parser.add_argument("--root", default=None, help=f"the store folder (default: $GLOCON_STORE or {default_root()})")
    parser.add_argument("--max-gb", type=float, default=None, help="prune: keep at most this many GiB (default 0: empty it)")
    args = parser.parse_args(argv)
    root = Path(args.root).expanduser() if args.root else default_root()
    if not root.is_dir():
        print(f"error: feature store {root}: no such folder (nothing stored yet?)", file=sys.stderr)
        return 1
    if args.max_gb is not None and not args.max_gb >= 0:  # -1 would empty the store like 0
        print(f"error: --max-gb {args.max_gb:g}: expected a size in GiB >= 0 (0 empties the store)", file=sys.stderr)
        return 2
    store = FeatureStore(root)
    if args.verb == "prune":
        limit = int((args.max_gb or 0.0) * 2**30)
        removed = store.evict(limit)
        temp = store.clean_temp()
        print(f"pruned {removed} entries ({temp} temp folders of dead writers) from {root}; now {_fmt_bytes(sum(e.bytes for e in store.entries()))}")
        return 0
    by_ns: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    newest: dict[str, float] = {}
    for e in store.entries():
        by_ns[e.namespace][0] += 1
        by_ns[e.namespace][1] += e.bytes
        newest[e.namespace] = max(newest.get(e.namespace, 0.0), e.mtime)
    total = sum(b for _, b in by_ns.values())
    if args.verb == "du":
        print(f"{_fmt_bytes(total)}  {sum(n for n, _ in by_ns.values())} entries  {len(by_ns)} namespaces  {root}")
        return 0
    for ns, (n, b) in sorted(by_ns.items(), key=lambda kv: -newest[kv[0]]):
        meta_path = root / ns / META
        try:
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            if not isinstance(meta, dict):
                raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
        except (OSError, ValueError) as exc:
            print(f"error: feature store {meta_path}: unreadable ({type(exc).__name__}: {exc}); remove the namespace "
                  f"{root / ns} or run `glocon store prune`", file=sys.stderr)
            return 1
        print(f"{ns}  {n:6d} entries  {_fmt_bytes(b):>10}  {meta.get('output', '?'):<22} weights {str(meta.get('weights', '?'))[:12]}")
    print(f"total {_fmt_bytes(total)} in {root}")
    return 0
