"""One conformance harness for every kernel in synthgen.kernels (see tests/test_kernels_*.py).

A kernel is wrapped as ``kernel(x, idx)``: ``x`` is a batch (n, H, W) or, where the kernel takes
single maps, one map (H, W); ``idx`` holds the positions of ``x``'s samples in the full batch (an
array, or an int for a single map), so that kernels with per-sample parameters (seeds) can look theirs
up. ``reference(map, i)`` gives the expected result for sample ``i`` from a slow implementation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Kernel = Callable[[np.ndarray, np.ndarray | int], np.ndarray]
Reference = Callable[[np.ndarray, int], np.ndarray]


def _same(actual: np.ndarray, expected: np.ndarray, atol: float, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if atol == 0:
        mismatch = int(np.count_nonzero(actual != expected))
        assert mismatch == 0, f"{what}: {mismatch} of {actual.size} values differ"
    else:
        diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
        assert diff.max(initial=0.0) <= atol, f"{what}: max difference {diff.max()} > {atol}"


def check_kernel(
    kernel: Kernel,
    batch: np.ndarray,
    *,
    reference: Reference | None = None,
    labels: bool = True,
    single: bool = True,
    out_dtype: np.dtype | type | None = None,
    atol: float = 0.0,
) -> np.ndarray:
    """Check the conformance rules every kernel obeys; return the kernel's output on ``batch``.

    - the output keeps the batch's shape and dtype (or ``out_dtype``), and the input is not mutated;
    - every sample of the batch equals the kernel run on that sample alone (as a batch of one, and as
      a single map where ``single``), so results depend neither on batch size nor on thread count;
    - an empty batch gives an empty result, a non-contiguous view the same result as a copy;
    - for label kernels (``labels``), each output sample holds only values its input held;
    - where a ``reference`` is given, each sample matches it (exactly, or within ``atol``).
    """
    assert batch.ndim == 3 and len(batch) > 0, "the harness needs a non-empty (N, H, W) batch"
    expected_dtype = np.dtype(out_dtype or batch.dtype)
    idx = np.arange(len(batch))
    before = batch.copy()
    out = kernel(batch, idx)
    assert np.array_equal(batch, before), "the kernel mutated its input"
    assert out.shape == batch.shape, f"shape {out.shape} != {batch.shape}"
    assert out.dtype == expected_dtype, f"dtype {out.dtype} != {expected_dtype}"

    for n in range(len(batch)):
        _same(kernel(batch[n : n + 1], idx[n : n + 1])[0], out[n], 0, f"sample {n} alone vs in the batch")
        if single:
            _same(kernel(batch[n], n), out[n], 0, f"sample {n} as a single map vs in the batch")
        if labels:
            new = set(np.unique(out[n]).tolist()) - set(np.unique(batch[n]).tolist())
            assert not new, f"sample {n}: output holds values {sorted(new)} that the input did not"
        if reference is not None:
            _same(out[n], reference(batch[n], n), atol, f"sample {n} vs the reference")

    empty = kernel(batch[:0], idx[:0])
    assert empty.shape == (0, *batch.shape[1:]) and empty.dtype == expected_dtype, "empty batch"

    strided = np.flip(batch, axis=0)  # a view with negative strides
    _same(kernel(strided, idx[::-1]), np.flip(out, axis=0), 0, "a non-contiguous view")
    return out
