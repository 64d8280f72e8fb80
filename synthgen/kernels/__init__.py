"""Numba kernels on NumPy arrays: displacement fields, warps, class-aware morphology, components,
class statistics; and the small NumPy functions every layer shares on arrays: the one label resize
and the one image resize (to a size or to a pixel spacing), the centre pad or crop, intensity
conversion, the echo sector.

Pure functions: explicit parameters in, new arrays out (or ``out=``), inputs never mutated. Every
kernel takes one map (H, W) or a batch (N, H, W), which runs in parallel over samples on the TBB
threading layer (see ``_threading``). Call :func:`ensure_warm` once per worker process before use.
"""

from synthgen.kernels._threading import threading_layer
from synthgen.kernels.affine import AffineParams, AffineRanges, affine_field, sample_affine_params
from synthgen.kernels.components import (
    connected_components,
    count_components,
    fill_holes,
    label_class,
    largest_component,
)
from synthgen.kernels.deform import deform_labels
from synthgen.kernels.fields import FIELD_STEP, deformation_field, elastic_field
from synthgen.kernels.intensity import from_unit, to_unit
from synthgen.kernels.morphology import dilate_class, distance_to_mask, erode_class
from synthgen.kernels.randomise import appearance
from synthgen.kernels.randomise import n_params as appearance_params_size
from synthgen.kernels.resize import (
    pad_or_crop,
    resize_images,
    resize_labels,
    spacing_images,
    spacing_labels,
    spacing_shape,
)
from synthgen.kernels.sector import sector_mask
from synthgen.kernels.slicing import slice_plane
from synthgen.kernels.stats import batch_dice, class_stats, psnr
from synthgen.kernels.warmup import ensure_warm, warm_up
from synthgen.kernels.warp import warp_image, warp_labels

__all__ = [
    "FIELD_STEP",
    "AffineParams",
    "AffineRanges",
    "affine_field",
    "appearance",
    "appearance_params_size",
    "batch_dice",
    "class_stats",
    "connected_components",
    "count_components",
    "deform_labels",
    "deformation_field",
    "dilate_class",
    "distance_to_mask",
    "elastic_field",
    "ensure_warm",
    "erode_class",
    "fill_holes",
    "from_unit",
    "label_class",
    "largest_component",
    "pad_or_crop",
    "psnr",
    "resize_images",
    "resize_labels",
    "sample_affine_params",
    "sector_mask",
    "slice_plane",
    "spacing_images",
    "spacing_labels",
    "spacing_shape",
    "threading_layer",
    "to_unit",
    "warm_up",
    "warp_image",
    "warp_labels",
]
