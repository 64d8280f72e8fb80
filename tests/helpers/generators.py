"""Tiny random generator checkpoints of every registered architecture, shared by the backend tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.checkpoints import random_checkpoint
from synthgen.inference.onnx_export import OnnxExportConfig, export_onnx
from synthgen.schemas.labels import LabelClass, LabelSchema

SIZE = 16
# label values 1, 2, 5: not contiguous, so the value -> class index table is exercised
SCHEMA = LabelSchema("tiny", (LabelClass("cavity", 1), LabelClass("wall", 2), LabelClass("atrium", 5)))
VARIANTS = {
    "spade-style": ("spade", {"width": 4, "max_width": 16, "depth": 2, "hidden": 8, "style_dim": 8}),
    "spade-nostyle-instance": (
        "spade",
        {
            "width": 4,
            "max_width": 8,
            "depth": 2,
            "hidden": 8,
            "style_dim": 4,
            "style_encoder": False,
            "norm": "instance",
        },
    ),
    "pix2pix": ("pix2pix", {"width": 4, "max_width": 16, "depth": 3}),
    "pix2pix-style": ("pix2pix", {"width": 4, "max_width": 16, "depth": 3, "style_dim": 4}),
    "cyclegan": ("cyclegan", {"width": 4, "downsamples": 1, "blocks": 1}),
}


def make_checkpoints(root: Path) -> dict[str, Path]:
    return {
        name: random_checkpoint(root / name, arch, SCHEMA, image_size=SIZE, seed=i, **model)
        for i, (name, (arch, model)) in enumerate(VARIANTS.items())
    }


_SHARED: dict[str, Path] = {}


def shared_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One checkpoint per variant, each exported to CHECKPOINT/generator.onnx; made once per session
    (exports take seconds) and shared by the test modules that call this from a fixture."""
    if not _SHARED:
        paths = make_checkpoints(tmp_path_factory.mktemp("generators"))
        for path in paths.values():
            export_onnx(OnnxExportConfig(str(path)))
        _SHARED.update(paths)
    return dict(_SHARED)


def label_maps(n: int, seed: int = 0) -> np.ndarray:
    """(n, SIZE, SIZE) uint8 maps of the tiny schema's values (0, 1, 2, 5) in 4 x 4 blocks."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(np.array([0, 1, 2, 5], np.uint8), size=(n, SIZE // 4, SIZE // 4))
    return cells.repeat(4, axis=1).repeat(4, axis=2)


def styles(n: int, dim: int, seed: int = 0) -> np.ndarray | None:
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32) if dim else None
