"""Appearance randomisation of images from label maps: the randomised generator and the appearance stage.

One kernel serves both. Per sample, from a 64-bit ``key`` and the ranges of an
:class:`~synthgen.schemas.AppearanceConfig`:

1. **Parameters** (:func:`sample_appearance`): every quantity of ``RANGED`` drawn uniformly within its
   range (gamma log-uniformly), a 4 x 4 grid of log bias values, and each class's mean and standard
   deviation. Uniforms come from a SplitMix64 counter hash of (key, slot), so the parameters are a pure
   function of the key. For echo, the sector is then widened where needed (half angle in whole degrees,
   then the far boundary by factors of 1.02) until at most the drawn ``sector_spill`` share of the
   labelled pixels lies outside it (CAMUS labels reach a little past the fan: 1.9% of each image's
   labelled pixels on average).
2. **Image** (:func:`render_appearance`), in float32, in this order: base (each class's mean plus its
   standard deviation times pixel noise, or the input image); echo speckle (multiplicative,
   Rayleigh-like amplitudes interpolated across nodes that spread apart with depth); Gaussian blur
   (per axis); resolution loss (anti-aliasing blur, linear down- and up-sampling, per axis, for
   factors of 1.25 and more); a smooth multiplicative bias field; MR Rician or CT Gaussian noise; clip
   to [0, 1], gamma (tabulated over sqrt(v), interpolated), contrast and brightness about 0.5, clip;
   for echo, the anti-aliased sector (each pixel's coverage of the fan).

Pixel noise is a standard-normal approximation from one counter hash per value (the Irwin-Hall sum
of four 16-bit uniforms, rescaled: mean 0, variance 1, tails bounded at 3.46): the noise of a sample
does not depend on the batch, the thread or the machine. Images are in [0, 1] in and out; borders
are clamped (scipy.ndimage mode ``"nearest"``). ``synthgen.kernels.reference.appearance`` is the
independent NumPy route that the tests compare against.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from synthgen.errors import KernelInputError
from synthgen.kernels import _validate
from synthgen.kernels._threading import parallel_section
from synthgen.kernels.fields import _GOLDEN, _mix64

MODALITY_CODES = {"echo": 0, "mr": 1, "ct": 2}

# the parameter vector: the ranged quantities (schemas.appearance.RANGED order), bias grid, classes
GAMMA, CONTRAST, BRIGHTNESS, BLUR_Y, BLUR_X, RES_Y, RES_X, BIAS, NOISE, SPECKLE = range(10)
APEX_Y, APEX_X, HALF_ANGLE, TILT, DEPTH, WIDTH, SPILL = range(10, 17)
N_RANGED = 17
BIAS_GRID = 4
BIAS0 = N_RANGED
CLASS0 = BIAS0 + BIAS_GRID * BIAS_GRID

# counter streams of the hash: parameters, then one per kind of pixel noise
_PARAMS, _TEXTURE, _SPECKLE_A, _SPECKLE_B, _NOISE_A, _NOISE_B = range(6)  # _SPECKLE_B: unused, reserved
_STREAM = np.uint64(1 << 40)
_U16 = np.float32(1.0 / 65536.0)
_SQRT3 = np.float32(math.sqrt(3.0))
_SPECKLE_NORM = np.float32(1.0 / 0.5214053711942326)  # 1 / E|(a, b)|, a and b centred triangular on [-1, 1]
_MAX_RADIUS = 8  # blur taps either side
_FAR_STEPS = 40  # the far boundary widens by at most 1.02 ** 40
_FAR_LOG2 = 2.0 * math.log(1.02)
_MIN_FACTOR = 1.25  # resolution losses below this are none (linear resampling by less only makes bands)
_GAMMA_STEPS = 256  # gamma table: linear interpolation error below 1.1e-4 for gamma in [0.5, 4]
_LOG_STEPS = np.log(np.maximum(np.arange(_GAMMA_STEPS + 1), 1) / _GAMMA_STEPS)


def n_params(num_classes: int) -> int:
    """Length of one sample's parameter vector for a schema of ``num_classes`` classes."""
    return CLASS0 + 2 * num_classes


@numba.njit(cache=True, nogil=True, inline="always")
def _hash(key, stream, i):
    return _mix64(key + (np.uint64(stream) * _STREAM + np.uint64(i) + np.uint64(1)) * _GOLDEN)


