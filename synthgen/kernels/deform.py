"""Batched random deformation of label maps: field generation and nearest-neighbour warp in one pass.

:func:`deform_labels` gives exactly ``warp_labels(labels[n], deformation_field(seeds[n], ...))`` for
every sample, without building the full-resolution field. The field is bilinear inside each 8 x 8 cell
(see :mod:`synthgen.kernels.fields`), so the source positions of a cell lie within the box spanned by
its four corners' source positions. When every 8 x 8 block of the source that this box touches holds
one and the same label, the whole cell takes that label, exactly as per-pixel sampling would give;
only the cells near class boundaries are resampled pixel by pixel. Label maps are mostly uniform, so
most cells take the short path. The per-pixel path runs in SIMD lanes in float32 and int32 (AVX2 has no
packed float <-> int64 conversion: an int64 formulation ran 2x slower per map on an AMD EPYC without
AVX-512).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numba
import numpy as np

from synthgen.errors import KernelInputError
from synthgen.kernels import _validate
from synthgen.kernels._threading import parallel_section
from synthgen.kernels.affine import AffineParams, affine_matrices
from synthgen.kernels.fields import (
    FIELD_STEP,
    grid,
    midres_field,
    midres_of,
    parse_field_args,
    upsample_field,
)
from synthgen.kernels.warp import nearest_index32, nearest_position32, warp_labels

BLOCK = 8  # side of the source blocks whose uniformity is summarised; 8 bytes read as one uint64
_BLOCK_SHIFT = 3
_ALL_ONES = np.uint64(0x0101010101010101)
# pixels of a map whose flat indices float32 holds exactly; a larger map is warped through full fields
FLOAT_INDEX_LIMIT = 2**24


def _lane_constants() -> np.ndarray:
    """Per-pixel constants of an 8 x 8 cell, pixel k = a * 8 + b: rows fy, fx (the bilinear weights of
    ``upsample_field``), a, b, all float32. Read from an array, they let the pixel loop of
    :func:`_cell_pixels` run in SIMD lanes: a loop counter converted to float is an int64, which does
    not vectorise on CPUs without AVX-512 (6 ns against 2.5 ns per pixel measured on one)."""
    k = np.arange(FIELD_STEP * FIELD_STEP)
    a, b = (k // FIELD_STEP).astype(np.float32), (k % FIELD_STEP).astype(np.float32)
    step = np.float32(1.0 / FIELD_STEP)
    lanes = np.stack([a * step, b * step, a, b])
    lanes.setflags(write=False)
    return lanes


_LANES = _lane_constants()  # a global array: a compile-time constant of the kernels that read it


@numba.njit(cache=True, nogil=True)
def _uniform_extent(labels, extent):
    """``extent[bi, bj]``: the largest k such that the (k + 1) x (k + 1) BLOCK-sized blocks from block
    (bi, bj) down and to the right all hold one and the same label; -1 where block (bi, bj) is mixed."""
    h, w = labels.shape
    nby, nbx = extent.shape
    value = np.empty((nby, nbx), dtype=labels.dtype)
    # per column of the current band of rows: 1 if equal all the way down and equal to its left
    # neighbour inside the block; BLOCK == 8 such bytes read as one uint64 tell a block's uniformity
    ok = np.ones(nbx * BLOCK, dtype=np.uint8)
    words = ok.view(np.uint64)
    for bi in range(nby):
        r0 = bi * BLOCK
        first = labels[r0]
        ok[0] = 1
        for c in range(1, w):
            ok[c] = (first[c] == first[c - 1]) | (c % BLOCK == 0)
        for r in range(r0 + 1, min(r0 + BLOCK, h)):
            row = labels[r]
            for c in range(w):
                ok[c] &= row[c] == first[c]
        for bj in range(nbx):
            extent[bi, bj] = 0 if words[bj] == _ALL_ONES else -1
            value[bi, bj] = first[bj * BLOCK]
    for bi in range(nby - 2, -1, -1):  # largest uniform square, grown from the bottom-right corner
        for bj in range(nbx - 2, -1, -1):
            if extent[bi, bj] < 0:
                continue
            v = value[bi, bj]
            if value[bi + 1, bj] == v and value[bi, bj + 1] == v and value[bi + 1, bj + 1] == v:
                k = min(min(extent[bi + 1, bj], extent[bi, bj + 1]), extent[bi + 1, bj + 1])
                extent[bi, bj] = k + 1 if k >= 0 else 0
    return value


@numba.njit(cache=True, nogil=True)
def _blocks_uniform(extent, value, first_r, first_c, last_r, last_c):
    """Whether the blocks [first_r, last_r] x [first_c, last_c] all hold one and the same label: the
    uniform square from the first block when it covers them (the common case), else block by block
    (a box two blocks high and three wide needs no 3 x 3 square)."""
    if extent[first_r, first_c] >= max(last_r - first_r, last_c - first_c):
        return True
    if extent[first_r, first_c] < 0:
        return False
    v = value[first_r, first_c]
    for r in range(first_r, last_r + 1):
        for c in range(first_c, last_c + 1):
            if extent[r, c] < 0 or value[r, c] != v:
                return False
    return True


@numba.njit(cache=True, nogil=True)
def _repeated_word(v, itemsize):
    """The uint64 holding 8 // itemsize copies of label ``v`` (two's complement bytes)."""
    word = np.uint64(v)
    shift = 8 * itemsize
    if shift < 64:
        word &= (np.uint64(1) << np.uint64(shift)) - np.uint64(1)
    while shift < 64:
        word |= word << np.uint64(shift)
        shift *= 2
    return word


