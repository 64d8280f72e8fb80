"""synthgen: paired image/label synthesis for medical segmentation, written to sharded Zarr.

The Python API (each name is imported on first use, so ``import synthgen`` imports neither torch nor
zarr; the README's "Python API" section shows them at work):

- :func:`open_store` -> :class:`StoreContents`: a store's Zarr arrays, label schema, intensity
  convention and the samples of complete shards; ``.to_dask(name)`` gives one dask chunk per shard.
- :class:`StoreDataset`: a map-style dataset of ``{"image": (C, H, W) float32, "label": (1, H, W)
  int64, "index", "patient"}`` for MONAI/TorchIO dictionary transforms and any ``DataLoader``.
- :class:`StoreStream` with :class:`LoaderConfig` and :func:`make_loader`: the streaming loader
  (shuffled blocks, several stores mixed, resumable epochs).
- :func:`open_generator`: a generator (checkpoint folder, ``.onnx`` or TensorRT engine) on its backend.
- :func:`build_dataset` with :class:`BuildConfig` (:func:`load_build_config` reads one from TOML) and
  :class:`RunOptions`: the build that ``synthgen build-dataset`` runs.
"""

from importlib.metadata import PackageNotFoundError, version

from synthgen._lazy import lazy_exports

try:
    __version__ = version("synthgen")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

_EXPORTS = {  # name -> the package that exports it
    "open_store": "storage",
    "StoreContents": "storage",
    "StoreDataset": "storage",
    "StoreStream": "storage",
    "LoaderConfig": "storage",
    "make_loader": "storage",
    "open_generator": "inference",
    "build_dataset": "engine",
    "RunOptions": "engine",
    "BuildConfig": "schemas",
    "load_build_config": "schemas",
}
__all__ = ["__version__", *sorted(_EXPORTS)]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
