"""Ray Tune sweeps of pretraining runs, scored by a few-shot plugin's objective (ASHA, restore)."""

from glocon.tune.space import SweepConfig, load_sweep_config

__all__ = ["SweepConfig", "load_sweep_config", "run_sweep"]


def __getattr__(name: str):
    # run_sweep imports Ray Tune; keep ``import glocon.tune`` cheap for config checks.
    if name == "run_sweep":
        from glocon.tune.sweep import run_sweep

        return run_sweep
    raise AttributeError(name)
