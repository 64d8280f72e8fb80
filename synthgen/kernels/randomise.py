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
   to [0, 1], gamma (by log2 and exp2 polynomials, within 4e-6 of the exact power), contrast and
   brightness about 0.5, clip; for echo, the anti-aliased sector (each pixel's coverage of the fan).

Pixel noise comes from a 32-bit counter hash per value, keyed by the sample's 64-bit stream hash: a
standard-normal approximation is the Irwin-Hall sum of its four bytes, standardised (mean 0,
variance 1, tails bounded at 3.45); a speckle amplitude is the length of the vector of its two byte
pairs, centred. The noise of a sample does not depend on the batch, the thread or the machine.
Images are in [0, 1] in and out; borders are clamped (scipy.ndimage mode ``"nearest"``).
``synthgen.kernels.reference.appearance`` is the independent NumPy route that the tests compare
against.

For speed (one core draws 128 x 128 images in tens of microseconds): every per-pixel loop runs in
32-bit SIMD lanes (no 64-bit multiplies, no transcendental calls, no lookups by pixel value: each
pixel hashes its own two speckle nodes), each axis's blur and resolution loss is two passes over
whole rows (the blur and the down-sampling as one weighted sum of rows, then the up-sampling),
the image is transposed for the x axis in 8 x 8 tiles of SIMD registers, and the steps after the
blur see only the columns of each row that the fan can cover.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

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
_MAX_RADIUS = 8  # blur taps either side
_FAR_STEPS = 40  # the far boundary widens by at most 1.02 ** 40
_FAR_LOG2 = 2.0 * math.log(1.02)
_MIN_FACTOR = 1.25  # resolution losses below this are none (linear resampling by less only makes bands)
_PAD = 16  # values of padding after each row of the working images
_SELECT_CLASSES = 8  # up to this many classes, the texture picks each class's values in SIMD lanes
_BLOCK = 16  # rows per block of the pointwise steps
_LANES = 8  # float32 values in a SIMD vector (AVX2)

# pixel noise: a 32-bit hash per value; its four bytes summed (Irwin-Hall), or two pairs of them
_M32A = np.uint32(0x7FEB352D)
_M32B = np.uint32(0x846CA68B)
_BYTES = np.uint32(0x00FF00FF)
_IH_MEAN = np.float32(510.0)  # four bytes: mean 4 * 127.5, variance 4 * (256^2 - 1) / 12
_IH_SCALE = np.float32(1.0 / math.sqrt((256.0**2 - 1.0) / 3.0))
_PAIR_MEAN = np.float32(255.0)


def _pair_norm() -> float:
    """1 / E|(a, b)|, a and b each the sum of two uniform bytes less 255 (a speckle node of mean 1)."""
    total = np.arange(511)
    ways = np.minimum(total, 510 - total) + 1  # byte pairs with each sum
    length = np.hypot(total[:, None] - 255.0, total[None, :] - 255.0)
    return 1.0 / float(ways @ length @ ways / 65536.0**2)


_SPECKLE_NORM = np.float32(_pair_norm())

# v ** gamma: ln of the mantissa by its atanh series, exp by Taylor's
_ATANH = tuple(np.float32(2.0 / k) for k in (1, 3, 5, 7))  # ln m = 2 atanh z, z = (m - 1) / (m + 1)
_EXP = tuple(np.float32(1.0 / math.factorial(k)) for k in range(1, 6))
_LOG2E = np.float32(1.0 / math.log(2.0))
_LN2 = np.float32(math.log(2.0))


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
def _stream_words(key, stream):
    """The two 32-bit words that key pixel stream ``stream`` of ``key``."""
    h = _hash(key, stream, 0)
    return np.uint32(h & np.uint64(0xFFFFFFFF)), np.uint32(h >> np.uint64(32))


@numba.njit(cache=True, nogil=True, inline="always")
def _bits32(lo, hi, i):
    """32 bits for value ``i`` of the pixel stream keyed by (lo, hi): two multiply-xorshift rounds
    (the 'lowbias32' constants), ``hi`` mixed in between; 32-bit lanes, so they run 8 to a vector."""
    x = np.uint32(np.uint32(i) + lo)
    x = np.uint32(x ^ (x >> np.uint32(16)))
    x = np.uint32(x * _M32A)
    x = np.uint32(x ^ (x >> np.uint32(15)) ^ hi)
    x = np.uint32(x * _M32B)
    return np.uint32(x ^ (x >> np.uint32(16)))


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
    centres, in the geometry :func:`_sector_row` draws); a pixel past both counts twice."""
    h, w = labels.shape
    ay = params[APEX_Y] * h
    ax = params[APEX_X] * w
    half0 = np.float64(params[HALF_ANGLE])
    tilt = params[TILT] * (math.pi / 180.0)
    ct, st = math.cos(tilt), math.sin(tilt)
    steps = max(int(89.0 - half0), 0)
    limits = np.empty(steps + 1)  # tan(half angle after s steps), as far as a pixel needs (see below)
    limits[0] = math.tan(half0 * (math.pi / 180.0))
    filled = 0
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
            elif u > v * limits[0]:
                while filled < steps and u > v * limits[filled]:
                    filled += 1
                    limits[filled] = math.tan((half0 + filled) * (math.pi / 180.0))
                s = 1
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _axis_plan(n, sigma, factor):
    """One axis's blur and resolution loss of a line of ``n`` values, in two steps. First ``m`` values,
    each a weighted sum of the line: ``value[c] = weight[c] . line[index[c]]``: the Gaussian blur of
    ``sigma`` (clamped borders), then, for factors of ``_MIN_FACTOR`` and more, the linear down-sampling
    by ``factor`` (positions ``c * factor``, clamped to the last value). Then output ``i`` is
    ``value[lower[i]] + frac[i] * (value[upper[i]] - value[lower[i]])``: the linear up-sampling back
    (for a blur alone, ``m = n`` and output ``i`` is value ``i``)."""
    taps = _gaussian_taps(sigma)
    t = taps.shape[0]
    r = (t - 1) // 2
    lower = np.empty(n, np.int64)
    upper = np.empty(n, np.int64)
    frac = np.zeros(n, np.float32)
    if factor < _MIN_FACTOR:
        index = np.empty((n, t), np.int64)
        weight = np.empty((n, t), np.float32)
        for i in range(n):
            for k in range(t):
                index[i, k] = min(max(i + k - r, 0), n - 1)
                weight[i, k] = taps[k]
            lower[i] = i
            upper[i] = i
        return index, weight, lower, upper, frac
    # coarse sample c: fine samples k, k + 1 of the blurred line, so t + 1 weights of the line from k - r
    m = math.ceil((n - 1) / factor) + 1
    index = np.empty((m, t + 1), np.int64)
    weight = np.zeros((m, t + 1), np.float32)
    for c in range(m):
        q = min(c * factor, n - 1.0)
        k = min(int(q), n - 2) if n > 1 else 0
        b = np.float32(q - k) if n > 1 else np.float32(0.0)
        for j in range(t + 1):
            index[c, j] = min(max(k - r + j, 0), n - 1)
        for j in range(t):
            weight[c, j] += (np.float32(1.0) - b) * taps[j]
            weight[c, j + 1] += b * taps[j]
    for i in range(n):
        p = min(i * (1.0 / factor), m - 1.0)
        c0 = min(int(p), m - 2) if m > 1 else 0
        lower[i] = c0
        upper[i] = min(c0 + 1, m - 1)
        frac[i] = np.float32(p - c0) if m > 1 else np.float32(0.0)
    return index, weight, lower, upper, frac


_TILE = 8  # the transpose's tiles: 8 x 8 float32 values, by the three rounds of lane shuffles below
_UNPACK_LO = (0, 8, 1, 9, 4, 12, 5, 13)
_UNPACK_HI = (2, 10, 3, 11, 6, 14, 7, 15)
_PAIRS_LO = (0, 1, 8, 9, 4, 5, 12, 13)
_PAIRS_HI = (2, 3, 10, 11, 6, 7, 14, 15)
_HALVES_LO = (0, 1, 2, 3, 8, 9, 10, 11)
_HALVES_HI = (4, 5, 6, 7, 12, 13, 14, 15)


@intrinsic
def _transpose_tile(typingctx, src, y0, x0, dst):
    """``dst[x0 + j, y0 + i] = src[y0 + i, x0 + j]`` for i, j < 8, on 2-d C-contiguous float32 arrays:
    eight vector loads, 24 shuffles, eight vector stores (generic LLVM vectors: any SIMD target). No
    bounds checks: the caller keeps the tile inside both arrays."""
    arrays = (src, dst)
    if not all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" for a in arrays):
        return None
    if not all(a.dtype == types.float32 for a in arrays):
        return None

    def codegen(context, builder, signature, args):
        src_t, y_t, x_t, dst_t = signature.args
        y0v = context.cast(builder, args[1], y_t, types.intp)
        x0v = context.cast(builder, args[2], x_t, types.intp)
        vector = ir.VectorType(ir.FloatType(), _TILE)

        def pointers(ty, value, first, second):
            a = context.make_array(ty)(context, builder, value)
            shape, strides = cgutils.unpack_tuple(builder, a.shape), cgutils.unpack_tuple(builder, a.strides)
            for i in range(_TILE):
                at = [builder.add(first, ir.Constant(first.type, i)), second]
                item = cgutils.get_item_pointer2(context, builder, a.data, shape, strides, "C", at)
                yield builder.bitcast(item, vector.as_pointer())

        def shuffle(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), _TILE), mask))

        rows = [builder.load(p, align=4) for p in pointers(src_t, args[0], y0v, x0v)]
        pairs = []
        for i in range(0, _TILE, 2):
            pairs += [shuffle(rows[i], rows[i + 1], _UNPACK_LO), shuffle(rows[i], rows[i + 1], _UNPACK_HI)]
        quads = []
        for q in (0, 4):
            a0, a1, b0, b1 = pairs[q : q + 4]
            quads += [shuffle(a0, b0, _PAIRS_LO), shuffle(a0, b0, _PAIRS_HI)]
            quads += [shuffle(a1, b1, _PAIRS_LO), shuffle(a1, b1, _PAIRS_HI)]
        cols = [shuffle(quads[j], quads[j + 4], _HALVES_LO) for j in range(4)]
        cols += [shuffle(quads[j], quads[j + 4], _HALVES_HI) for j in range(4)]
        for col, p in zip(cols, pointers(dst_t, args[3], x0v, y0v), strict=True):
            builder.store(col, p, align=4)
        return context.get_dummy_value()

    return types.void(src, y0, x0, dst), codegen


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _transpose(src, dst, h, w):
    """``dst[x, y] = src[y, x]`` for ``y < h``, ``x < w``: 8 x 8 tiles in SIMD registers, the edges
    one value at a time."""
    h8 = h // _TILE * _TILE
    w8 = w // _TILE * _TILE
    for y0 in range(0, h8, _TILE):
        for x0 in range(0, w8, _TILE):
            _transpose_tile(src, y0, x0, dst)
    for y in range(h):
        for x in range(w8 if y < h8 else 0, w):
            dst[x, y] = src[y, x]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _copy(src, dst):
    """``dst[:] = src`` as a plain loop (Numba's slice assignment is several times slower)."""
    for x in range(dst.shape[0]):
        dst[x] = src[x]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fill(dst, value):
    for x in range(dst.shape[0]):
        dst[x] = value


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _weighted_rows(src, index, weight, x0, dst):
    """``dst[j] = sum_t weight[t] * src[index[t], x0 + j]``, four rows a pass. Unsigned indices (no
    wraparound checks), so that the loops run in SIMD lanes."""
    n = weight.shape[0]
    c = np.uint64(x0)
    t = 0
    while t + 4 <= n:
        ra, rb = np.uint64(index[t]), np.uint64(index[t + 1])
        rc, rd = np.uint64(index[t + 2]), np.uint64(index[t + 3])
        wa, wb, wc, wd = weight[t], weight[t + 1], weight[t + 2], weight[t + 3]
        first = t == 0
        for j in range(dst.shape[0]):
            x = c + np.uint64(j)
            v = (wa * src[ra, x] + wb * src[rb, x]) + (wc * src[rc, x] + wd * src[rd, x])
            dst[j] = v if first else dst[j] + v
        t += 4
    while t < n:
        ra = np.uint64(index[t])
        wa = weight[t]
        first = t == 0
        for j in range(dst.shape[0]):
            v = wa * src[ra, c + np.uint64(j)]
            dst[j] = v if first else dst[j] + v
        t += 1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _lerp_rows(a, b, t, dst):
    """``dst = a + t (b - a)``."""
    for j in range(dst.shape[0]):
        dst[j] = a[j] + t * (b[j] - a[j])


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _normals(lo, hi, first, out):
    """``out[i]``: the standard-normal approximation of value ``first + i`` of the stream (lo, hi)."""
    base = np.uint32(first)
    for i in range(out.shape[0]):
        b = _bits32(lo, hi, np.uint32(np.uint32(i) + base))  # 32-bit lanes: no 64-bit counter to narrow
        s = np.uint32((b & _BYTES) + ((b >> np.uint32(8)) & _BYTES))
        s = np.uint32((s & np.uint32(0xFFFF)) + (s >> np.uint32(16)))
        out[i] = (np.float32(np.int32(s)) - _IH_MEAN) * _IH_SCALE


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _classes(cls, means, stds, noise, out):
    """``out[i] = means[c] + stds[c] * noise[i]``, ``c = cls[i]``: for up to four classes by a tree of
    selects on the class's two bits, for up to ``_SELECT_CLASSES`` one select pass per class (both in
    SIMD lanes), else a lookup per pixel."""
    k = means.shape[0]
    if k <= 4:
        m0, s0 = means[0], stds[0]  # classes past the last are never drawn: any values will do
        m1, s1 = (means[1], stds[1]) if k > 1 else (m0, s0)
        m2, s2 = (means[2], stds[2]) if k > 2 else (m0, s0)
        m3, s3 = (means[3], stds[3]) if k > 3 else (m0, s0)
        for i in range(out.shape[0]):
            c = np.int32(cls[i])
            odd = (c & np.int32(1)) != 0
            high = c >= np.int32(2)
            ma, sa = (m1, s1) if odd else (m0, s0)
            mb, sb = (m3, s3) if odd else (m2, s2)
            m, s = (mb, sb) if high else (ma, sa)
            out[i] = m + s * noise[i]
    elif k <= _SELECT_CLASSES:
        for i in range(out.shape[0]):
            out[i] = means[0] + stds[0] * noise[i]
        for c in range(1, k):
            mc, sc, cc = means[c], stds[c], np.uint8(c)
            for i in range(out.shape[0]):
                out[i] = mc + sc * noise[i] if cls[i] == cc else out[i]
    else:
        for i in range(out.shape[0]):
            c = cls[i]
            out[i] = means[c] + stds[c] * noise[i]


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _amplitude(lo, hi, i):
    """Speckle amplitude (mean 1) of node ``i`` of the stream (lo, hi): the length of the vector of its
    hash's two byte-pair sums, centred."""
    b = _bits32(lo, hi, i)
    s = np.uint32((b & _BYTES) + ((b >> np.uint32(8)) & _BYTES))
    u = np.float32(np.int32(s & np.uint32(0xFFFF))) - _PAIR_MEAN
    v = np.float32(np.int32(s >> np.uint32(16))) - _PAIR_MEAN
    return np.sqrt(u * u + v * v) * _SPECKLE_NORM


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _speckle(img, y0, params, lo, hi, node, frac):
    """Multiply rows ``y0`` on of ``img`` (a block of ``node.shape[0] // W`` at most) by
    1 + level * (s - 1): ``s`` the linear interpolation across each row of speckle amplitudes (mean 1)
    on nodes spaced 1 + growth * depth pixels apart, depth measured below the sector's apex as a
    fraction of its depth. Node ``k`` of row ``y`` is value ``y * (W + 2) + k`` of the stream (lo, hi).
    Each pixel draws the amplitudes of its two nodes itself: no lookups, every step in SIMD lanes."""
    h, w = img.shape
    rows = min(node.shape[0] // w, h - y0)
    level = params[NOISE]
    growth = params[SPECKLE] * w
    for r in range(rows):
        d = max(((y0 + r + 0.5) / h - params[APEX_Y]) / params[DEPTH], 0.0)
        inv = np.float32(1.0 / (1.0 + growth * d))
        first = np.uint32((y0 + r) * (w + 2))
        row_node = node[r * w : (r + 1) * w]
        row_frac = frac[r * w : (r + 1) * w]
        for x in range(w):
            pos = np.float32(np.int32(x)) * inv  # int32 lanes convert to float32 in SIMD, int64 do not
            k = np.int32(pos)
            row_node[x] = np.uint32(first + np.uint32(k))
            row_frac[x] = pos - np.float32(k)
    one = np.float32(1.0)
    flat = img.reshape(-1)[y0 * w : (y0 + rows) * w]
    for i in range(rows * w):
        a = _amplitude(lo, hi, node[i])
        b = _amplitude(lo, hi, np.uint32(node[i] + np.uint32(1)))
        flat[i] *= (one + level * (a - one)) + frac[i] * (level * (b - a))


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _power(v, bits, mant, mant_bits, expo, shift, gamma):
    """``v = clip(v, 0, 1) ** gamma`` in float32 (NaN as 0; values below 2**-60 as 2**-60): log2 from
    the exponent and the atanh series of the mantissa reduced to [0.75, 1.5), exp2 from the rounded
    power of two and a Taylor polynomial; relative error below 4e-6. ``bits`` and ``mant_bits`` are
    int32 views of ``v`` and ``mant``; ``mant``, ``expo`` and ``shift`` are scratch, as long as ``v``."""
    tiny = np.float32(2.0**-60)
    one = np.float32(1.0)
    n = v.shape[0]
    for x in range(n):
        c = v[x]
        c = c if c >= tiny else tiny
        v[x] = c if c <= one else one
    for x in range(n):
        b = bits[x]
        e = np.int32((b >> np.int32(23)) - np.int32(127))
        m = np.int32((b & np.int32(0x7FFFFF)) | np.int32(0x3F800000))
        big = m >= np.int32(0x3FC00000)  # mantissa >= 1.5: halve it
        mant_bits[x] = np.int32(m - np.int32(0x800000)) if big else m
        expo[x] = np.float32(np.int32(e + 1)) if big else np.float32(e)
    for x in range(n):  # short loops: more values in flight than one long chain allows
        m = mant[x]
        mant[x] = (m - one) / (m + one)
    c0, c1, c2, c3 = _ATANH
    for x in range(n):
        z = mant[x]
        z2 = z * z
        t = gamma * (expo[x] + z * (c0 + z2 * (c1 + z2 * (c2 + z2 * c3))) * _LOG2E)
        t = t if t >= np.float32(-120.0) else np.float32(-120.0)
        k = np.floor(t + np.float32(0.5))
        v[x] = (t - k) * _LN2
        shift[x] = np.int32(k) << np.int32(23)
    e1, e2, e3, e4, e5 = _EXP
    for x in range(n):
        r = v[x]
        v[x] = one + r * (e1 + r * (e2 + r * (e3 + r * (e4 + r * e5))))
    for x in range(n):
        bits[x] = np.int32(bits[x] + shift[x])


@numba.njit(cache=True, nogil=True)
def _sector_geometry(params, h, w):
    """The fan of ``params`` in pixels: apex (y, x), the side edges' normals (cos, sin of tilt -/+
    half angle), the far boundary's inverse semi-axes."""
    ay = params[APEX_Y] * np.float32(h)
    ax = params[APEX_X] * np.float32(w)
    half = params[HALF_ANGLE] * np.float32(math.pi / 180.0)
    tilt = params[TILT] * np.float32(math.pi / 180.0)
    ia = np.float32(1.0) / (params[WIDTH] * np.float32(w))
    ib = np.float32(1.0) / (params[DEPTH] * np.float32(h))
    cl, sl = np.float32(math.cos(tilt - half)), np.float32(math.sin(tilt - half))
    cr, sr = np.float32(math.cos(tilt + half)), np.float32(math.sin(tilt + half))
    return ay, ax, cl, sl, cr, sr, ia, ib


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _fan_interval(py, geometry, d, q):
    """The interval of ``px`` (pixel centre less the apex, across) where, on the row ``py`` below the
    apex, both side edges' signed distances are at least ``d`` and q (the far boundary's, 1 on it)
    at most ``q``; (lo > hi) where there is none."""
    _, _, cl, sl, cr, sr, ia, ib = geometry
    lo, hi = -1e9, 1e9
    if cl > 1e-6:  # left edge: px * cl - py * sl >= d
        lo = max(lo, (d + py * sl) / cl)
    elif cl < -1e-6:
        hi = min(hi, (d + py * sl) / cl)
    elif -py * sl < d:
        return 1.0, 0.0
    if cr > 1e-6:  # right edge: py * sr - px * cr >= d
        hi = min(hi, (py * sr - d) / cr)
    elif cr < -1e-6:
        lo = max(lo, (py * sr - d) / cr)
    elif py * sr < d:
        return 1.0, 0.0
    rest = q * q - (py * ib) * (py * ib)
    if q <= 0.0 or rest < 0.0:
        return 1.0, 0.0
    reach = math.sqrt(rest) / ia
    return max(lo, -reach), min(hi, reach)


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sector_span(y, geometry, w):
    """Columns of row ``y``: ``x0 <= xi0 <= xi1 <= x1``, the fan's coverage exactly 0 outside [x0, x1)
    and exactly 1 inside [xi0, xi1). Pixels left out lie at least 0.51 pixel outside an edge, pixels
    inside at least 0.51 inside every edge (the far boundary's distance (1 - q) / |grad q| bounded
    through min(1/a, 1/b) <= |grad q| <= max(1/a, 1/b)), with a column to spare each way."""
    ay, ax = geometry[0], geometry[1]
    ia, ib = geometry[6], geometry[7]
    margin = 0.51
    py = y + 0.5 - np.float64(ay)
    shift = np.float64(ax) - 0.5  # column of px
    lo, hi = _fan_interval(py, geometry, -margin, 1.0 + margin * max(ia, ib))
    if lo > hi:
        return 0, 0, 0, 0
    lane = _LANES  # boundaries on whole SIMD vectors: no scalar remainders in the loops over them
    x0 = min(max((math.floor(lo + shift) - 1) // lane * lane, 0), w)
    x1 = min(max(-((-math.floor(hi + shift) - 2) // lane) * lane, x0), w)
    lo, hi = _fan_interval(py, geometry, margin, 1.0 - margin * max(ia, ib))
    if lo > hi:
        return x0, x1, x1, x1
    xi0 = min(max(-((-math.ceil(lo + shift) - 1) // lane) * lane, x0), x1)
    xi1 = min(max(math.floor(hi + shift) // lane * lane, xi0), x1)
    return x0, xi0, xi1, x1


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _sector_row(y, x0, geometry, row):
    """Multiply ``row`` (columns ``x0`` on of row ``y``) by each pixel's coverage of the fan: clip(0.5
    + signed distance to its nearest edge), the distance to the elliptic far boundary to first order
    ((1 - q) / |grad q|)."""
    ay, ax, cl, sl, cr, sr, ia, ib = geometry
    py = np.float32(y) + np.float32(0.5) - ay
    qy = py * ib
    gy = qy * ib * (qy * ib)
    left = py * sl
    right = py * sr
    shift = np.float32(x0) + np.float32(0.5) - ax
    one = np.float32(1.0)
    for x in range(row.shape[0]):
        px = np.float32(np.int32(x)) + shift
        d = min(px * cl - left, right - px * cr)
        qx = px * ia
        q = np.sqrt(qx * qx + qy * qy)
        g = np.sqrt(qx * ia * (qx * ia) + gy)  # |grad q| * q
        d = min(d, (one - q) * q / max(g, np.float32(1e-12)))
        row[x] *= min(max(d + np.float32(0.5), np.float32(0.0)), one)


@numba.njit(cache=True, nogil=True)
def _bias_profile(params, w):
    """exp(bias grid) interpolated across the width: (BIAS_GRID, w), one row per grid row."""
    g = BIAS_GRID
    node = np.empty((g, g), np.float32)
    for j in range(g * g):
        node[j // g, j % g] = np.exp(params[BIAS0 + j])
    profile = np.empty((g, w), np.float32)
    for x in range(w):
        p = x * (g - 1) / max(w - 1, 1)
        k = min(int(p), g - 2)
        t = np.float32(p - k)
        for j in range(g):
            profile[j, x] = node[j, k] + t * (node[j, k + 1] - node[j, k])
    return profile


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _bias_row(row, a, b, t):
    """Multiply ``row`` by its bias: ``a + t (b - a)``, between two rows of the profile."""
    for x in range(row.shape[0]):
        row[x] *= a[x] + t * (b[x] - a[x])


@numba.njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _contrast(v, contrast, offset):
    """(v - 0.5) * contrast + 0.5 + brightness (``offset``), clipped to [0, 1]."""
    for x in range(v.shape[0]):
        c = (v[x] - np.float32(0.5)) * contrast + offset
        v[x] = min(max(c, np.float32(0.0)), np.float32(1.0))


@numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def render_appearance(indices, base, params, key, modality, texture, sector, num_classes, signed, out):
    """Render one image (H, W) float32 into ``out``, in [0, 1] (or 2 v - 1 in [-1, 1] if ``signed``),
    from class ``indices`` (H, W) and, unless ``texture``, the ``base`` image in [0, 1]; ``params``
    from :func:`sample_appearance`; ``sector`` for echo only.

    Pointwise steps run on blocks of ``_BLOCK`` rows (long SIMD loops over scratch that stays in
    cache). The blur and resolution loss of each axis follow :func:`_axis_plan`: the y axis's on the
    image, the x axis's on the image transposed. The steps after the y axis's map see only the
    columns the fan can cover."""
    h, w = indices.shape
    sector = sector and modality == 0
    geometry = _sector_geometry(params, h, w)
    fan = np.empty((h, 4), np.int64)  # each output row's columns: x0 <= xi0 <= xi1 <= x1
    for y in range(h):
        fan[y, 0], fan[y, 1], fan[y, 2], fan[y, 3] = _sector_span(y, geometry, w) if sector else (0, w, w, w)
    sigma_x = _prefilter_sigma(params[BLUR_X], params[RES_X])
    sigma_y = _prefilter_sigma(params[BLUR_Y], params[RES_Y])
    speckle = modality == 0 and params[NOISE] > 0
    x_map = sigma_x >= 0.25 or params[RES_X] >= _MIN_FACTOR
    y_map = sigma_y >= 0.25 or params[RES_Y] >= _MIN_FACTOR
    y_resample = params[RES_Y] >= _MIN_FACTOR
    # each axis's blur and resolution loss (a plan of one value, unused, where the axis has none)
    xi, xw, x_lower, x_upper, x_frac = _axis_plan(w if x_map else 1, sigma_x, params[RES_X])
    yi, yw, y_lower, y_upper, y_frac = _axis_plan(h if y_map else 1, sigma_y, params[RES_Y])
    block = _BLOCK * w
    noise = np.empty(block, np.float32)
    mant = np.empty(block, np.float32)
    expo = np.empty(block, np.float32)
    shift = np.empty(block, np.int32)
    drawn = np.empty((h, w), np.float32)
    means = params[CLASS0 : CLASS0 + num_classes]
    stds = params[CLASS0 + num_classes : CLASS0 + 2 * num_classes]
    tex_lo, tex_hi = _stream_words(key, _TEXTURE)
    flat = drawn.reshape(-1)
    cls = indices.reshape(-1)
    for y0 in range(0, h, _BLOCK):
        part = flat[y0 * w : min(y0 + _BLOCK, h) * w]
        if texture:
            n = part.shape[0]
            _normals(tex_lo, tex_hi, y0 * w, noise[:n])
            _classes(cls[y0 * w : y0 * w + n], means, stds, noise[:n], part)
        else:
            _copy(base.reshape(-1)[y0 * w : y0 * w + part.shape[0]], part)
    src = drawn
    if speckle:
        lo, hi = _stream_words(key, _SPECKLE_A)
        node = np.empty(block, np.uint32)
        for y0 in range(0, h, _BLOCK):
            _speckle(drawn, y0, params, lo, hi, node, mant)
    if x_map:
        # rows padded, so that the transposes' column writes do not map to the same few cache sets
        turned = np.empty((w, h + _PAD), np.float32)
        _transpose(drawn, turned, h, w)
        coarse = np.empty((xi.shape[0], h + _PAD), np.float32)
        for c in range(xi.shape[0]):
            _weighted_rows(turned, xi[c], xw[c], 0, coarse[c, :h])
        if params[RES_X] >= _MIN_FACTOR:  # up-sampled back, in the rows of ``turned``
            for x in range(w):
                _lerp_rows(coarse[x_lower[x], :h], coarse[x_upper[x], :h], x_frac[x], turned[x, :h])
            coarse = turned
        src = np.empty((h, w + _PAD), np.float32)
        _transpose(coarse, src, w, h)
    if y_resample:  # the down-sampled rows, whole
        coarse = np.empty((yi.shape[0], w), np.float32)
        for c in range(yi.shape[0]):
            _weighted_rows(src, yi[c], yw[c], 0, coarse[c])
    profile = _bias_profile(params, w)
    n_lo, n_hi = _stream_words(key, _NOISE_A)
    m_lo, m_hi = _stream_words(key, _NOISE_B)
    level = params[NOISE]
    contrast = params[CONTRAST]
    offset = np.float32(0.5) + params[BRIGHTNESS]
    one = np.float32(1.0)
    fill = -one if signed else np.float32(0.0)
    vals = np.empty(block, np.float32)
    bits = vals.view(np.int32)
    mant_bits = mant.view(np.int32)
    spans = np.empty((_BLOCK, 5), np.int64)
    if sector:
        _fill(out.reshape(-1), fill)  # the pixels the fan leaves out
    g = BIAS_GRID
    for y0 in range(0, h, _BLOCK):
        rows = min(_BLOCK, h - y0)
        n = 0
        for r in range(rows):  # the block's covered columns, one row after another, in vals
            y = y0 + r
            x0, xi0, xi1, x1 = fan[y, 0], fan[y, 1], fan[y, 2], fan[y, 3]
            spans[r, 0], spans[r, 1], spans[r, 2], spans[r, 3], spans[r, 4] = x0, xi0, xi1, x1, n
            v = vals[n : n + x1 - x0]
            if y_resample:
                _lerp_rows(coarse[y_lower[y], x0:x1], coarse[y_upper[y], x0:x1], y_frac[y], v)
            elif y_map:
                _weighted_rows(src, yi[y], yw[y], x0, v)
            else:
                _copy(src[y, x0:x1], v)
            p = y * (g - 1) / max(h - 1, 1)
            k = min(int(p), g - 2)
            _bias_row(v, profile[k, x0:x1], profile[k + 1, x0:x1], np.float32(p - k))
            n += x1 - x0
        v = vals[:n]
        if modality == 1:  # no sector: the block's whole rows, pixel y0 * W on
            _normals(n_lo, n_hi, y0 * w, noise[:n])
            for i in range(n):
                a = v[i] + level * noise[i]
                noise[i] = a * a
            _normals(m_lo, m_hi, y0 * w, mant[:n])
            for i in range(n):
                b = level * mant[i]
                v[i] = np.sqrt(noise[i] + b * b)
        elif modality == 2:
            _normals(n_lo, n_hi, y0 * w, noise[:n])
            for i in range(n):
                v[i] += level * noise[i]
        _power(v, bits[:n], mant[:n], mant_bits[:n], expo[:n], shift[:n], params[GAMMA])
        _contrast(v, contrast, offset)
        for r in range(rows):
            x0, xi0, xi1, x1, at = spans[r, 0], spans[r, 1], spans[r, 2], spans[r, 3], spans[r, 4]
            y = y0 + r
            v = vals[at : at + x1 - x0]
            if sector:  # the edges only: coverage is exactly 1 in [xi0, xi1)
                _sector_row(y, x0, geometry, v[: xi0 - x0])
                _sector_row(y, xi1, geometry, v[xi1 - x0 :])
            part = out[y, x0:x1]
            if signed:
                for x in range(x1 - x0):
                    part[x] = np.float32(2.0) * v[x] - one
            else:
                _copy(v, part)


@numba.njit(cache=True, nogil=True)
def _appearance_one(indices, base, key, ranges, modality, texture, sector, num_classes, signed, params, out):
    sample_appearance(key, ranges, num_classes, indices, sector, params)
    render_appearance(indices, base, params, key, modality, texture, sector, num_classes, signed, out)


@numba.njit(cache=True, nogil=True, parallel=True)
def _appearance_batch(
    indices, base, keys, ranges, modality, texture, sector, num_classes, signed, params, out
):
    flags = (modality, texture, sector, num_classes, signed)
    for n in numba.prange(indices.shape[0]):
        _appearance_one(indices[n], base[n], keys[n], ranges, *flags, params[n], out[n])


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
    signed: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) float32 in [0, 1] (``signed``: 2 v - 1, in [-1, 1]) and their parameters
    (N, ``n_params(num_classes)``) float32.

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
    flags = (
        MODALITY_CODES[modality],
        bool(texture),
        bool(sector) and modality == "echo",
        int(num_classes),
        bool(signed),
    )
    if len(batch) == 1:
        _appearance_one(batch[0], base_batch[0], keys[0], ranges, *flags, params[0], out[0])
    elif len(batch):
        with parallel_section():
            _appearance_batch(batch, base_batch, keys, ranges, *flags, params, out)
    return (out[0], params[0]) if single else (out, params)
