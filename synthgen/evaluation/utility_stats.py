"""The statistics of the usefulness table: means with bootstrap intervals over test images and seeds.

Every arm is scored on the same test images with the same training seeds, so each arm's scores form an
array (seeds, images, classes). An arm's figure is the mean over seeds and images; its 95% interval is
the percentile interval of that mean over :class:`Resamples`: each resample draws the seeds with
replacement and, independently, the test images with replacement (a two-level bootstrap: both the
training seed and the test image vary). The same resamples serve every arm and every difference, and
they come from an explicit seed (:func:`~synthgen.seeding.bootstrap_rng`), so a table is reproducible.

A paired comparison (an arm against the reference arm, or shifted against unshifted images) is the
mean of the per-(seed, image) differences with its interval from the same resamples: it keeps what
the two share (the image's difficulty, the seed's split of luck) out of the interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthgen.errors import ConfigError
from synthgen.seeding import bootstrap_rng

LEVEL = 0.95
RESAMPLES = 2000
_CHUNK = 250  # resamples evaluated at once (memory: chunk x seeds x images floats)


@dataclass(frozen=True)
class Estimate:
    """A mean and its bootstrap interval [low, high]."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci": [self.low, self.high]}


@dataclass(frozen=True)
class Resamples:
    """Bootstrap resamples: row b picks seed positions ``seeds[b]`` and image positions ``images[b]``."""

    seeds: np.ndarray  # (B, S) int
    images: np.ndarray  # (B, N) int

    @property
    def shape(self) -> tuple[int, int]:
        """(seeds, images) of the arrays these resamples fit."""
        return self.seeds.shape[1], self.images.shape[1]


def draw_resamples(n_seeds: int, n_images: int, count: int = RESAMPLES, seed: int = 0) -> Resamples:
    """``count`` resamples of ``n_seeds`` seeds and ``n_images`` images, from ``bootstrap_rng(seed)``."""
    if n_seeds < 1 or n_images < 1 or count < 1:
        raise ConfigError(
            f"Expected at least one seed, one image and one resample. Got {n_seeds}, {n_images}, {count}."
        )
    rng = bootstrap_rng(seed)
    seeds = rng.integers(0, n_seeds, (count, n_seeds))
    return Resamples(seeds, rng.integers(0, n_images, (count, n_images)))


def bootstrap_mean(values: np.ndarray, resamples: Resamples, level: float = LEVEL) -> Estimate:
    """The mean of ``values`` (seeds, images) and the ``level`` percentile interval of its resampled means."""
    v = np.asarray(values, np.float64)
    if v.ndim != 2 or v.shape != resamples.shape:
        raise ConfigError(
            f"Expected values of shape (seeds, images) = {resamples.shape}. Got {v.shape} instead."
        )
    means = np.concatenate(
        [
            v[resamples.seeds[a : a + _CHUNK, :, None], resamples.images[a : a + _CHUNK, None, :]].mean(
                axis=(1, 2)
            )
            for a in range(0, len(resamples.seeds), _CHUNK)
        ]
    )
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return Estimate(float(v.mean()), float(low), float(high))


@dataclass(frozen=True)
class ShiftStats:
    """One arm under one acquisition shift: Dice (mean over classes) and the paired drop from unshifted."""

    dice: Estimate
    drop: Estimate

    def to_dict(self) -> dict[str, Any]:
        return {"dice": self.dice.to_dict(), "drop": self.drop.to_dict()}


@dataclass(frozen=True)
class ArmStats:
    """One arm: Dice per class and ``mean`` (over classes); the paired difference from the reference arm
    (None for the reference itself, or without one); under shift, per shift and the mean drop over the
    shifts, and that mean drop less the reference's (paired)."""

    dice: dict[str, Estimate]
    diff: dict[str, Estimate] | None = None
    shifts: dict[str, ShiftStats] = field(default_factory=dict)
    mean_drop: Estimate | None = None
    mean_drop_diff: Estimate | None = None

    def to_dict(self) -> dict[str, Any]:
        def opt(e: Estimate | None) -> dict[str, Any] | None:
            return None if e is None else e.to_dict()

        return {
            "dice": {k: e.to_dict() for k, e in self.dice.items()},
            "diff_vs_reference": None
            if self.diff is None
            else {k: e.to_dict() for k, e in self.diff.items()},
            "shifts": {k: s.to_dict() for k, s in self.shifts.items()},
            "mean_drop": opt(self.mean_drop),
            "mean_drop_diff_vs_reference": opt(self.mean_drop_diff),
        }