@numba.njit(cache=True, nogil=True, inline="always")
def _uniform(key, stream, i):
    """A float64 uniform in [0, 1) with 53 bits."""
    return np.float64(_hash(key, stream, i) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(cache=True, nogil=True, inline="always")
def _normal(key, stream, i):
    """Standard-normal approximation: the Irwin-Hall sum of the hash's four 16-bit fields, rescaled."""
    h = _hash(key, stream, i)
    m = np.uint64(0xFFFF)
    s = np.float32(h & m)
    s += np.float32((h >> np.uint64(16)) & m)
    s += np.float32((h >> np.uint64(32)) & m)
    s += np.float32(h >> np.uint64(48))
    return (s * _U16 - np.float32(2.0)) * _SQRT3


@numba.njit(cache=True, nogil=True)
def sample_appearance(key, ranges, num_classes, labels, sector, out):
    """Write one sample's parameters into ``out`` (float32, ``n_params`` long); ``labels`` are class
    indices (H, W), used only to widen the sector over them."""
    for j in range(N_RANGED):
        u = _uniform(key, _PARAMS, j)
        lo = ranges[j, 0]
        hi = ranges[j, 1]
        if j == GAMMA:
            out[j] = np.exp(np.log(lo) + (np.log(hi) - np.log(lo)) * u)
        else:
            out[j] = lo + (hi - lo) * u
    for j in range(BIAS_GRID * BIAS_GRID):
        out[BIAS0 + j] = np.float32(_normal(key, _PARAMS, 64 + j)) * out[BIAS]
    for c in range(num_classes):
        u = _uniform(key, _PARAMS, 128 + c)
        out[CLASS0 + c] = ranges[N_RANGED, 0] + (ranges[N_RANGED, 1] - ranges[N_RANGED, 0]) * u
        u = _uniform(key, _PARAMS, 128 + num_classes + c)
        out[CLASS0 + num_classes + c] = (
            ranges[N_RANGED + 1, 0] + (ranges[N_RANGED + 1, 1] - ranges[N_RANGED + 1, 0]) * u
        )
    if sector:
        _fit_sector(labels, out)


@numba.njit(cache=True, nogil=True)
def _fit_sector(labels, params):
    """Widen the sector of ``params`` until at most ``params[SPILL]`` of the labelled pixels lie outside
    it: first the half angle, in whole degrees, until at most half that share lies past a side edge; then
    the far boundary, by factors of 1.02, for the rest. Counted on every second row and column (pixel
    centres, in the geometry :func:`_apply_sector` draws); a pixel past both counts twice."""
    h, w = labels.shape
    ay = params[APEX_Y] * h
    ax = params[APEX_X] * w
    half0 = np.float64(params[HALF_ANGLE])
    tilt = params[TILT] * (math.pi / 180.0)
    ct, st = math.cos(tilt), math.sin(tilt)
    steps = max(int(89.0 - half0), 0)
    limits = np.empty(steps + 1)
    for s in range(steps + 1):
        limits[s] = math.tan((half0 + s) * (math.pi / 180.0))
    side = np.zeros(steps + 2, np.int64)  # pixels first inside after s steps; the last: never
    far = np.zeros(_FAR_STEPS + 2, np.int64)
    ia = 1.0 / (params[WIDTH] * w)
    ib = 1.0 / (params[DEPTH] * h)
    total = 0
    for y in range(0, h, 2):
        py = y + 0.5 - ay
        for x in range(0, w, 2):
            if labels[y, x] == 0:
                continue
            total += 1
            px = x + 0.5 - ax
            u = abs(px * ct - py * st)  # across the sector's axis
            v = px * st + py * ct  # along it
            s = 0
            if v <= 0.0:
                s = steps + 1
            else:
                while s <= steps and u > v * limits[s]:
                    s += 1
            side[s] += 1
            q2 = (px * ia) ** 2 + (py * ib) ** 2
            j = 0 if q2 <= 1.0 else min(math.ceil(math.log(q2) / _FAR_LOG2), _FAR_STEPS + 1)
            far[j] += 1
    allowed = params[SPILL] * total
    outside = total - side[0]
    s = 0
    while s < steps and outside > 0.5 * allowed:
        s += 1
        outside -= side[s]
    params[HALF_ANGLE] = np.float32(half0 + s)
    budget = allowed - outside
    beyond = total - far[0]
    j = 0
    while j < _FAR_STEPS and beyond > budget:
        j += 1
        beyond -= far[j]
    scale = np.float32(1.02**j)
    params[DEPTH] *= scale
    params[WIDTH] *= scale


@numba.njit(cache=True, nogil=True)
def _prefilter_sigma(sigma, factor):
    """The blur before a resolution loss by ``factor``: ``sigma`` and the anti-aliasing sigma
    0.5 * sqrt(f^2 - 1) (none below ``_MIN_FACTOR``) in quadrature."""
    if factor < _MIN_FACTOR:
        return sigma
    return np.float32(math.sqrt(sigma * sigma + 0.25 * (factor * factor - 1.0)))


@numba.njit(cache=True, nogil=True)
def _gamma_table(gamma):
    """``v ** gamma`` tabulated over ``s = sqrt(v)`` (``s ** (2 gamma)``, smooth for gamma >= 0.5) at
    ``_GAMMA_STEPS + 1`` points, for linear interpolation."""
    lut = np.empty(_GAMMA_STEPS + 1, np.float32)
    lut[0] = 0.0
    for k in range(1, _GAMMA_STEPS + 1):
        lut[k] = np.exp(2.0 * gamma * _LOG_STEPS[k])
    return lut


@numba.njit(cache=True, nogil=True)
def _gaussian_taps(sigma):
    if sigma < 0.25:
        taps = np.ones(1, np.float32)
        return taps
    radius = min(math.ceil(3.0 * sigma), _MAX_RADIUS)
    taps = np.empty(2 * radius + 1, np.float32)
    total = 0.0
    for k in range(-radius, radius + 1):
        v = math.exp(-0.5 * (k / sigma) ** 2)
        taps[k + radius] = v
        total += v
    for k in range(2 * radius + 1):
        taps[k] = np.float32(taps[k] / total)
    return taps


@numba.njit(cache=True, nogil=True)
def _blur_rows(src, taps, dst):
    """Correlate every row with ``taps`` (clamped borders)."""
    h, w = src.shape
    r = (taps.shape[0] - 1) // 2
    pad = np.empty(w + 2 * r, np.float32)
    acc = np.empty(w, np.float32)  # a buffer of its own, so that the loops run in SIMD lanes
    for y in range(h):
        for x in range(w + 2 * r):
            pad[x] = src[y, min(max(x - r, 0), w - 1)]
        for x in range(w):
            acc[x] = np.float32(0.0)
        for k in range(2 * r + 1):
            tk = taps[k]
            for x in range(w):
                acc[x] += tk * pad[x + k]
        dst[y] = acc


@numba.njit(cache=True, nogil=True)
def _blur_cols(src, taps, dst):
    """Correlate every column with ``taps`` (clamped borders)."""
    h, w = src.shape
    r = (taps.shape[0] - 1) // 2
    for y in range(h):
        row = dst[y]
        for x in range(w):
            row[x] = np.float32(0.0)
        for k in range(2 * r + 1):
            tk = taps[k]
            s = src[min(max(y + k - r, 0), h - 1)]
            for x in range(w):
                row[x] += tk * s[x]


@numba.njit(cache=True, nogil=True)
def _lerp_plan(n_out, n_in, step):
    """Indices and weights sampling a line of ``n_in`` values at positions ``i * step``, i < ``n_out``
    (clamped to the last value)."""
    i0 = np.empty(n_out, np.int64)
    i1 = np.empty(n_out, np.int64)
    wt = np.empty(n_out, np.float32)
    for i in range(n_out):
        p = min(i * step, n_in - 1.0)
        k = min(int(p), n_in - 2) if n_in > 1 else 0
        i0[i] = k
        i1[i] = min(k + 1, n_in - 1)
        wt[i] = np.float32(p - k) if n_in > 1 else np.float32(0.0)
    return i0, i1, wt


@numba.njit(cache=True, nogil=True)
def _resample_rows(src, i0, i1, wt, dst):
    h = src.shape[0]
    n = i0.shape[0]
    for y in range(h):
        s = src[y]
        d = dst[y]
        for x in range(n):
            a = s[i0[x]]
            d[x] = a + wt[x] * (s[i1[x]] - a)


@numba.njit(cache=True, nogil=True)
def _resample_cols(src, i0, i1, wt, dst):
    n = i0.shape[0]
    for y in range(n):
        a = src[i0[y]]
        b = src[i1[y]]
        t = wt[y]
        d = dst[y]
        for x in range(d.shape[0]):
            d[x] = a[x] + t * (b[x] - a[x])


@numba.njit(cache=True, nogil=True)
def _lose_resolution(img, fy, fx, tmp):
    """Linear down-sampling by ``fy``, ``fx`` (>= 1) and back, in place (``tmp`` as large as ``img``)."""
    h, w = img.shape
    if fx >= _MIN_FACTOR:
        m = math.ceil((w - 1) / fx) + 1
        i0, i1, wt = _lerp_plan(m, w, fx)
        coarse = tmp[:, :m]
        _resample_rows(img, i0, i1, wt, coarse)
        i0, i1, wt = _lerp_plan(w, m, 1.0 / fx)
        _resample_rows(coarse, i0, i1, wt, img)
    if fy >= _MIN_FACTOR:
        m = math.ceil((h - 1) / fy) + 1
        i0, i1, wt = _lerp_plan(m, h, fy)
        coarse = tmp[:m]
        _resample_cols(img, i0, i1, wt, coarse)
        i0, i1, wt = _lerp_plan(h, m, 1.0 / fy)
        _resample_cols(coarse, i0, i1, wt, img)


@numba.njit(cache=True, nogil=True)
def render_appearance(indices, base, params, key, modality, texture, sector, num_classes, out):
    """Render one image (H, W) float32 in [0, 1] into ``out`` from class ``indices`` (H, W) and, unless
    ``texture``, the ``base`` image in [0, 1]; ``params`` from :func:`sample_appearance`."""
    h, w = indices.shape
    img = out
    flat = img.reshape(-1)
    if texture:
        means = params[CLASS0 : CLASS0 + num_classes]
        stds = params[CLASS0 + num_classes : CLASS0 + 2 * num_classes]
        classes = indices.reshape(-1)
        for i in range(flat.shape[0]):  # two loops: the first runs in SIMD lanes
            flat[i] = _normal(key, _TEXTURE, i)
        for i in range(flat.shape[0]):
            c = classes[i]
            flat[i] = means[c] + stds[c] * flat[i]
    else:
        img[:] = base
    tmp = np.empty((h, w), np.float32)
    if modality == 0 and params[NOISE] > 0:
        _speckle(img, params, key, tmp)
    taps_y = _gaussian_taps(_prefilter_sigma(params[BLUR_Y], params[RES_Y]))
    taps_x = _gaussian_taps(_prefilter_sigma(params[BLUR_X], params[RES_X]))
    if taps_x.shape[0] > 1:
        _blur_rows(img, taps_x, tmp)
        img[:] = tmp
    if taps_y.shape[0] > 1:
        _blur_cols(img, taps_y, tmp)
        img[:] = tmp
    _lose_resolution(img, params[RES_Y], params[RES_X], tmp)
    _bias(img, params)
    sigma = params[NOISE]
    if modality == 1:
        for i in range(flat.shape[0]):
            a = flat[i] + sigma * _normal(key, _NOISE_A, i)
            b = sigma * _normal(key, _NOISE_B, i)
            flat[i] = np.sqrt(a * a + b * b)
    elif modality == 2:
        for i in range(flat.shape[0]):
            flat[i] += sigma * _normal(key, _NOISE_A, i)
    lut = _gamma_table(params[GAMMA])
    contrast = params[CONTRAST]
    offset = np.float32(0.5) + params[BRIGHTNESS]
    scale = np.float32(_GAMMA_STEPS)
    for i in range(flat.shape[0]):
        v = flat[i]
        v = v if v >= np.float32(0.0) else np.float32(0.0)  # NaN -> 0: the table index stays in range
        flat[i] = np.sqrt(min(v, np.float32(1.0))) * scale
    for i in range(flat.shape[0]):
        s = flat[i]
        k = min(np.int32(s), np.int32(_GAMMA_STEPS - 1))
        t = s - np.float32(k)
        v = lut[k] + t * (lut[k + 1] - lut[k])
        v = (v - np.float32(0.5)) * contrast + offset
        flat[i] = min(max(v, np.float32(0.0)), np.float32(1.0))
    if sector:
        _apply_sector(img, params)


@numba.njit(cache=True, nogil=True, inline="always")
def _rayleigh(key, stream, i):
    """A speckle amplitude of mean 1 from one hash: the length of a vector whose two components are
    each the sum of two 16-bit uniforms, centred (a triangular-distributed pair)."""
    h = _hash(key, stream, i)
    m = np.uint64(0xFFFF)
    a = (np.float32(h & m) + np.float32((h >> np.uint64(16)) & m)) * _U16 - np.float32(1.0)
    b = (np.float32((h >> np.uint64(32)) & m) + np.float32(h >> np.uint64(48))) * _U16 - np.float32(1.0)
    return np.sqrt(a * a + b * b) * _SPECKLE_NORM


@numba.njit(cache=True, nogil=True)
def _speckle(img, params, key, tmp):
    """Multiply by (1 + level * (s - 1)): ``s`` the linear interpolation across each row of speckle
    amplitudes (mean 1) on nodes spaced 1 + growth * depth pixels apart, depth measured below the
    sector's apex as a fraction of its depth: speckle cells widen with depth, as scan conversion
    stretches them. Row ``y``'s node ``k`` is hashed from ``y * (W + 2) + k``."""
    h, w = img.shape
    level = params[NOISE]
    ay = params[APEX_Y]
    depth = params[DEPTH]
    growth = params[SPECKLE] * w
    one = np.float32(1.0)
    nodes = np.empty(w + 2, np.float32)
    s = np.empty(w, np.float32)  # the row's amplitudes: a buffer of its own (the loops run in SIMD lanes)
    for y in range(h):
        d = max(((y + 0.5) / h - ay) / depth, 0.0)
        inv = np.float32(1.0 / (1.0 + growth * d))
        base = y * (w + 2)
        for k in range(w + 2):
            nodes[k] = _rayleigh(key, _SPECKLE_A, base + k)
        for x in range(w):
            pos = np.float32(x) * inv
            k = np.int32(pos)
            f = pos - np.float32(k)
            r0 = nodes[k]
            s[x] = r0 + f * (nodes[k + 1] - r0)
        row = img[y]
        for x in range(w):
            row[x] *= one + level * (s[x] - one)


@numba.njit(cache=True, nogil=True)
def _bias(img, params):
    """Multiply by the bilinear interpolation of exp(grid) over the image (grid nodes on the corners)."""
    h, w = img.shape
    g = BIAS_GRID
    node = np.empty((g, g), np.float32)
    for j in range(g * g):
        node[j // g, j % g] = np.exp(params[BIAS0 + j])
    profile = np.empty((g, w), np.float32)  # each node row interpolated across the width
    for x in range(w):
        p = x * (g - 1) / max(w - 1, 1)
        k = min(int(p), g - 2)
        t = np.float32(p - k)
        for j in range(g):
            profile[j, x] = node[j, k] + t * (node[j, k + 1] - node[j, k])
    for y in range(h):
        p = y * (g - 1) / max(h - 1, 1)
        k = min(int(p), g - 2)
        t = np.float32(p - k)
        a = profile[k]
        b = profile[k + 1]
        row = img[y]
        for x in range(w):
            row[x] *= a[x] + t * (b[x] - a[x])


@numba.njit(cache=True, nogil=True)
def _apply_sector(img, params):
    """Multiply by each pixel's coverage of the fan: clip(0.5 + signed distance to its nearest edge),
    the distance to the elliptic far boundary to first order ((1 - q) / |grad q|, q = 1 on it)."""
    h, w = img.shape
    ay = np.float32(params[APEX_Y] * h)
    ax = np.float32(params[APEX_X] * w)
    half = params[HALF_ANGLE] * np.float32(math.pi / 180.0)
    tilt = params[TILT] * np.float32(math.pi / 180.0)
    ia = np.float32(1.0) / (params[WIDTH] * np.float32(w))  # the far boundary's inverse semi-axes
    ib = np.float32(1.0) / (params[DEPTH] * np.float32(h))
    cl, sl = np.float32(math.cos(tilt - half)), np.float32(math.sin(tilt - half))
    cr, sr = np.float32(math.cos(tilt + half)), np.float32(math.sin(tilt + half))
    for y in range(h):
        py = np.float32(y) + np.float32(0.5) - ay
        row = img[y]
        for x in range(w):
            px = np.float32(x) + np.float32(0.5) - ax
            d = min(px * cl - py * sl, py * sr - px * cr)
            qx = px * ia
            qy = py * ib
            q = np.sqrt(qx * qx + qy * qy)
            g = np.sqrt((qx * ia) ** 2 + (qy * ib) ** 2)  # |grad q| * q
            d = min(d, (np.float32(1.0) - q) * q / max(g, np.float32(1e-12)))
            row[x] *= min(max(d + np.float32(0.5), np.float32(0.0)), np.float32(1.0))


@numba.njit(cache=True, nogil=True)
def _appearance_one(indices, base, key, ranges, modality, texture, sector, num_classes, params, out):
    sample_appearance(key, ranges, num_classes, indices, sector, params)
    render_appearance(indices, base, params, key, modality, texture, sector, num_classes, out)


@numba.njit(cache=True, nogil=True, parallel=True)
def _appearance_batch(indices, base, keys, ranges, modality, texture, sector, num_classes, params, out):
    for n in numba.prange(indices.shape[0]):
        _appearance_one(
            indices[n], base[n], keys[n], ranges, modality, texture, sector, num_classes, params[n], out[n]
        )


def appearance(
    indices: np.ndarray,
    keys: np.ndarray,
    ranges: np.ndarray,
    *,
    num_classes: int,
    modality: str,
    texture: bool,
    sector: bool,
    base: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) float32 in [0, 1] and their parameters (N, ``n_params(num_classes)``) float32.

    ``indices``: class indices (N, H, W) uint8 (label values mapped through the schema's lookup table),
    or one map (H, W); ``keys``: one uint64 per sample; ``ranges``: (N_RANGED + 2, 2) float64, the
    config's ranges then class_mean and class_std; ``base``: the images to restyle, (N, H, W) in
    [0, 1], unless ``texture``. ``sector`` applies to echo only.
    """
    batch, single = _validate.label_batch(indices)
    if batch.dtype != np.uint8:
        raise KernelInputError(f"Expected uint8 class indices. Got {batch.dtype} instead.")
    if batch.size and int(batch.max()) >= num_classes:
        raise KernelInputError(f"Expected class indices below {num_classes}. Got {int(batch.max())} instead.")
    keys = np.ascontiguousarray(np.atleast_1d(np.asarray(keys, dtype=np.uint64)))
    if keys.shape != (len(batch),):
        raise KernelInputError(f"Expected one key per sample ({len(batch)}). Got {keys.shape} instead.")
    ranges = np.ascontiguousarray(ranges, dtype=np.float64)
    if ranges.shape != (N_RANGED + 2, 2):
        raise KernelInputError(f"Expected ranges of shape {(N_RANGED + 2, 2)}. Got {ranges.shape}.")
    if modality not in MODALITY_CODES:
        raise KernelInputError(f"Expected a modality in {tuple(MODALITY_CODES)}. Got {modality!r}.")
    if texture:
        base_batch = np.zeros((len(batch), 1, 1), np.float32)  # unused
    else:
        if base is None:
            raise KernelInputError("Expected base images (texture is off). Got None.")
        base_batch, _ = _validate.image_batch(base)
        if base_batch.shape != batch.shape:
            raise KernelInputError(
                f"Expected base images of shape {batch.shape}. Got {base_batch.shape} instead."
            )
        base_batch = np.ascontiguousarray(base_batch, dtype=np.float32)
    out = np.empty(batch.shape, np.float32)
    params = np.empty((len(batch), n_params(num_classes)), np.float32)
    flags = (MODALITY_CODES[modality], bool(texture), bool(sector) and modality == "echo", int(num_classes))
    if len(batch) == 1:
        _appearance_one(batch[0], base_batch[0], keys[0], ranges, *flags, params[0], out[0])
    elif len(batch):
        with parallel_section():
            _appearance_batch(batch, base_batch, keys, ranges, *flags, params, out)
    return (out[0], params[0]) if single else (out, params)
