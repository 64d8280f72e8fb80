"""Label sources: where the label maps of a build come from.

A source turns a per-sample random generator into one label map::

    labels, source_index, params = source.draw(rng)   # (H, W) uint8, int, (params_size,) float64

``source_index`` says which stored map or volume was used (-1 for procedural anatomy) and ``params``
records every other draw, for ``meta/``. The engine gives each sample its own generator, from
``SeedSequence([root_seed, index, attempt])``, so a sample's map does not depend on batching, the
scheduler or the number of workers; :meth:`LabelSource.draw_batch` does exactly that for a list of
global indices. Sources load their data lazily, once per process, and drop it when pickled, so they
can be built in the coordinating process and shipped to workers.

Four kinds, each with a frozen config that round-trips through ``to_dict``/``from_dict`` (the build
config embeds the dict, ``kind`` first):

``procedural``  parametric anatomy (:mod:`synthgen.sources.anatomy`); ``view`` is ``apical`` (4- and
                2-chamber echo, half each), ``a4c``, ``a2c``, ``short_axis``, ``ct_axial``.
``store``       the label maps of a synthgen store (say, ingested expert annotations), drawn with
                replacement and resized to the build's size by nearest neighbour.
``volume``      planes through 3D label volumes around their stack plane: tilts, an in-plane turn,
                an offset along the normal and an in-plane shift, sampled by nearest neighbour
                (:mod:`synthgen.kernels.slicing`).
``vae``         new anatomies sampled from a shape VAE checkpoint (:mod:`synthgen.models.shape_vae`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthgen.errors import ConfigError
from synthgen.kernels import resize_labels
from synthgen.schemas import (
    CONFIGS,
    VIEW_ALIASES,
    LabelSchema,
    ProceduralSourceConfig,
    SourceConfig,
    StoreSourceConfig,
    VaeSourceConfig,
    VolumeSourceConfig,
    get_schema,
    parse_int,
    source_config_from_dict,
)
from synthgen.seeding import sample_rng
from synthgen.sources import anatomy
from synthgen.sources.gate import GateReport, check_batch


@dataclass(frozen=True)
class LabelBatch:
    """Label maps of several samples: (N, H, W) uint8, (N,) int64 source indices, (N, P) params."""

    labels: np.ndarray
    source_index: np.ndarray
    params: np.ndarray


class LabelSource:
    """Base of the label sources: the batch entry point and pickling without cached data."""

    schema: LabelSchema
    shape: tuple[int, int]
    param_names: tuple[str, ...] = ()

    @property
    def params_size(self) -> int:
        return len(self.param_names)

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What to record in a store's provenance."""
        return {
            "config": self.config.to_dict(),  # type: ignore[attr-defined]
            "schema": self.schema.name,
            "shape": list(self.shape),
            "params": list(self.param_names),
        }

    def draw_batch(self, root_seed: int, indices: Sequence[int], attempt: int = 0) -> LabelBatch:
        """Samples ``indices``, each from ``SeedSequence([root_seed, index, attempt])``."""
        n = len(indices)
        out = LabelBatch(
            np.zeros((n, *self.shape), np.uint8), np.zeros(n, np.int64), np.zeros((n, self.params_size))
        )
        for j, i in enumerate(indices):
            rng = sample_rng(root_seed, int(i), attempt)
            out.labels[j], out.source_index[j], out.params[j] = self.draw(rng)
        return out

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_cache")}


def _parse_shape(shape: Any) -> tuple[int, int]:
    if isinstance(shape, str) or not isinstance(shape, Sequence) or len(shape) != 2:
        raise ConfigError(f"Expected an image size [H, W]. Got {shape!r} instead.")
    return parse_int(shape[0], "the image height", lo=8), parse_int(shape[1], "the image width", lo=8)


# -- procedural -----------------------------------------------------------------------------------


class ProceduralSource(LabelSource):
    """Procedural anatomy; with several views each sample picks one uniformly (recorded in params)."""

    def __init__(self, config: ProceduralSourceConfig, shape: tuple[int, int]) -> None:
        self.config = config
        self.shape = _parse_shape(shape)
        schemas = {anatomy.schema_of(v).name for v in config.views}
        types = {anatomy.params_type(v) for v in config.views}
        if len(schemas) != 1 or len(types) != 1:
            raise ConfigError(f"Expected views of one schema and model. Got {list(config.views)} instead.")
        self.schema = anatomy.schema_of(config.views[0])
        self.param_names = types.pop().names()

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray]:
        views = self.config.views
        view = views[int(rng.integers(len(views)))] if len(views) > 1 else views[0]
        params = anatomy.sample_params(rng, view)
        return anatomy.render(params, self.shape), -1, params.to_vector()


