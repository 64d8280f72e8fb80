"""Every named random stream of synthgen, defined once.

A stream is a :class:`numpy.random.Generator` seeded from ``SeedSequence(words)``: the root seed the
user gives first, then the indices that make the stream's draws independent of batching, scheduling
and worker count (sample index, epoch, ...), and, where two streams would otherwise share words, a
constant naming the stream. Changing any word here changes the bytes of every build and run that
uses it: the words are part of the store contract.

No module draws random numbers from anything else: no global seeding, no RNG kept on objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

STYLE = 0x57_7E  # a sample's style vector, after (seed, sample index)
AUGMENT = 0xA06  # the loader's augmentation of one batch, after (seed, epoch, slot)
BLOCK_ORDER = 0x5EED  # the loader's order of one store's blocks in one pass
UTILITY_SPLIT = 0x5EA1  # the usefulness protocol's train/validation split of patients
NOISE_BANK = 0x9E_5E  # the pseudo-image renderer's bank of smooth noise fields
FID_SUBSETS = 0xF1D  # the subsets of the kernel inception distance
APPEARANCE = 0xA99E  # a sample's appearance key (randomised generator, appearance stage)
SHIFT = 0x5_41F7  # the acquisition shifts of evaluation: one key per (shift, image)
BOOTSTRAP = 0xB0_07  # the resamples (seeds and images) of the usefulness statistics


def rng(*words: int) -> np.random.Generator:
    """The stream ``SeedSequence(words)``."""
    return np.random.default_rng(np.random.SeedSequence([int(w) for w in words]))


def sample_rng(seed: int, index: int, attempt: int) -> np.random.Generator:
    """Sample ``index``'s label map and deformation; a new ``attempt`` each time the gate rejects one."""
    return rng(seed, index, attempt)


def style_rng(seed: int, index: int) -> np.random.Generator:
    """Sample ``index``'s style (whatever the attempt that passed the gate)."""
    return rng(seed, index, STYLE)


def style_vectors(seed: int, indices: Sequence[int] | np.ndarray, style_dim: int) -> np.ndarray:
    """(N, style_dim) float32 standard-normal style vectors of samples ``indices``, one stream each."""
    return np.stack(
        [style_rng(seed, int(i)).standard_normal(style_dim).astype(np.float32) for i in indices]
    ).reshape(len(indices), style_dim)


def appearance_keys(seed: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """(N,) uint64 appearance keys of samples ``indices`` (whatever the attempt that passed the gate):
    a SplitMix64 hash of sample index ``i`` keyed by the first word of ``SeedSequence([seed,
    APPEARANCE])``, computed for all samples at once; the appearance kernel hashes its draws from it."""
    base = np.random.SeedSequence([int(seed), APPEARANCE]).generate_state(1, np.uint64)[0]
    i = np.asarray(indices, dtype=np.uint64).reshape(-1)
    with np.errstate(over="ignore"):
        z = base + (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def shift_keys(seed: int, shift: int, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """(N,) uint64 appearance keys of store samples ``indices`` under acquisition shift number ``shift``:
    the same image gets the same shifted copy whichever segmenter is scored on it."""
    base = int(np.random.SeedSequence([int(seed), SHIFT, int(shift)]).generate_state(1, np.uint64)[0] >> 1)
    return appearance_keys(base, indices)


def bootstrap_rng(seed: int) -> np.random.Generator:
    """The bootstrap resamples of the usefulness statistics."""
    return rng(seed, BOOTSTRAP)


def stream_seed(seed: int, k: int) -> int:
    """A 63-bit seed for stream ``k`` of a training run (for ``torch.Generator.manual_seed``)."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def epoch_rngs(seed: int, epoch: int, slot: int, n: int) -> list[np.random.Generator]:
    """``n`` independent streams of one loader slot in one epoch (one per store, one to pick stores)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence([seed, epoch, slot]).spawn(n)]


def block_order_rng(seed: int, epoch: int, source: int, done: int) -> np.random.Generator:
    """The block order of pass ``done`` over store ``source``: the same in every loader slot."""
    return rng(seed, epoch, source, done, BLOCK_ORDER)


def augment_rng(seed: int, epoch: int, slot: int, batch: int) -> np.random.Generator:
    """The augmentation of batch ``batch`` of a loader slot."""
    return rng(seed, epoch, slot, AUGMENT, batch)