@dataclass(frozen=True)
class UtilityStats:
    classes: tuple[str, ...]
    seeds: int
    images: int
    resamples: int
    reference: str | None  # the arm every other is compared with (None: not among the arms)
    arms: dict[str, ArmStats]
    shifts: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "classes": list(self.classes),
            "seeds": self.seeds,
            "test_images": self.images,
            "resamples": self.resamples,
            "level": LEVEL,
            "reference": self.reference,
            "shifts": list(self.shifts),
            "arms": {a: s.to_dict() for a, s in self.arms.items()},
        }


def _with_mean(values: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """(seeds, images, classes) -> {class: (seeds, images)} plus ``mean``: the mean over classes."""
    out = {c: values[..., k] for k, c in enumerate(classes)}
    return out | {"mean": values.mean(axis=-1)}


def utility_stats(
    dice: Mapping[str, np.ndarray],
    classes: Sequence[str],
    *,
    reference: str | None = "real",
    shifted: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> UtilityStats:
    """Statistics of every arm from its per-image Dice ``dice[arm]`` (seeds, images, classes), and,
    with ``shifted[arm][shift]`` of the same shape, under every acquisition shift.

    Every array must have one shape: the same seeds and test images for every arm (and shift).
    """
    arrays = {a: np.asarray(v, np.float64) for a, v in dice.items()}
    if not arrays:
        raise ConfigError("Expected the scores of at least one arm. Got none.")
    shifted = {a: {s: np.asarray(v, np.float64) for s, v in m.items()} for a, m in (shifted or {}).items()}
    shapes = {v.shape for v in arrays.values()} | {v.shape for m in shifted.values() for v in m.values()}
    first = next(iter(arrays.values())).shape
    if len(shapes) != 1 or len(first) != 3 or first[2] != len(classes):
        raise ConfigError(
            f"Expected every arm's scores as one (seeds, images, {len(classes)} classes) shape: the same "
            f"seeds and test images for every arm. Got shapes {sorted(shapes)}."
        )
    shift_names = tuple(dict.fromkeys(s for m in shifted.values() for s in m))
    if shifted and (set(shifted) != set(arrays) or any(tuple(m) != shift_names for m in shifted.values())):
        raise ConfigError(f"Expected every arm scored under the shifts {list(shift_names)}. Some were not.")
    boot = draw_resamples(first[0], first[1], resamples, seed)
    ref = reference if reference in arrays else None
    ref_drop = _mean_drop(arrays[ref], shifted[ref]) if ref is not None and shifted else None
    stats = {}
    for arm, values in arrays.items():
        per = _with_mean(values, classes)
        dice_stats = {c: bootstrap_mean(v, boot) for c, v in per.items()}
        diff = None
        if ref is not None and arm != ref:
            ref_per = _with_mean(arrays[ref], classes)
            diff = {c: bootstrap_mean(per[c] - ref_per[c], boot) for c in per}
        shifts, mean_drop, mean_drop_diff = {}, None, None
        if shifted:
            unshifted = values.mean(axis=-1)
            for name, v in shifted[arm].items():
                under = v.mean(axis=-1)
                shifts[name] = ShiftStats(
                    bootstrap_mean(under, boot), bootstrap_mean(unshifted - under, boot)
                )
            drop = _mean_drop(values, shifted[arm])
            mean_drop = bootstrap_mean(drop, boot)
            if ref_drop is not None and arm != ref:
                mean_drop_diff = bootstrap_mean(drop - ref_drop, boot)
        stats[arm] = ArmStats(dice_stats, diff, shifts, mean_drop, mean_drop_diff)
    return UtilityStats(tuple(classes), first[0], first[1], resamples, ref, stats, shift_names)


def _mean_drop(values: np.ndarray, shifted: Mapping[str, np.ndarray]) -> np.ndarray:
    """(seeds, images): the class-mean Dice unshifted less its mean over the shifts, per seed and image."""
    return values.mean(axis=-1) - np.mean([v.mean(axis=-1) for v in shifted.values()], axis=0)