# -- store ----------------------------------------------------------------------------------------


class StoreSource(LabelSource):
    """Label maps of a store, drawn with replacement. The labels are read once per process."""

    def __init__(self, config: StoreSourceConfig, shape: tuple[int, int]) -> None:
        from synthgen.storage import StoreReader

        self.config = config
        self.shape = _parse_shape(shape)
        reader = StoreReader(config.url)  # attributes only; the arrays are read on the first draw
        self.schema = reader.schema
        if not reader.num_available:
            raise ConfigError(f"Expected a store with complete shards at {config.url}. It has none.")

    def _cached(self) -> tuple[np.ndarray, np.ndarray]:
        if getattr(self, "_cache", None) is None:
            from synthgen.storage import StoreReader, split_indices

            reader = StoreReader(self.config.url)
            indices = reader.available_indices()
            labels = np.concatenate(
                [reader.read_labels(*reader.layout.shard_bounds(k)) for k in reader.complete_shards]
            )
            if self.config.split != "all":  # by patient, as the trainers split (a store without is an error)
                keep = np.isin(indices, split_indices(reader, self.config.split))
                labels, indices = labels[keep], indices[keep]
            if self.config.skip_empty:
                keep = labels.reshape(len(labels), -1).any(axis=1)
                labels, indices = labels[keep], indices[keep]
            if not len(labels):
                what = "" if self.config.split == "all" else f" of the {self.config.split} patients"
                raise ConfigError(
                    f"Expected label maps with foreground{what} in {self.config.url}. There are none."
                )
            self._cache = (labels, indices)
        return self._cache

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray]:
        labels, indices = self._cached()
        j = int(rng.integers(len(labels)))
        return resize_labels(labels[j], self.shape), int(indices[j]), np.zeros(0)


# -- volume ---------------------------------------------------------------------------------------


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """3 x 3 rotation about a unit ``axis`` (Rodrigues)."""
    a = np.deg2rad(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


class VolumeSource(LabelSource):
    """Random planes around the stack plane of 3D label volumes, nearest-neighbour sampled."""

    param_names = ("tilt_row", "tilt_col", "rotation", "offset", "shift_row", "shift_col")

    def __init__(
        self,
        config: VolumeSourceConfig,
        shape: tuple[int, int],
        *,
        volumes: Sequence[np.ndarray] | None = None,
    ) -> None:
        """``volumes`` (already in the schema's values) replace reading ``config.urls``, for tests."""
        self.config = config
        self.shape = _parse_shape(shape)
        self.schema = get_schema(config.schema)
        axes = [a for a in range(3) if a != config.normal_axis]
        self._axes = (config.normal_axis, axes[0], axes[1])  # normal, rows, cols
        self._given = None  # in-memory volumes travel with the source when it is pickled
        if volumes is not None:
            self._given = [self._prepare(np.asarray(v), f"volume {i}") for i, v in enumerate(volumes)]

    def _prepare(self, volume: np.ndarray, where: str) -> tuple[np.ndarray, float, float, float]:
        if volume.ndim != 3:
            raise ConfigError(f"Expected a 3D label volume in {where}. Got shape {volume.shape} instead.")
        volume = self.schema.encode_source(volume, where)
        normal = self._axes[0]
        along = np.nonzero(volume.any(axis=tuple(a for a in range(3) if a != normal)))[0]
        if not along.size:
            raise ConfigError(f"Expected labelled voxels in {where}. It is empty.")
        weights = volume.astype(bool).sum(axis=tuple(a for a in range(3) if a != normal))
        centre = float((np.arange(volume.shape[normal]) * weights).sum() / weights.sum())
        return np.ascontiguousarray(volume), centre, float(along[0]), float(along[-1])

    def _volumes(self) -> list[tuple[np.ndarray, float, float, float]]:
        if self._given is not None:
            return self._given
        if getattr(self, "_cache", None) is None:
            from synthgen.storage import read_volume

            self._cache = [self._prepare(read_volume(u, u, kind="label"), u) for u in self.config.urls]
        return self._cache

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray]:
        from synthgen.kernels import slice_plane

        c = self.config
        volumes = self._volumes()
        k = int(rng.integers(len(volumes)))
        volume, centre, first, last = volumes[k]
        tilt_row, tilt_col = rng.uniform(-c.max_tilt, c.max_tilt, 2)
        rotation = rng.uniform(-c.max_rotation, c.max_rotation)
        offset = rng.uniform((first - centre) * c.offset_fraction, (last - centre) * c.offset_fraction)
        shift = rng.uniform(-c.max_shift, c.max_shift, 2)

        normal, rows, cols = (np.eye(3)[a] for a in self._axes)
        turn = _rotation(normal, rotation) @ _rotation(cols, tilt_row) @ _rotation(rows, tilt_col)
        spacing = np.asarray(c.spacing, np.float64)
        h, w = self.shape
        pixel = max(
            volume.shape[self._axes[1]] * spacing[self._axes[1]] / h,
            volume.shape[self._axes[2]] * spacing[self._axes[2]] / w,
        )
        row_step, col_step = (turn @ rows) * pixel / spacing, (turn @ cols) * pixel / spacing
        middle = (np.asarray(volume.shape, np.float64) - 1) / 2
        middle[self._axes[0]] = centre + offset
        middle += shift[0] * h * row_step + shift[1] * w * col_step
        labels = slice_plane(volume, middle, row_step, col_step, self.shape).astype(np.uint8)
        params = np.array([tilt_row, tilt_col, rotation, offset, shift[0], shift[1]])
        return labels, k, params


