"""One run: its configuration (`config`), its folder (`run_folder`), the model and optimizer it builds
(`build`), its checkpoints (`checkpoints`), the trainer (`trainer`), the
runs of the untrained floors and ceilings and the per-product reader of any run (`floors`) and where runs execute (`executors`)."""

from __future__ import annotations

from mmss_lib.utils import lazy_exports

# public name -> the module of this package that defines it (imported on the name's first use)
_EXPORTS: dict[str, str] = {
    "TrainConfig": "config",
    "run_name": "run_folder",
    "run_dir_for": "run_folder",
    "load_run_config": "run_folder",
    "load_history": "run_folder",
    "finished_results": "run_folder",
    "train_run": "trainer",
    "fit": "trainer",
    "evaluate": "trainer",
    "Evaluation": "trainer",
    "train_step": "trainer",
    "load_splits": "trainer",
    "build_model": "build",
    "build_optimizer": "build",
    "load_checkpoint": "checkpoints",
    "per_product_for_run": "floors",
    "run_floor": "floors",
    "Job": "executors",
    "JobResult": "executors",
    "LocalExecutor": "executors",
    "RayExecutor": "executors",
    "make_executor": "executors",
}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
