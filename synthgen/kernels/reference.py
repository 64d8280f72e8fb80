"""Slow NumPy/SciPy references for every Numba kernel: the tests compare the kernels against these.

Each reference computes the same mathematical result by an independent route (vectorised NumPy, or
``scipy.ndimage``), one map at a time. Where the result depends on float rounding (the displacement
field), the reference performs the same float32 operations in the same order, so that nearest
neighbour results agree exactly; the rounding convention everywhere is half up, as in
``scipy.ndimage.map_coordinates(order=0)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from synthgen.kernels.affine import AffineParams
from synthgen.kernels.fields import _GOLDEN, _MIX1, _MIX2, FIELD_STEP, grid

_F = np.float32


def _mix64(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def control_values(seed: int, n_control: tuple[int, int], max_displacement: float) -> np.ndarray:
    """The (2, ncy, ncx) float32 control displacements of ``seed``: SplitMix64 counter hashes."""
    ncy, ncx = n_control
    key = _mix64(np.array([seed], dtype=np.uint64))
    counter = np.arange(1, 2 * ncy * ncx + 1, dtype=np.uint64)
    bits = _mix64(key + counter * _GOLDEN) >> np.uint64(40)
    u = bits.astype(_F) * _F(2.0**-24)
    return ((_F(2.0) * u - _F(1.0)) * _F(max_displacement)).reshape(2, ncy, ncx)


def midres_field(
    seed: int, shape: tuple[int, int], spacing: float, max_displacement: float, matrix: np.ndarray
) -> np.ndarray:
    """The (2, gh, gw) mid-resolution field: B-spline taps in order, then the affine displacement."""
    g = grid(shape, spacing)
    control = control_values(seed, g.n_control, max_displacement)
    cols = _F(0.0) + g.wx[None, None, :, 0] * control[:, :, g.kx0]
    for b in range(1, 4):
        cols = cols + g.wx[None, None, :, b] * control[:, :, g.kx0 + b]
    mid = _F(0.0) + g.wy[None, :, 0, None] * cols[:, g.ky0, :]
    for a in range(1, 4):
        mid = mid + g.wy[None, :, a, None] * cols[:, g.ky0 + a, :]
    y = (np.arange(len(g.ky0)) * FIELD_STEP).astype(np.float64)[:, None]
    x = (np.arange(len(g.kx0)) * FIELD_STEP).astype(np.float64)[None, :]
    src_rows = matrix[0, 0] * y + matrix[0, 1] * x + matrix[0, 2]
    src_cols = matrix[1, 0] * y + matrix[1, 1] * x + matrix[1, 2]
    return np.stack([mid[0] + (src_rows - y).astype(_F), mid[1] + (src_cols - x).astype(_F)])


def deformation_field(
    seed: int,
    shape: tuple[int, int],
    spacing: float,
    max_displacement: float,
    affine: AffineParams | None = None,
) -> np.ndarray:
    """(2, H, W) float32 field: the mid-resolution field upsampled bilinearly, rows first."""
    mid = midres_field(
        seed, shape, float(spacing), float(max_displacement), (affine or AffineParams()).matrix(shape)
    )
    y = np.arange(shape[0])
    x = np.arange(shape[1])
    i, j = y // FIELD_STEP, x // FIELD_STEP
    fy = ((y - i * FIELD_STEP).astype(_F) * _F(1.0 / FIELD_STEP))[:, None]
    fx = ((x - j * FIELD_STEP).astype(_F) * _F(1.0 / FIELD_STEP))[None, :]
    gy, gx = _F(1.0) - fy, _F(1.0) - fx
    ii, jj = i[:, None], j[None, :]
    left = gy * mid[:, ii, jj] + fy * mid[:, ii + 1, jj]
    right = gy * mid[:, ii, jj + 1] + fy * mid[:, ii + 1, jj + 1]
    return gx * left + fx * right


def _coordinates(field: np.ndarray) -> np.ndarray:
    h, w = field.shape[1:]
    rows = field[0] + np.arange(h, dtype=_F)[:, None]
    cols = field[1] + np.arange(w, dtype=_F)[None, :]
    return np.stack([rows, cols]).astype(np.float64)


def warp_labels(labels: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Nearest neighbour through ``field`` with ``map_coordinates(order=0, mode="nearest")``."""
    return ndi.map_coordinates(labels, _coordinates(field), order=0, mode="nearest", output=labels.dtype)