@numba.njit(cache=True, nogil=True)
def _cell_pixels(flat, w, h, mid, i, j, ny, nx, lanes, index, out):
    """Per-pixel nearest-neighbour sampling of the ``ny`` x ``nx`` pixels of cell (i, j).

    The field is formed exactly as in ``upsample_field``. All 64 flat source indices are computed
    first, in a loop that runs in SIMD lanes: float32 throughout, each flat index formed exactly in
    float32 (a map holds at most ``FLOAT_INDEX_LIMIT`` pixels here) and kept as int32; then the valid
    ones are gathered.
    """
    y0 = i * FIELD_STEP
    x0 = j * FIELD_STEP
    r00, r01, r10, r11 = mid[0, i, j], mid[0, i, j + 1], mid[0, i + 1, j], mid[0, i + 1, j + 1]
    c00, c01, c10, c11 = mid[1, i, j], mid[1, i, j + 1], mid[1, i + 1, j], mid[1, i + 1, j + 1]
    row0 = np.float32(y0)
    col0 = np.float32(x0)
    width = np.float32(w)
    lane_fy, lane_fx, lane_a, lane_b = lanes[0], lanes[1], lanes[2], lanes[3]
    for k in range(FIELD_STEP * FIELD_STEP):
        fy = lane_fy[k]
        gy = np.float32(1.0) - fy
        fx = lane_fx[k]
        gx = np.float32(1.0) - fx
        d_row = gx * (gy * r00 + fy * r10) + fx * (gy * r01 + fy * r11)
        d_col = gx * (gy * c00 + fy * c10) + fx * (gy * c01 + fy * c11)
        r = nearest_position32(d_row + (row0 + lane_a[k]), h)
        c = nearest_position32(d_col + (col0 + lane_b[k]), w)
        index[k] = np.int32(r * width + c)
    if ny == FIELD_STEP and nx == FIELD_STEP:  # the common case, with constant trip counts
        for a in range(FIELD_STEP):
            for b in range(FIELD_STEP):
                out[y0 + a, x0 + b] = flat[index[a * FIELD_STEP + b]]
    else:
        for a in range(ny):
            for b in range(nx):
                out[y0 + a, x0 + b] = flat[index[a * FIELD_STEP + b]]


