"""L1: torch networks only: layers, discriminators, the SPADE, pix2pix and CycleGAN generators (with the
pseudo-image renderer), the shape VAE, segmenters, the architecture registry and safetensors weight I/O.

Other packages import these names from here, never from the modules (the layer contract in the README)."""

from synthgen._lazy import lazy_exports

_EXPORTS = {
    "SEGMENTER_JSON": "segmenters",
    "Batch": "gan",
    "GanModel": "gan",
    "init_weights": "layers",
    "onehot": "layers",
    "set_requires_grad": "layers",
    "ARCHITECTURES": "registry",
    "build_gan": "registry",
    "build_generator": "registry",
    "default_model_config": "registry",
    "model_config_from_dict": "registry",
    "SegModelConfig": "segmenters",
    "SegmenterSpec": "segmenters",
    "build_segmenter": "segmenters",
    "init_segmenter": "segmenters",
    "load_segmenter": "segmenters",
    "save_segmenter": "segmenters",
    "SHAPE_VAE_JSON": "shape_vae",
    "ShapeVae": "shape_vae",
    "ShapeVaeConfig": "shape_vae",
    "ShapeVaeSpec": "shape_vae",
    "decode_labels": "shape_vae",
    "fit_prior": "shape_vae",
    "init_vae": "shape_vae",
    "load_vae": "shape_vae",
    "read_vae_spec": "shape_vae",
    "sample_labels": "shape_vae",
    "save_vae": "shape_vae",
    "vae_loss": "shape_vae",
    "load_generator": "weights",
    "load_weights": "weights",
    "read_tensors": "weights",
    "save_generator": "weights",
    "write_tensors": "weights",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