def warp_image(image: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Bilinear through ``field`` (``order=1``, edges clamped); integers rounded half up."""
    value = ndi.map_coordinates(image.astype(np.float64), _coordinates(field), order=1, mode="nearest")
    if image.dtype.kind in "iu":
        value = np.floor(value + 0.5)
    return value.astype(image.dtype)


def deform_labels(
    labels: np.ndarray, seed: int, spacing: float, max_displacement: float, affine: AffineParams | None = None
) -> np.ndarray:
    return warp_labels(labels, deformation_field(seed, labels.shape, spacing, max_displacement, affine))


def disk(radius: int) -> np.ndarray:
    """The structuring element {(dy, dx): dy**2 + dx**2 <= radius**2}."""
    d = np.arange(-radius, radius + 1)
    return d[:, None] ** 2 + d[None, :] ** 2 <= radius**2


def _rank(labels: np.ndarray, priority: Sequence[int]) -> np.ndarray:
    order = {int(v): r for r, v in enumerate(priority)}
    return np.vectorize(lambda v: order[int(v)], otypes=[np.int64])(labels)


def dilate_class(labels: np.ndarray, value: int, radius: int, priority: Sequence[int]) -> np.ndarray:
    """Grow ``value`` by a disk of ``radius`` into pixels of classes ranked after it in ``priority``."""
    grown = ndi.binary_dilation(labels == value, structure=disk(radius)) if radius else labels == value
    weaker = _rank(labels, priority) > list(priority).index(value)
    return np.where(grown & weaker, labels.dtype.type(value), labels)


def erode_class(labels: np.ndarray, value: int, radius: int, priority: Sequence[int]) -> np.ndarray:
    """Shrink ``value`` by a disk of ``radius``; a freed pixel takes the strongest class within reach."""
    mask = labels == value
    if radius == 0 or not mask.any() or mask.all():
        return labels.copy()
    freed = mask & ~ndi.binary_erosion(mask, structure=disk(radius), border_value=1)
    out = labels.copy()
    for k in priority:
        if k == value:
            continue
        take = freed & ndi.binary_dilation(labels == k, structure=disk(radius))
        out[take] = k
        freed &= ~take
    return out


def _structure(connectivity: int) -> np.ndarray:
    return ndi.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def connected_components(mask: np.ndarray, connectivity: int = 4) -> tuple[np.ndarray, int]:
    """Components numbered 1..n in raster order of their first pixel, as ``scipy.ndimage.label``."""
    components, count = ndi.label(mask != 0, structure=_structure(connectivity))
    return components.astype(np.int32), int(count)


def largest_component(labels: np.ndarray, value: int, connectivity: int = 4) -> np.ndarray:
    """Keep the largest component of ``value`` (the first in raster order on ties); every other one
    takes the label most common on its outer (4-neighbour) boundary, the smallest on ties."""
    components, count = connected_components(labels == value, connectivity)
    if count <= 1:
        return labels.copy()
    sizes = np.bincount(components.ravel())[1:]
    keep = int(np.argmax(sizes)) + 1
    out = labels.copy()
    for k in range(1, count + 1):
        if k == keep:
            continue
        part = components == k
        boundary = ndi.binary_dilation(part, structure=_structure(4)) & ~part
        values, counts = np.unique(labels[boundary], return_counts=True)
        out[part] = values[np.argmax(counts)]
    return out


def fill_holes(labels: np.ndarray, value: int, max_area: int | None = None) -> np.ndarray:
    """Give ``value`` to every region enclosed by it (4-connected, not touching the image border) of
    at most ``max_area`` pixels (all of them when None)."""
    mask = labels == value
    holes = ndi.binary_fill_holes(mask) & ~mask
    if max_area is not None:
        parts, _ = ndi.label(holes, structure=_structure(4))
        sizes = np.bincount(parts.ravel())
        holes &= sizes[parts] <= max_area
    return np.where(holes, labels.dtype.type(value), labels)


def class_stats(index: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Areas and 4-neighbour contacts of one class-index map, outside as class 0 (vectorised NumPy)."""
    areas = np.bincount(index.ravel(), minlength=num_classes).astype(np.int64)
    padded = np.pad(index, 1)
    contacts = np.zeros((num_classes, num_classes), np.int64)
    for a, b in ((padded[:, 1:], padded[:, :-1]), (padded[1:, :], padded[:-1, :])):
        edge = a != b
        np.add.at(contacts, (a[edge], b[edge]), 1)
        np.add.at(contacts, (b[edge], a[edge]), 1)
    return areas, contacts


# -- appearance ------------------------------------------------------------------------------------
def _hash(key: int, stream: int, i: np.ndarray) -> np.ndarray:
    counter = np.uint64(stream) * np.uint64(1 << 40) + np.asarray(i, np.uint64) + np.uint64(1)
    return _mix64(np.uint64(key) + counter * _GOLDEN)


def _uniform(key: int, stream: int, i: np.ndarray) -> np.ndarray:
    return (_hash(key, stream, i) >> np.uint64(11)).astype(np.float64) / 2.0**53


def _normal(key: int, stream: int, i: np.ndarray) -> np.ndarray:
    h = _hash(key, stream, i)
    parts = [((h >> np.uint64(s)) & np.uint64(0xFFFF)).astype(np.float64) for s in (0, 16, 32, 48)]
    return ((sum(parts) / 65536.0 - 2.0) * np.sqrt(3.0)).astype(_F)


def _pixel_bytes(key: int, stream: int, i: np.ndarray) -> list[np.ndarray]:
    """The four bytes (low first) of the 32-bit pixel hash of values ``i`` of a stream: keyed by the
    two halves of the stream's 64-bit hash of counter 0, two multiply-xorshift rounds."""
    seed = _hash(key, stream, np.zeros(1, np.uint64))
    lo, hi = (seed & np.uint64(0xFFFFFFFF)).astype(np.uint32), (seed >> np.uint64(32)).astype(np.uint32)
    x = (np.asarray(i, np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.uint32) + lo  # arrays wrap silently
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15)) ^ hi
    x = x * np.uint32(0x846CA68B)
    x = x ^ (x >> np.uint32(16))
    return [((x >> np.uint32(s)) & np.uint32(0xFF)).astype(np.float64) for s in (0, 8, 16, 24)]


