"""What a training run leaves to look at: a JSON-lines loss log, its plot, and sample grids (PNG).

Sample grids are 8-bit previews (the stored images keep their dtype): one row per sample, columns
label map (schema colours), real image, then one generated image per style.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from synthgen.schemas import LabelSchema
from synthgen.storage import atomic_write


class LossLog:
    """Appends one JSON object per logged step to ``path``; on resume drops entries after ``step``."""

    def __init__(self, path: Path, resume_step: int = 0) -> None:
        self.path = path
        if resume_step and path.exists():
            kept = [row for row in self.read() if row["step"] <= resume_step]
            atomic_write(path, "".join(json.dumps(row) + "\n" for row in kept))
        elif path.exists():
            path.unlink()

    def append(self, step: int, values: Mapping[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **{k: round(float(v), 6) for k, v in values.items()}}) + "\n")

    def read(self) -> list[dict[str, float]]:
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line torn by a kill mid-append: the run resumes from its checkpoint
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
        return rows

    def plot(self, out: Path) -> None:
        """One panel per loss against step (matplotlib, Agg backend, no display needed)."""
        rows = self.read()
        if not rows:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in rows[-1] if k not in ("step", "seconds", "cpu_seconds", "lr_g", "lr_d")]
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.8 * len(keys)), sharex=True, squeeze=False)
        steps = [r["step"] for r in rows]
        for ax, key in zip(axes[:, 0], keys, strict=True):
            ax.plot(steps, [r.get(key, np.nan) for r in rows], lw=0.8)
            ax.set_ylabel(key, fontsize=8)
            ax.grid(alpha=0.3)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(out, dpi=80)
        plt.close(fig)


def preview(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) floats in [-1, 1] -> (N, H, W) or (N, H, W, 3) uint8 for display."""
    x = np.clip((images + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return x.transpose(0, 2, 3, 1) if x.shape[1] == 3 else x[:, 0]


def colour_labels(indices: np.ndarray, schema: LabelSchema) -> np.ndarray:
    """(N, H, W) class indices -> (N, H, W, 3) uint8 in the schema's colours."""
    table = np.zeros((schema.num_classes, 3), np.uint8)
    for i, c in enumerate(schema.classes, start=1):
        table[i] = c.color
    return table[indices]


def sample_grid(
    labels: np.ndarray, reals: np.ndarray | None, fakes: Sequence[np.ndarray], schema: LabelSchema
) -> np.ndarray:
    """(rows * H, cols * W, 3) uint8: label colours | real | fake per style, one row per sample."""

    def rgb(x: np.ndarray) -> np.ndarray:
        return x if x.ndim == 4 else np.repeat(x[..., None], 3, axis=-1)

    columns = [colour_labels(labels, schema)]
    if reals is not None:
        columns.append(rgb(preview(reals)))
    columns += [rgb(preview(f)) for f in fakes]
    rows = [np.concatenate([col[i] for col in columns], axis=1) for i in range(len(labels))]
    return np.concatenate(rows, axis=0)


def save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
