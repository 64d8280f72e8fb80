"""Batched random deformation of label maps: field generation and nearest-neighbour warp in one pass.

:func:`deform_labels` gives exactly ``warp_labels(labels[n], deformation_field(seeds[n], ...))`` for
every sample, without building the full-resolution field. The field is bilinear inside each 8 x 8 cell
(see :mod:`synthgen.kernels.fields`), so the source positions of a cell lie within the box spanned by
its four corners' source positions. When every 8 x 8 block of the source that this box touches holds
one and the same label, the whole cell takes that label, exactly as per-pixel sampling would give;
only the cells near class boundaries are resampled pixel by pixel. Label maps are mostly uniform, so
most cells take the short path. The per-pixel path runs in SIMD lanes in float32 and int32 (AVX2 has no
packed float <-> int64 conversion: an int64 formulation ran 2x slower per map on an AMD EPYC without
AVX-512). Where the width is a whole number of blocks, the label rows are read, and the uniform cells
written, as uint64 words, and the uniform squares are grown in SIMD passes up to ``MAX_EXTENT``
(together 1.2x per map on that machine, against label-by-label reads and a serial largest-square scan).
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

BLOCK = 8  # side of the source blocks whose uniformity is summarised
_BLOCK_SHIFT = 3
# largest uniform square summarised per block, in blocks less one: a cell's source box spans 2 or 3
# blocks a side at usual deformations; larger boxes are tested block by block
MAX_EXTENT = 2
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
def _uniform_extent(labels, extent, value, word):
    """``extent[bi, bj]``: the largest k <= MAX_EXTENT such that the (k + 1) x (k + 1) BLOCK-sized
    blocks from block (bi, bj) down and to the right all hold one and the same label; -1 where block
    (bi, bj) is mixed. ``value`` gets each block's first label and, when the width is a whole number of
    blocks, ``word`` the first uint64 of its first row (a uniform block's rows are that word repeated)."""
    if labels.shape[1] % BLOCK == 0:
        _block_uniformity_words(labels, extent, value, word)
    else:
        _block_uniformity_bytes(labels, extent, value)
    nby, nbx = extent.shape
    # squares grown one level per pass, each pass in SIMD lanes (a pass reads only the level before:
    # rows top-down and columns left to right, every block reads blocks not yet updated)
    for bi in range(nby - 1):  # 2 x 2: four uniform blocks of one label
        e, below, v, v_below = extent[bi], extent[bi + 1], value[bi], value[bi + 1]
        for bj in range(nbx - 1):
            same = (v[bj + 1] == v[bj]) & (v_below[bj] == v[bj]) & (v_below[bj + 1] == v[bj])
            four = (e[bj] >= 0) & (e[bj + 1] >= 0) & (below[bj] >= 0) & (below[bj + 1] >= 0)
            e[bj] = np.int32(1) if same & four else e[bj]
    for level in range(2, MAX_EXTENT + 1):  # four overlapping squares of one level less share a block
        low = np.int32(level - 1)
        for bi in range(nby - 1):
            e, below = extent[bi], extent[bi + 1]
            for bj in range(nbx - 1):
                four = (e[bj] >= low) & (e[bj + 1] >= low) & (below[bj] >= low) & (below[bj + 1] >= low)
                e[bj] = np.int32(level) if four else e[bj]


@numba.njit(cache=True, nogil=True)
def _block_uniformity_words(labels, extent, value, word):
    """Whether each block is uniform (0) or mixed (-1), for a width of whole blocks: a block row is
    ``itemsize`` uint64 words, so the rows of a band are compared word by word, and a block is uniform
    when all its words equal its first and that word repeats one label."""
    h = labels.shape[0]
    itemsize = labels.itemsize
    nby, nbx = extent.shape
    words = labels.view(np.uint64)  # (h, w * itemsize / 8)
    diff = np.empty(words.shape[1], dtype=np.uint64)
    for bi in range(nby):
        r0 = bi * BLOCK
        top = words[r0]
        diff[:] = 0
        for r in range(r0 + 1, min(r0 + BLOCK, h)):
            row = words[r]
            for q in range(diff.shape[0]):
                diff[q] |= row[q] ^ top[q]
        if itemsize == 1:  # the common case, one word per block row, in SIMD lanes
            for bj in range(nbx):
                first = top[bj]
                same = (diff[bj] == 0) & _repeats_one_label(first, 1)
                extent[bi, bj] = np.int32(same) - np.int32(1)
                word[bi, bj] = first
        else:
            for bj in range(nbx):
                first = top[bj * itemsize]
                same = _repeats_one_label(first, itemsize)
                for k in range(bj * itemsize, (bj + 1) * itemsize):
                    same &= (diff[k] == 0) & (top[k] == first)
                extent[bi, bj] = np.int32(same) - np.int32(1)
                word[bi, bj] = first
        for bj in range(nbx):  # a loop of its own: byte stores may alias anything, which blocks SIMD
            value[bi, bj] = labels[r0, bj * BLOCK]


@numba.njit(cache=True, nogil=True)
def _repeats_one_label(word, itemsize):
    """Whether a uint64 is one ``itemsize``-byte value repeated (equal to itself rotated by one)."""
    if itemsize == 8:
        return True
    shift = np.uint64(8 * itemsize)
    return word == ((word << shift) | (word >> (np.uint64(64) - shift)))


@numba.njit(cache=True, nogil=True)
def _block_uniformity_bytes(labels, extent, value):
    """:func:`_block_uniformity_words` for any width, label by label (the last block column is partial)."""
    h, w = labels.shape
    nby, nbx = extent.shape
    # per column of the current band of rows: 1 if equal all the way down and equal to its left
    # neighbour inside the block
    ok = np.ones(nbx * BLOCK, dtype=np.uint8)
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
            uniform = True
            for c in range(bj * BLOCK, min((bj + 1) * BLOCK, w)):
                uniform &= ok[c] == 1
            extent[bi, bj] = 0 if uniform else -1
            value[bi, bj] = first[bj * BLOCK]


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
    blocks = ((h + BLOCK - 1) // BLOCK, (w + BLOCK - 1) // BLOCK)
    extent = np.empty(blocks, dtype=np.int32)
    value = np.empty(blocks, dtype=labels.dtype)
    word = np.empty(blocks, dtype=np.uint64)
    _uniform_extent(labels, extent, value, word)
    src = np.empty((2, gh, gw), dtype=np.float32)  # source position of each cell corner
    largest = np.float32(0.0)
    for i in range(gh):
        for j in range(gw):
            src[0, i, j] = np.float32(i * FIELD_STEP) + mid[0, i, j]
            src[1, i, j] = np.float32(j * FIELD_STEP) + mid[1, i, j]
            largest = max(largest, max(abs(src[0, i, j]), abs(src[1, i, j])))
    margin = np.float32(1e-3) + np.float32(1e-6) * largest  # covers float32 rounding, generously
    cells = gw - 1
    first_r = np.empty(cells, dtype=np.int32)  # int32 and nearest_index32: the box loop vectorises
    first_c = np.empty(cells, dtype=np.int32)
    last_r = np.empty(cells, dtype=np.int32)
    last_c = np.empty(cells, dtype=np.int32)
    covered = np.empty(cells, dtype=np.bool_)  # by the uniform square of the box's first block
    shift = np.int32(_BLOCK_SHIFT)
    index = np.empty(FIELD_STEP * FIELD_STEP, dtype=np.int32)
    lanes = _LANES
    flat = labels.ravel()
    itemsize = labels.itemsize
    # a width of whole cells: every cell row of the output is `itemsize` uint64 words, and one row of
    # words (each uniform cell's label repeated) is written to all the rows of a band of cells at once;
    # a width of whole blocks too: then _uniform_extent has filled `word`
    whole_words = w % FIELD_STEP == 0 and w % BLOCK == 0
    per_row = w * itemsize // 8
    words = out.ravel().view(np.uint64) if whole_words else np.empty(0, dtype=np.uint64)
    template = np.empty(per_row if whole_words else 0, dtype=np.uint64)
    for i in range(gh - 1):
        # a cell's source box is spanned by its four corners (a bilinear patch peaks at its corners)
        for j in range(cells):
            r_lo = min(min(src[0, i, j], src[0, i, j + 1]), min(src[0, i + 1, j], src[0, i + 1, j + 1]))
            r_hi = max(max(src[0, i, j], src[0, i, j + 1]), max(src[0, i + 1, j], src[0, i + 1, j + 1]))
            c_lo = min(min(src[1, i, j], src[1, i, j + 1]), min(src[1, i + 1, j], src[1, i + 1, j + 1]))
            c_hi = max(max(src[1, i, j], src[1, i, j + 1]), max(src[1, i + 1, j], src[1, i + 1, j + 1]))
            first_r[j] = nearest_index32(r_lo - margin, h) >> shift
            first_c[j] = nearest_index32(c_lo - margin, w) >> shift
            last_r[j] = nearest_index32(r_hi + margin, h) >> shift
            last_c[j] = nearest_index32(c_hi + margin, w) >> shift
        for j in range(cells):  # the common test without branches (which cells are mixed is data)
            span = max(last_r[j] - first_r[j], last_c[j] - first_c[j])
            covered[j] = extent[first_r[j], first_c[j]] >= span
        y0 = i * FIELD_STEP
        ny = min(FIELD_STEP, h - y0)
        if whole_words:  # the band's rows in words; the mixed cells' words are overwritten below
            for j in range(cells):
                cell_word = word[first_r[j], first_c[j]]
                for k in range(itemsize):
                    template[j * itemsize + k] = cell_word
            for y in range(y0, y0 + ny):
                row = y * per_row
                for q in range(per_row):
                    words[row + q] = template[q]
        for j in range(cells):
            x0 = j * FIELD_STEP
            nx = min(FIELD_STEP, w - x0)
            if covered[j] or _blocks_uniform(extent, value, first_r[j], first_c[j], last_r[j], last_c[j]):
                if not whole_words:
                    out[y0 : y0 + ny, x0 : x0 + nx] = value[first_r[j], first_c[j]]
            else:
                _cell_pixels(flat, w, h, mid, i, j, ny, nx, lanes, index, out)


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
        # labels are only copied and compared for equality: the unsigned type of the same width gives the
        # same bits, and four compiled variants serve every integer and boolean type
        bits = np.dtype(f"u{batch.dtype.itemsize}")
        with parallel_section():
            _deform_batch(
                batch.view(bits), seed_values, max_displacement, g.ky0, g.wy, g.kx0, g.wx, *g.n_control, matrices,
                result.view(bits),
            )  # fmt: skip
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
