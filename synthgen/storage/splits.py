"""The fixed patient split, defined once here: which patients train, validate and test.

A patient is a test patient when its number is a multiple of 10 (patient0010, patient0020, ...): a fixed
tenth of CAMUS (and of ACDC), independent of which patients a copy holds, held out of generator and
segmenter training alike. A validation patient is one whose number ends in 5 (number % 10 == 5): the
tenth that ``train-seg`` validates on by default and then leaves out of its training. A store may
record another test remainder (:class:`SplitRule`, ``synthgen ingest --test-remainder R``: provenance
``split_rule``), for a copy of a dataset that lacks the patients % 10 == 0 (the shared copy of ACDC
keeps them aside); every split of that store, and of the stores cut from it, follows its rule. Split names:
'all'; 'train' (every patient but the test ones, as the generative trainers read it; ``train-seg``
also leaves out the validation patients when it validates on the same store); 'val'; 'test'.

A store maps each sample to its source file through the provenance list ``sources`` and the per-sample
metadata ``meta/source_index`` (or holds ``meta/patient``, as ``synthgen ingest`` writes); the patient
number is read from the ``patientNNNN`` folder or file name. :func:`select_split` applies the same rule
to sample indices in a store without patient metadata, and reads a synthetic store (build-dataset
output) whole. :class:`RunSplits` records what a segmenter trained and validated on (``splits.json``
beside its weights), so an evaluation can tell when it scores samples the segmenter has seen.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthgen.errors import CheckpointError, ConfigError, StoreFormatError
from synthgen.schemas import store_hash
from synthgen.storage.integrity import atomic_write, is_local, local_path

HELD_OUT_MODULUS = 10
VAL_REMAINDER = 5  # validation patients: number % HELD_OUT_MODULUS == VAL_REMAINDER
SPLITS = ("all", "train", "val", "test")
RUN_SPLITS_JSON = "splits.json"
_PATIENT = re.compile(r"patient(\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class SplitRule:
    """Which patients test (number % 10 == ``test``) and validate (number % 10 == ``val``)."""

    test: int = 0
    val: int = VAL_REMAINDER

    def __post_init__(self) -> None:
        for name in ("test", "val"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < HELD_OUT_MODULUS:
                raise ConfigError(
                    f"Expected the {name} remainder of the patient split in 0..{HELD_OUT_MODULUS - 1}. "
                    f"Got {value!r} instead."
                )
        if self.test == self.val:
            raise ConfigError(
                f"Expected test and validation patients to differ (validation: number % 10 == {self.val}). "
                f"Got the test remainder {self.test} too: choose another."
            )

    def to_dict(self) -> dict[str, int]:
        return {"modulus": HELD_OUT_MODULUS, "test": self.test, "val": self.val}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SplitRule:
        if (
            not isinstance(data, Mapping)
            or data.get("modulus") != HELD_OUT_MODULUS
            or set(data) != {"modulus", "test", "val"}
        ):
            raise StoreFormatError(
                f"Expected provenance 'split_rule' of {where} as {{'modulus': {HELD_OUT_MODULUS}, 'test': R, "
                f"'val': R}}. Got {data!r} instead."
            )
        return cls(test=data["test"], val=data["val"])


DEFAULT_RULE = SplitRule()


def store_rule(reader) -> SplitRule:
    """The patient split rule a store records (provenance ``split_rule``), else the default."""
    data = (reader.attrs.provenance or {}).get("split_rule")
    return DEFAULT_RULE if data is None else SplitRule.from_dict(data, reader.url)


def is_test_patient(number: int, rule: SplitRule = DEFAULT_RULE) -> bool:
    """Whether patient ``number`` belongs to the held-out test tenth."""
    return number % HELD_OUT_MODULUS == rule.test


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
    """Sample indices of a store (complete shards only) in ``split``: 'all', 'train', 'val' or 'test',
    by patient (a store without patients is an error here; :func:`select_split` splits it by sample)."""
    indices = reader.available_indices()
    if split == "all":
        return indices
    return indices[split_mask(store_patients(reader), split, store_rule(reader))]


# -- the splits of a segmenter run, recorded with its checkpoint -----------------------------------
def is_val_patient(number: int, rule: SplitRule = DEFAULT_RULE) -> bool:
    """Whether patient ``number`` belongs to the validation tenth (number % 10 == 5; never a test patient)."""
    return number % HELD_OUT_MODULUS == rule.val


def split_mask(keys: np.ndarray, split: str, rule: SplitRule = DEFAULT_RULE) -> np.ndarray:
    """Which patient numbers (or sample indices) ``keys`` lie in ``split`` under ``rule``: 'all'; 'train'
    (not test: the validation tenth included, as the generative trainers read it); 'val'; 'test'."""
    if split not in SPLITS:
        raise ConfigError(f"Expected a split in {SPLITS}. Got {split!r} instead.")
    rest = np.asarray(keys, np.int64) % HELD_OUT_MODULUS
    if split == "all":
        return np.ones(rest.shape, bool)
    if split == "train":
        return rest != rule.test
    return rest == (rule.val if split == "val" else rule.test)


def is_synthetic(reader) -> bool:
    """A store written by ``synthgen build-dataset`` (provenance ``build_config``): no patients."""
    return "build_config" in (reader.attrs.provenance or {})


def known_patients(reader) -> np.ndarray | None:
    """:func:`store_patients`, or None where a store has no patient metadata at all (neither
    ``meta/patient`` nor provenance ``sources``, or every patient unknown). Some unknown is an error."""
    fields = {m.name for m in reader.layout.meta}
    if "patient" in fields:
        if (_read_meta(reader, "patient") < 0).all():
            return None
    elif not (isinstance(reader.attrs.provenance.get("sources"), list) and "source_index" in fields):
        return None
    return store_patients(reader)


def store_url(url: str) -> str:
    """A store's URL in one spelling: local paths absolute and resolved, no trailing slash."""
    url = url.rstrip("/")
    return os.path.realpath(local_path(url)) if is_local(url) else url