@numba.njit(cache=True, nogil=True)
def _deform_one(labels, seed, max_disp, ky0, wy, kx0, wx, ncy, ncx, affine, out):
    h, w = labels.shape
    gh = ky0.shape[0]
    gw = kx0.shape[0]
    mid = np.empty((2, gh, gw), dtype=np.float32)
    midres_field(seed, max_disp, ky0, wy, kx0, wx, ncy, ncx, affine, mid)
    extent = np.empty(((h + BLOCK - 1) // BLOCK, (w + BLOCK - 1) // BLOCK), dtype=np.int32)
    value = _uniform_extent(labels, extent)
    src = np.empty((2, gh, gw), dtype=np.float32)  # source position of each cell corner
    largest = np.float32(0.0)
    for i in range(gh):
        for j in range(gw):
            src[0, i, j] = np.float32(i * FIELD_STEP) + mid[0, i, j]
            src[1, i, j] = np.float32(j * FIELD_STEP) + mid[1, i, j]
            largest = max(largest, max(abs(src[0, i, j]), abs(src[1, i, j])))
    margin = np.float32(1e-3) + np.float32(1e-6) * largest  # covers float32 rounding, generously
    first_r = np.empty(gw - 1, dtype=np.int32)  # int32 and nearest_index32: the box loop vectorises
    first_c = np.empty(gw - 1, dtype=np.int32)
    last_r = np.empty(gw - 1, dtype=np.int32)
    last_c = np.empty(gw - 1, dtype=np.int32)
    shift = np.int32(_BLOCK_SHIFT)
    index = np.empty(FIELD_STEP * FIELD_STEP, dtype=np.int32)
    lanes = _LANES
    flat = labels.ravel()
    itemsize = labels.itemsize
    whole_words = (w * itemsize) % 8 == 0  # then each full cell row is `itemsize` aligned uint64 words
    words = out.ravel().view(np.uint64) if whole_words else np.empty(0, dtype=np.uint64)
    for i in range(gh - 1):
        # a cell's source box is spanned by its four corners (a bilinear patch peaks at its corners)
        for j in range(gw - 1):
            r_lo = min(min(src[0, i, j], src[0, i, j + 1]), min(src[0, i + 1, j], src[0, i + 1, j + 1]))
            r_hi = max(max(src[0, i, j], src[0, i, j + 1]), max(src[0, i + 1, j], src[0, i + 1, j + 1]))
            c_lo = min(min(src[1, i, j], src[1, i, j + 1]), min(src[1, i + 1, j], src[1, i + 1, j + 1]))
            c_hi = max(max(src[1, i, j], src[1, i, j + 1]), max(src[1, i + 1, j], src[1, i + 1, j + 1]))
            first_r[j] = nearest_index32(r_lo - margin, h) >> shift
            first_c[j] = nearest_index32(c_lo - margin, w) >> shift
            last_r[j] = nearest_index32(r_hi + margin, h) >> shift
            last_c[j] = nearest_index32(c_hi + margin, w) >> shift
        y0 = i * FIELD_STEP
        ny = min(FIELD_STEP, h - y0)
        for j in range(gw - 1):
            x0 = j * FIELD_STEP
            nx = min(FIELD_STEP, w - x0)
            if not _blocks_uniform(extent, value, first_r[j], first_c[j], last_r[j], last_c[j]):
                _cell_pixels(flat, w, h, mid, i, j, ny, nx, lanes, index, out)
            elif whole_words and nx == FIELD_STEP:
                word = _repeated_word(value[first_r[j], first_c[j]], itemsize)
                for y in range(y0, y0 + ny):
                    start = (y * w + x0) * itemsize // 8
                    for k in range(itemsize):
                        words[start + k] = word
            else:
                out[y0 : y0 + ny, x0 : x0 + nx] = value[first_r[j], first_c[j]]


@numba.njit(cache=True, nogil=True, parallel=True)
def _deform_batch(labels, seeds, max_disp, ky0, wy, kx0, wx, ncy, ncx, affines, out):
    for n in numba.prange(labels.shape[0]):
        _deform_one(labels[n], seeds[n], max_disp, ky0, wy, kx0, wx, ncy, ncx, affines[n], out[n])


def deform_labels(
    labels: np.ndarray,
    seeds: Sequence[int] | np.ndarray,
    spacing: float,
    max_displacement: float,
    *,
    affine: Sequence[AffineParams] | np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Deform a batch of label maps (N, H, W), sample ``n`` by the field of ``seeds[n]``.

    ``spacing`` is the control-point spacing and ``max_displacement`` the largest elastic displacement
    per component, both in pixels; ``affine`` optionally adds one :class:`AffineParams` (or a (2, 3)
    sampling matrix) per sample. Each result depends only on its own map, seed and parameters, never on
    the batch size or thread count, and equals ``warp_labels(labels[n], deformation_field(...))``.
    """
    batch = _check_batch(labels)
    shape, spacing, max_displacement = parse_field_args(batch.shape[1:], spacing, max_displacement)
    seed_values = _validate.seed_array(seeds, len(batch))
    matrices = affine_matrices(affine, len(batch), shape)
    result = _validate.out_array(out, batch, single=False)
    if len(batch) and shape[0] * shape[1] > FLOAT_INDEX_LIMIT:
        _deform_by_full_fields(batch, seed_values, shape, spacing, max_displacement, matrices, result)
    elif len(batch):
        g = grid(shape, spacing)
        with parallel_section():
            _deform_batch(
                batch, seed_values, max_displacement, g.ky0, g.wy, g.kx0, g.wx, *g.n_control, matrices, result
            )
    return result


def _deform_by_full_fields(batch, seeds, shape, spacing, max_displacement, matrices, out) -> None:
    """Maps of more than FLOAT_INDEX_LIMIT pixels: the public route, each sample's full field then
    warp_labels (the same result by definition, at a fraction of the speed)."""
    field = np.empty((2, *shape), dtype=np.float32)
    for n in range(len(batch)):
        upsample_field(midres_of(int(seeds[n]), shape, spacing, max_displacement, matrices[n]), field)
        warp_labels(batch[n], field, out=out[n])


def _check_batch(labels: Any) -> np.ndarray:
    batch, single = _validate.label_batch(labels)
    if single:
        raise KernelInputError(
            f"Expected a batch of label maps (N, H, W). Got one map {labels.shape}; pass labels[None]."
        )
    return batch
