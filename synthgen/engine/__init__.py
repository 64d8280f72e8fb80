"""L4: the build: plan, shard task, stages, post-process, scheduling (Dask), resume.

Other packages import these names from here, never from the modules (the layer contract in the README)."""

from synthgen._lazy import lazy_exports

_EXPORTS = {
    "replay": "pipeline",
    "LabelDraw": "pipeline",
    "ShardStats": "pipeline",
    "WorkerCache": "pipeline",
    "BuildPlan": "build",
    "BuildSummary": "build",
    "RunOptions": "build",
    "build_dataset": "build",
    "plan_build": "build",
    "build_shard": "pipeline",
    "parse_scheduler": "schedule",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