@dataclass(frozen=True, eq=False)
class StoreSplit:
    """The samples of one store a run read, how they were chosen, and which store it was.

    ``by``: 'patient' (the patient split), 'sample' (a store without patient metadata: the same rule on
    sample indices) or 'whole' (a synthetic store: every sample, nothing held out). ``indices``: the
    store sample indices read, ascending; ``patients``: their patient numbers (by 'patient' only).
    ``without_val``: the validation samples of this store were left out. ``to_dict`` records the
    indices of real stores only: a synthetic store is recorded by its size.
    """

    url: str
    store_hash: str
    split: str
    by: str
    indices: np.ndarray
    patients: np.ndarray
    subset_of: str | None = None  # provenance 'subset_of': the store this one was cut from
    without_val: bool = False
    size: int | None = None  # a whole store read back from a record (which omits its indices)

    @property
    def n(self) -> int:
        return len(self.indices) if self.size is None else self.size

    def head(self, limit: int | None) -> StoreSplit:
        """The first ``limit`` samples (all with None)."""
        cut = slice(None, limit)
        patients = self.patients[cut] if self.patients.size else self.patients
        return dataclasses.replace(self, indices=self.indices[cut], patients=patients)

    def drop(self, mask: np.ndarray) -> StoreSplit:
        """Without the samples where ``mask``."""
        keep = ~mask
        patients = self.patients[keep] if self.patients.size else self.patients
        return dataclasses.replace(self, indices=self.indices[keep], patients=patients)

    def less(self, other: StoreSplit) -> StoreSplit:
        """Without the samples ``other`` (validation) holds, where it is of the same URL."""
        if not other.same_url(self):
            return self
        return dataclasses.replace(self.drop(other.covers(self)), without_val=True)

    def same_url(self, other: StoreSplit) -> bool:
        return store_url(self.url) == store_url(other.url)

    def same_store(self, other: StoreSplit) -> bool:
        """One URL, or equal attributes: a copy of the store (or, rarely, a store written alike in the
        same second whose data compresses to the same sizes: the hash does not read the data)."""
        return self.same_url(other) or (bool(self.store_hash) and self.store_hash == other.store_hash)

    def related(self, other: StoreSplit) -> bool:
        """The same store, or both cut from one store: patient numbers then name the same patients."""
        return self.same_store(other) or len({store_url(s.subset_of or s.url) for s in (self, other)}) == 1

    def covers(self, other: StoreSplit) -> np.ndarray:
        """Which samples of ``other`` this selection holds too (by patient across related stores)."""
        if self.same_store(other) and self.by == "whole":
            return np.ones(other.n, bool)
        if self.by == other.by == "patient" and self.related(other):
            return np.isin(other.patients, self.patients)
        if self.same_store(other) and self.by != "whole" and self.indices.size:
            return np.isin(other.indices, self.indices)
        return np.zeros(other.n, bool)

    def describe(self, mask: np.ndarray | None = None) -> str:
        """'4 samples of patients 5, 15' or '12 samples': the samples where ``mask`` (default all)."""
        mask = np.ones(self.n, bool) if mask is None else mask
        count = int(mask.sum())
        samples = f"{count} sample{'s' * (count != 1)}"
        if self.by != "patient":
            return samples
        numbers = np.unique(self.patients[mask]).tolist()
        more = f" and {len(numbers) - 8} more" if len(numbers) > 8 else ""
        return f"{samples} of patient{'s' * (len(numbers) != 1)} " + ", ".join(map(str, numbers[:8])) + more

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "size"}
        whole = self.by == "whole"
        return out | {
            "n": self.n,
            "indices": [] if whole else self.indices.tolist(),
            "patients": self.patients.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StoreSplit:
        data = dict(data)
        n = int(data.pop("n"))
        data["indices"] = np.asarray(data.get("indices", []), np.int64)
        data["patients"] = np.asarray(data.get("patients", []), np.int64)
        return cls(**data, size=n if data["by"] == "whole" else None)


def select_split(reader, split: str) -> StoreSplit:
    """The samples of ``split`` in the store ``reader`` holds open.

    By patient where the store knows its patients; by sample index otherwise (the same rule). A
    synthetic store (:func:`is_synthetic`) is training material only: 'all' and 'train' are the whole
    store, 'val' and 'test' an error.
    """
    if split not in SPLITS:
        raise ConfigError(f"Expected a split in {SPLITS}. Got {split!r} instead.")
    indices = reader.available_indices()
    identity = dict(
        url=reader.url,
        store_hash=store_hash(reader.attrs),
        split=split,
        subset_of=reader.attrs.provenance.get("subset_of"),
    )
    if is_synthetic(reader):
        if split in ("val", "test"):
            raise ConfigError(
                f"Expected split 'all' or 'train' of the synthetic store {reader.url} (build-dataset output: "
                f"no patients, nothing held out). Got {split!r} instead."
            )
        return StoreSplit(**identity, by="whole", indices=indices, patients=np.zeros(0, np.int64))
    try:
        patients = known_patients(reader)
    except StoreFormatError:  # some patients unknown: only 'all' needs none
        if split != "all":
            raise
        patients = None
    keep = split_mask(indices if patients is None else patients, split, store_rule(reader))
    return StoreSplit(
        **identity,
        by="sample" if patients is None else "patient",
        indices=indices[keep],
        patients=np.zeros(0, np.int64) if patients is None else patients[keep],
    )


@dataclass(frozen=True, eq=False)
class RunSplits:
    """What a segmenter trained on (one :class:`StoreSplit` per store of the mix) and validated on,
    written beside its weights as ``splits.json``. ``init``: what the checkpoint it started from
    (``train-seg --init``) trained and validated on, and that one's own ``init``, flattened: the new
    segmenter learned from those samples too."""

    train: tuple[StoreSplit, ...]
    val: StoreSplit
    init: tuple[StoreSplit, ...] = ()

    @property
    def learned_from(self) -> tuple[StoreSplit, ...]:
        """Every selection whose samples shaped the weights: the mix and everything its init saw."""
        return (*self.train, *self.init)

    def lineage(self) -> tuple[StoreSplit, ...]:
        """Everything this run saw (training, validation, its init's), as the ``init`` of a run started
        from its checkpoint."""
        return (*self.train, self.val, *self.init)

    def overlap(self, evaluated: StoreSplit) -> tuple[np.ndarray, np.ndarray]:
        """(trained, validated): which samples of ``evaluated`` the run (or its init) trained on / the
        run validated on."""
        trained = np.zeros(evaluated.n, bool)
        for seen in self.learned_from:
            trained |= seen.covers(evaluated)
        return trained, self.val.covers(evaluated)

    def to_dict(self) -> dict[str, Any]:
        out = {"train": [s.to_dict() for s in self.train], "val": self.val.to_dict()}
        return out | ({"init": [s.to_dict() for s in self.init]} if self.init else {})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSplits:
        init = tuple(StoreSplit.from_dict(s) for s in data.get("init", ()))
        return cls(
            tuple(StoreSplit.from_dict(s) for s in data["train"]), StoreSplit.from_dict(data["val"]), init
        )

    def write(self, folder: str | Path) -> None:
        atomic_write(Path(folder) / RUN_SPLITS_JSON, json.dumps(self.to_dict(), separators=(",", ":")) + "\n")

    @classmethod
    def read(cls, folder: str | Path, train_config: Mapping[str, Any]) -> RunSplits | None:
        """The record in a checkpoint ``folder``. A checkpoint older than the record read its training
        and validation stores whole (``train_config`` names them); None where it names none."""
        path = Path(folder) / RUN_SPLITS_JSON
        if path.is_file():
            try:
                return cls.from_dict(json.loads(path.read_text()))
            except (KeyError, TypeError, ValueError) as e:
                raise CheckpointError(
                    f"Expected a train-seg record of splits in {path}. Got a malformed one ({e!r}): retrain."
                ) from e
        if not train_config.get("train") or not train_config.get("val"):
            return None
        empty = np.zeros(0, np.int64)

        def whole(url: str) -> StoreSplit:
            return StoreSplit(url, "", "all", "whole", empty, empty)

        from synthgen.storage.loader import parse_mix  # the loader imports torch: only here

        return cls(tuple(whole(m.url) for m in parse_mix(train_config["train"])), whole(train_config["val"]))