# -- shape VAE ------------------------------------------------------------------------------------


class VaeSource(LabelSource):
    """Shape VAE samples: a standard normal draw from the sample's NumPy generator (recorded as params)
    mapped through the checkpoint's sampling prior, decoded with torch on one thread (set process-wide
    on first use), argmax, resized to the build's size by nearest neighbour.
    The model is loaded once per process and dropped when pickled."""

    def __init__(self, config: VaeSourceConfig, shape: tuple[int, int]) -> None:
        from synthgen.models import read_vae_spec

        self.config = config
        self.shape = _parse_shape(shape)
        spec = read_vae_spec(config.checkpoint)  # the spec only; the weights load on the first draw
        self.schema = spec.schema
        self.param_names = tuple(f"eps{i}" for i in range(spec.model.latent_dim))

    def _cached(self) -> Any:
        if getattr(self, "_cache", None) is None:
            import torch

            from synthgen.models import load_vae

            torch.set_num_threads(1)  # one sample at a time; parallelism is across samples
            self._cache = load_vae(self.config.checkpoint)[0]
        return self._cache

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, int, np.ndarray]:
        import torch

        from synthgen.models import decode_labels

        eps = rng.standard_normal(self.params_size)
        model = self._cached()
        z = model.latent(torch.from_numpy(eps[None].astype(np.float32)))
        return resize_labels(decode_labels(model, z, self.schema)[0], self.shape), -1, eps


SOURCES: dict[str, type[LabelSource]] = {
    "procedural": ProceduralSource,
    "store": StoreSource,
    "volume": VolumeSource,
    "vae": VaeSource,
}


def source_from_config(config: Mapping[str, Any] | SourceConfig, shape: tuple[int, int]) -> LabelSource:
    """A label source producing (H, W) = ``shape`` maps, from a config or its dict."""
    if isinstance(config, Mapping):
        config = source_config_from_dict(config)
    return SOURCES[config.kind](config, shape)


__all__ = [
    "CONFIGS",
    "VIEW_ALIASES",
    "LabelBatch",
    "LabelSource",
    "ProceduralSource",
    "ProceduralSourceConfig",
    "StoreSource",
    "StoreSourceConfig",
    "VaeSource",
    "VaeSourceConfig",
    "VolumeSource",
    "VolumeSourceConfig",
    "gate_samples",
    "source_config_from_dict",
    "source_from_config",
]


def gate_samples(
    model: Any, schema: LabelSchema, n: int, generator: Any
) -> tuple[np.ndarray, np.ndarray, GateReport]:
    """Sample ``n`` maps from a shape VAE (``generator``: a ``torch.Generator``) and gate them: (maps,
    passed mask, report with the rejection reasons counted)."""
    from synthgen.models import sample_labels

    labels = sample_labels(model, schema, n, generator)
    passed, flags = check_batch(labels, schema)
    return labels, passed, GateReport.from_flags(flags, schema)
