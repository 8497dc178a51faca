"""The shared few-shot runner behind every plugin's ``fit``, ``evaluate`` and ``objective``, as one
import: the pieces live in ``config`` (typed configs), ``sources`` (splits, folds, the model),
``state`` (run folders, checkpoints, model files), ``fit``, ``evaluate`` (and ``compare``),
``objective``, ``stats`` and ``cache``.
"""

from glocon.fewshot.config import CacheConfig, EvalConfig, FewShotConfig, FewShotData, FitConfig, ObjectiveConfig  # noqa: F401
from glocon.fewshot.evaluate import compare, evaluate, evaluate_episodes, prepare_model  # noqa: F401
from glocon.fewshot.fit import fit, make_optimizer, total_steps, train_loop_per_worker, train_steps, worker_indices  # noqa: F401
from glocon.fewshot.objective import objective  # noqa: F401
from glocon.fewshot.sources import build, fold_split, folds_of, load_prior, open_source, resolve_device, resolve_paths  # noqa: F401
from glocon.fewshot.state import (  # noqa: F401
    FIT_STATE_KEYS, MODEL_FORMAT, STATE_FORMAT, load_fit_state, load_model_file, load_trainable_state, model_path, run_dir,
    save_model_file, trainable_state, weights_for,
)
