"""L5: the GAN, shape-VAE and segmenter training loops and what they share (run folders, streams, logs).

Other packages import these names from here, never from the modules (the layer contract in the README)."""

from synthgen._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config",
    "merge_config": "config",
    "AUGMENT_LEVELS": "augment",
    "AugmentConfig": "augment",
    "AugmentParams": "augment",
    "GanAugment": "augment",
    "SegAugment": "augment",
    "apply": "augment",
    "augment_from_dict": "augment",
    "augment_level": "augment",
    "augment_to_dict": "augment",
    "sample_params": "augment",
    "seg_augment": "augment",
    "StrongAugment": "augment_strong",
    "StrongParams": "augment_strong",
    "TrainingStream": "data",
    "augment_batch": "data",
    "load_training_pairs": "data",
    "resolve_device": "runs",
    "seeded": "runs",
    "resume_config": "gan",
    "train_gan": "gan",
    "SegTrainConfig": "segmenter",
    "train_seg": "segmenter",
    "ShapeTrainConfig": "shape",
    "latest_vae_checkpoint": "shape",
    "train_shape": "shape",
    "sample_grid": "trainlog",
    "save_png": "trainlog",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