def _pixel_normal(key: int, stream: int, i: np.ndarray) -> np.ndarray:
    """Pixel noise: the sum of the hash's four bytes, standardised (Irwin-Hall: mean 510, variance
    4 (256^2 - 1) / 12)."""
    b = _pixel_bytes(key, stream, i)
    return ((b[0] + b[1] + b[2] + b[3] - 510.0) / np.sqrt(4 * (256.0**2 - 1) / 12)).astype(_F)


def _pixel_rayleigh(key: int, stream: int, i: np.ndarray) -> np.ndarray:
    """Speckle amplitudes of mean 1: |(b0 + b1 - 255, b2 + b3 - 255)| over its mean, the mean over the
    distribution of the byte-pair sums (counted over all 65536 pairs)."""
    b = _pixel_bytes(key, stream, i)
    ways = np.bincount(np.add.outer(np.arange(256), np.arange(256)).ravel()).astype(np.float64)
    sums = np.arange(len(ways)) - 255.0
    mean = ways @ np.hypot(sums[:, None], sums[None, :]) @ ways / ways.sum() ** 2
    return np.hypot(b[0] + b[1] - 255.0, b[2] + b[3] - 255.0) / mean


def appearance_params(
    key: int, ranges: np.ndarray, num_classes: int, labels: np.ndarray, sector: bool
) -> np.ndarray:
    """One sample's parameter vector, as :func:`synthgen.kernels.randomise.sample_appearance` draws it."""
    import synthgen.kernels.randomise as k

    out = np.zeros(k.n_params(num_classes), np.float64)
    u = _uniform(key, 0, np.arange(k.N_RANGED))
    lo, hi = ranges[: k.N_RANGED, 0], ranges[: k.N_RANGED, 1]
    out[: k.N_RANGED] = lo + (hi - lo) * u
    g_lo, g_hi = np.log(ranges[k.GAMMA])
    out[k.GAMMA] = np.exp(g_lo + (g_hi - g_lo) * u[k.GAMMA])
    out = out.astype(_F).astype(np.float64)
    grid_size = k.BIAS_GRID * k.BIAS_GRID
    out[k.BIAS0 : k.BIAS0 + grid_size] = _normal(key, 0, 64 + np.arange(grid_size)) * _F(out[k.BIAS])
    for j, row in ((0, k.N_RANGED), (num_classes, k.N_RANGED + 1)):
        u = _uniform(key, 0, 128 + j + np.arange(num_classes))
        out[k.CLASS0 + j : k.CLASS0 + j + num_classes] = (
            ranges[row, 0] + (ranges[row, 1] - ranges[row, 0]) * u
        )
    out = out.astype(_F)
    if sector:
        h, w = labels.shape
        ys, xs = np.nonzero(labels)
        ys, xs = ys[(ys % 2 == 0) & (xs % 2 == 0)], xs[(ys % 2 == 0) & (xs % 2 == 0)]
        py = ys + 0.5 - np.float64(out[k.APEX_Y]) * h
        px = xs + 0.5 - np.float64(out[k.APEX_X]) * w
        half0, tilt = np.float64(out[k.HALF_ANGLE]), np.radians(np.float64(out[k.TILT]))
        across = np.abs(px * np.cos(tilt) - py * np.sin(tilt))
        along = px * np.sin(tilt) + py * np.cos(tilt)
        allowed = np.float64(out[k.SPILL]) * len(ys)
        steps = max(int(89.0 - half0), 0)
        s = 0  # whole degrees added: the first count of side spills within half the allowance
        while (
            s < steps
            and np.count_nonzero((along <= 0) | (across > along * np.tan(np.radians(half0 + s))))
            > 0.5 * allowed
        ):
            s += 1
        side = np.count_nonzero((along <= 0) | (across > along * np.tan(np.radians(half0 + s))))
        out[k.HALF_ANGLE] = _F(half0 + s)
        a, b = np.float64(out[k.WIDTH]) * w, np.float64(out[k.DEPTH]) * h
        q2 = (px / a) ** 2 + (py / b) ** 2
        j = 0
        while j < 40 and np.count_nonzero(q2 > 1.02 ** (2 * j)) > allowed - side:
            j += 1
        out[k.DEPTH] *= _F(1.02**j)
        out[k.WIDTH] *= _F(1.02**j)
    return out


