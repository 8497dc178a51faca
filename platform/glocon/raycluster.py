"""Starting or joining Ray the same way in every job and test.

Locally glocon starts Ray bound to 127.0.0.1 (never all interfaces) with its temp dir under
the run folder when asked, so tests never write to a shared /tmp/ray.
"""

from __future__ import annotations

import os
from typing import Any

from glocon.config import GloconModel


class RayConfig(GloconModel):
    address: str | None = None  # None: start a local Ray; "auto" or "ray://..": join a cluster
    num_cpus: int | None = None
    temp_dir: str | None = None
    node_ip_address: str = "127.0.0.1"
    dashboard_host: str = "127.0.0.1"
    # On by default (on loopback, with Ray's token auth): Ray Train V2's PlacementGroupCleaner asks
    # the state API, which the dashboard serves, whether a run's controller is still alive. Without
    # it the cleaner can never free a dead run's placement group and warns about it every second
    # (measured: 326 of the demo's 600 log lines).
    include_dashboard: bool = True


def init_ray(cfg: RayConfig | None = None, **extra: Any) -> None:
    """``ray.init`` once per process; a no-op when Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    cfg = cfg or RayConfig()
    address = cfg.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs, **extra)
        return
    kwargs.update(
        num_cpus=cfg.num_cpus,
        include_dashboard=cfg.include_dashboard,
        dashboard_host=cfg.dashboard_host,
        _node_ip_address=cfg.node_ip_address,
    )
    if cfg.temp_dir:
        os.makedirs(cfg.temp_dir, exist_ok=True)
        kwargs["_temp_dir"] = os.path.abspath(cfg.temp_dir)
    ray.init(**kwargs, **extra)
