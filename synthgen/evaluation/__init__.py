"""L6: metrics, segmentation scores, realism (FID/KID, adherence, memorisation, comparison with real
pairs) and the usefulness table.

Other packages import these names from here, never from the modules (the layer contract in the README)."""

from synthgen._lazy import lazy_exports

_EXPORTS = {
    "METRICS": "metrics",
    "class_metrics": "metrics",
    "summarize": "metrics",
    "RealismConfig": "realism",
    "compare_with_real": "realism",
    "evaluate_realism": "realism",
    "realism_lines": "realism",
    "SegEvaluation": "segmentation",
    "evaluate_segmentation": "segmentation",
    "predict": "segmentation",
    "seg_table": "segmentation",
    "UtilityConfig": "utility",
    "run_utility": "utility",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
