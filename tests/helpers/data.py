"""Tiny synthetic label maps and the location of the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def real_data(name: str) -> Path:
    """Path of a real dataset under ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {name!r} not found at {path} (../shared/data beside the repository)")
    return path


def disc_labels(n: int, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """(n, h, w) uint8 label maps: a wall (2) around a cavity (1), and an atrium (3) below, jittered."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        cy, cx = h * 0.4 + rng.uniform(-2, 2), w * 0.5 + rng.uniform(-2, 2)
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        out[i][r2 < (0.3 * h) ** 2] = 2
        out[i][r2 < (0.2 * h) ** 2] = 1
        out[i][(yy > cy + 0.3 * h) & (yy < cy + 0.45 * h) & (np.abs(xx - cx) < 0.15 * w)] = 3
    return out


def pairs_folder(root: Path, n: int = 6, bad: bool = False) -> Path:
    """A 'pairs' layout folder of PNG images and CAMUS label maps (one label 9 where ``bad``)."""
    root.mkdir(parents=True)
    labels = disc_labels(n, 24, 24, seed=1)
    for i, lab in enumerate(labels):
        image = (lab * 60 + 20).astype(np.uint8)
        if bad and i == n - 1:
            lab = lab.copy()
            lab[0, 0] = 9
        Image.fromarray(image).save(root / f"case{i}.png")
        Image.fromarray(lab).save(root / f"case{i}_gt.png")
    return root


def _nifti(path: Path, rows_cols: np.ndarray) -> None:
    """(rows, cols) or (slices, rows, cols) saved as CAMUS and ACDC do: NIfTI (x, y, z), identity affine."""
    import nibabel as nib

    vol = rows_cols[None] if rows_cols.ndim == 2 else rows_cols
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.eye(4)), path)


def official_layouts(root: Path, patients: int = 12, size: int = 32) -> Path:
    """``root/camus`` and ``root/acdc`` in their published layouts (as ``../shared/data`` holds them), with
    ``patients`` patients each of disc label maps and matching noisy images: a stand-in for the real data
    (patients 5 and 10 fall in the validation and test tenths)."""
    rng = np.random.default_rng(0)
    for p in range(1, patients + 1):
        camus = root / "camus" / f"patient{p:04d}"
        camus.mkdir(parents=True)
        for v, view in enumerate(("2CH", "4CH")):
            for f, phase in enumerate(("ED", "ES")):
                labels = disc_labels(1, size, size, seed=p * 4 + v * 2 + f)[0]
                image = (labels * 50 + rng.integers(0, 60, labels.shape)).astype(np.uint8)
                _nifti(camus / f"patient{p:04d}_{view}_{phase}.nii.gz", image)
                _nifti(camus / f"patient{p:04d}_{view}_{phase}_gt.nii.gz", labels)
        acdc = root / "acdc" / f"patient{p:03d}"
        acdc.mkdir(parents=True)
        (acdc / "Info.cfg").write_text("ED: 1\nES: 7\nGroup: NOR\n")
        for frame in (1, 7):
            labels = disc_labels(3, size, size - 4, seed=p * 8 + frame)  # 3 slices, not square as ACDC
            image = (labels * 60 + rng.integers(0, 50, labels.shape)).astype(np.uint8)
            _nifti(acdc / f"patient{p:03d}_frame{frame:02d}.nii.gz", image)
            _nifti(acdc / f"patient{p:03d}_frame{frame:02d}_gt.nii.gz", labels)
    return root
