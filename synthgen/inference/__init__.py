"""L3: :func:`open_generator` and its backends (torch, ONNX Runtime, TensorRT), ONNX export, FP16 rewriting,
INT8 quantisation.

Other packages import these names from here, never from the modules (the layer contract in the README)."""

from synthgen._lazy import lazy_exports

_EXPORTS = {
    "Generator": "backends",
    "open_generator": "backends",
    "CalibrationSet": "quantize",
    "QuantConfig": "quantize",
    "blob_maps": "quantize",
    "OnnxExportConfig": "onnx_export",
    "cached_onnx": "onnx_export",
    "checkpoint_hash": "onnx_export",
    "export_onnx": "onnx_export",
    "sample_inputs": "onnx_export",
    "RandomisedGenerator": "randomised",
    "Restyler": "randomised",
    "TensorRTExportConfig": "tensorrt",
    "export_tensorrt": "tensorrt",
    "tensorrt_status": "tensorrt",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
