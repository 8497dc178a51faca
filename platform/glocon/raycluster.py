"""Starting or joining Ray the same way in every job and test.

Locally glocon starts Ray bound to 127.0.0.1 (never all interfaces) with its temp dir under
the run folder when asked, so tests never write to a shared /tmp/ray.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from glocon.config import GloconModel

if TYPE_CHECKING:  # annotations only
    from ray.train import LoggingConfig


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


def train_logging() -> LoggingConfig:
    """Ray Train's console log level for every glocon trainer's ``RunConfig``.

    At INFO, Train prints two lines per report and worker ("Reporting training result ...",
    "Checkpoint successfully created ...") that drown the job's own dashboard; at WARNING they
    still go to the session's Ray Train log files (``logs/train/``), only not to the console.
    """
    from ray.train import LoggingConfig

    return LoggingConfig(log_level="WARNING")


def quiet_train_reports() -> None:
    """Call at the start of a Ray Train worker function: lowers the one Train logger that
    ``train_logging()`` cannot reach to WARNING.

    Ray Train 2.60 logs every ``ray.train.report`` at INFO under a logger named after its file
    path (``ray/train/v2/_internal/execution/context.py``: ``logging.getLogger(__file__)``), so
    the ``ray.train`` level filter of ``LoggingConfig`` never sees it.
    """
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: nothing to quiet
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
