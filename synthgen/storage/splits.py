"""The fixed patient split: which patients are held out of generator training for evaluation.

Defined once here. A patient is held out when its number is a multiple of 10 (patient0010,
patient0020, ...): a fixed tenth of CAMUS (and of ACDC), independent of which patients a copy holds.
A store maps each sample to its source file through the provenance list ``sources`` and the per-sample
metadata ``meta/source_index``; the patient number is read from the ``patientNNNN`` folder or file name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from synthgen.errors import StoreFormatError

HELD_OUT_MODULUS = 10
_PATIENT = re.compile(r"patient(\d+)", re.IGNORECASE)


def is_test_patient(number: int) -> bool:
    """Whether patient ``number`` belongs to the held-out test tenth."""
    return number % HELD_OUT_MODULUS == 0


def camus_test_patients(numbers: Iterable[int]) -> list[int]:
    """The held-out test patients among ``numbers`` (CAMUS patient numbers), ascending."""
    return sorted(n for n in set(numbers) if is_test_patient(n))


def patient_number(source: str) -> int:
    """The patient number in a source path such as ``patient0042/patient0042_2CH_ED.nii.gz``."""
    found = _PATIENT.findall(source)
    if not found:
        raise StoreFormatError(f"Expected a source path with a 'patientNNNN' part. Got {source!r} instead.")
    return int(found[-1])


def sample_patients(sources: Sequence[str], source_index: np.ndarray) -> np.ndarray:
    """Patient number of each sample, given the store's source list and per-sample source indices."""
    numbers = np.array([patient_number(s) for s in sources], np.int64)
    source_index = np.asarray(source_index, np.int64)
    if source_index.size and not (0 <= source_index.min() and source_index.max() < len(numbers)):
        raise StoreFormatError(
            f"Expected source indices in [0, {len(numbers)}). Got [{source_index.min()}, {source_index.max()}] instead."
        )
    return numbers[source_index]


def _read_meta(reader, name: str) -> np.ndarray:
    return np.concatenate(
        [reader.read_meta(name, *reader.layout.shard_bounds(k)) for k in reader.complete_shards]
    )


def store_patients(reader) -> np.ndarray:
    """Patient number of each available sample: from ``meta/patient`` (what ``synthgen ingest`` writes)
    or else from provenance ``sources`` and ``meta/source_index``."""
    fields = {m.name for m in reader.layout.meta}
    if "patient" in fields:
        patients = _read_meta(reader, "patient").astype(np.int64)
        if (patients < 0).any():
            raise StoreFormatError(
                f"Expected a patient number for every sample of {reader.url}. Some are unknown (-1): "
                "use split 'all'."
            )
        return patients
    sources = reader.attrs.provenance.get("sources")
    if not isinstance(sources, list) or "source_index" not in fields:
        raise StoreFormatError(
            f"Expected meta/patient, or provenance 'sources' and meta/source_index, in {reader.url} to split "
            "by patient. They are missing: use split 'all', or a store made by 'synthgen ingest'."
        )
    return sample_patients(sources, _read_meta(reader, "source_index"))


def split_indices(reader, split: str) -> np.ndarray:
    """Sample indices of a store (complete shards only) in ``split``: 'all', 'train' or 'test'."""
    indices = reader.available_indices()
    if split == "all":
        return indices
    held_out = np.array([is_test_patient(int(p)) for p in store_patients(reader)], bool)
    return indices[held_out] if split == "test" else indices[~held_out]
