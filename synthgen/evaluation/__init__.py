"""L6: metrics, segmentation scores (also under acquisition shifts), realism (FID/KID, adherence,
memorisation, comparison with real pairs) and the usefulness table with its statistics.

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
    "classes_line": "segmentation",
    "evaluate_segmentation": "segmentation",
    "predict": "segmentation",
    "seg_table": "segmentation",
    "SHIFTS": "shift",
    "AcquisitionShift": "shift",
    "shifts_for": "shift",
    "store_modality": "shift",
    "ARMS": "utility",
    "UtilityConfig": "utility",
    "arm_folder": "utility",
    "arm_statistics": "utility",
    "read_result": "utility",
    "run_utility": "utility",
    "utility_plot": "utility_report",
    "utility_table": "utility_report",
    "Estimate": "utility_stats",
    "UtilityStats": "utility_stats",
    "bootstrap_mean": "utility_stats",
    "draw_resamples": "utility_stats",
    "utility_stats": "utility_stats",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