def _taps(sigma: float) -> np.ndarray:
    if sigma < 0.25:
        return np.ones(1)
    r = min(int(np.ceil(3.0 * sigma)), 8)
    t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return t / t.sum()


def _prefilter(sigma: float, f: float) -> float:
    return sigma if f < 1.25 else float(np.float32(np.sqrt(sigma**2 + 0.25 * (f**2 - 1))))


def _lose_resolution(image: np.ndarray, f: float, axis: int) -> np.ndarray:
    if f < 1.25:
        return image
    n = image.shape[axis]
    m = int(np.ceil((n - 1) / f)) + 1
    coarse_at = np.minimum(np.arange(m) * f, n - 1)
    fine_at = np.minimum(np.arange(n) / f, m - 1)
    line = np.arange(n)
    coarse = np.apply_along_axis(lambda v: np.interp(coarse_at, line, v), axis, image)
    return np.apply_along_axis(lambda v: np.interp(fine_at, np.arange(m), v), axis, coarse)


def appearance(
    indices: np.ndarray,
    base: np.ndarray | None,
    key: int,
    ranges: np.ndarray,
    *,
    modality: str,
    texture: bool,
    sector: bool,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W) in [0, 1], parameters) of one sample, by NumPy/SciPy: gamma by ``**``, blur by
    ``scipy.ndimage.correlate1d``, resolution loss by ``numpy.interp``."""
    import synthgen.kernels.randomise as k

    p = appearance_params(key, ranges, num_classes, indices, sector and modality == "echo")
    sector = sector and modality == "echo"
    h, w = indices.shape
    n = np.arange(h * w)
    if texture:
        means = p[k.CLASS0 : k.CLASS0 + num_classes].astype(np.float64)
        stds = p[k.CLASS0 + num_classes :].astype(np.float64)
        img = means[indices] + stds[indices] * _pixel_normal(key, 1, n).reshape(h, w)
    else:
        img = base.astype(np.float64)
    if modality == "echo" and p[k.NOISE] > 0:
        amp = np.empty((h, w))
        for y in range(h):
            d = max(((y + 0.5) / h - np.float64(p[k.APEX_Y])) / np.float64(p[k.DEPTH]), 0.0)
            spacing = 1.0 + np.float64(p[k.SPECKLE]) * w * d
            pos = np.arange(w) / spacing
            nodes = _pixel_rayleigh(key, 2, y * (w + 2) + np.arange(w + 2))
            amp[y] = np.interp(pos, np.arange(w + 2), nodes)
        img = img * (1 + np.float64(p[k.NOISE]) * (amp - 1))
    blur_x = _prefilter(float(p[k.BLUR_X]), float(p[k.RES_X]))
    blur_y = _prefilter(float(p[k.BLUR_Y]), float(p[k.RES_Y]))
    img = ndi.correlate1d(img, _taps(blur_x), axis=1, mode="nearest")
    img = ndi.correlate1d(img, _taps(blur_y), axis=0, mode="nearest")
    img = _lose_resolution(img, float(p[k.RES_X]), 1)
    img = _lose_resolution(img, float(p[k.RES_Y]), 0)
    g = k.BIAS_GRID
    nodes = np.exp(p[k.BIAS0 : k.BIAS0 + g * g].astype(np.float64)).reshape(g, g)
    across = np.stack([np.interp(np.arange(w) * (g - 1) / max(w - 1, 1), np.arange(g), r) for r in nodes])
    img = img * np.stack(
        [np.interp(np.arange(h) * (g - 1) / max(h - 1, 1), np.arange(g), c) for c in across.T], 1
    )
    sigma = np.float64(p[k.NOISE])
    if modality == "mr":
        img = np.hypot(
            img + sigma * _pixel_normal(key, 4, n).reshape(h, w),
            sigma * _pixel_normal(key, 5, n).reshape(h, w),
        )
    elif modality == "ct":
        img = img + sigma * _pixel_normal(key, 4, n).reshape(h, w)
    img = np.clip(img, 0, 1) ** np.float64(p[k.GAMMA])
    img = np.clip((img - 0.5) * np.float64(p[k.CONTRAST]) + 0.5 + np.float64(p[k.BRIGHTNESS]), 0, 1)
    if sector:
        py, px = np.mgrid[:h, :w] + 0.5
        py, px = py - np.float64(p[k.APEX_Y]) * h, px - np.float64(p[k.APEX_X]) * w
        half, tilt = np.radians(np.float64(p[k.HALF_ANGLE])), np.radians(np.float64(p[k.TILT]))
        d_left = px * np.cos(tilt - half) - py * np.sin(tilt - half)
        d_right = py * np.sin(tilt + half) - px * np.cos(tilt + half)
        a, b = np.float64(p[k.WIDTH]) * w, np.float64(p[k.DEPTH]) * h
        q = np.hypot(px / a, py / b)
        grad = np.maximum(np.hypot(px / a**2, py / b**2), 1e-12)
        d_arc = (1 - q) * q / grad
        img = img * np.clip(np.minimum(np.minimum(d_left, d_right), d_arc) + 0.5, 0, 1)
    return img.astype(_F), p
