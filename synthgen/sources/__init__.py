"""L3: label sources (procedural anatomy, expert stores, 3D volumes, shape VAE) and the plausibility gate.

Other packages import these names from here, never from the modules (the layer contract in the README)."""

from synthgen._lazy import lazy_exports

_EXPORTS = {
    "GateReport": "gate",
    "check": "gate",
    "check_batch": "gate",
    "decode_flags": "gate",
    "flag_codes": "gate",
    "LabelSource": "label_sources",
    "ProceduralSource": "label_sources",
    "StoreSource": "label_sources",
    "VaeSource": "label_sources",
    "VolumeSource": "label_sources",
    "gate_samples": "label_sources",
    "source_from_config": "label_sources",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
