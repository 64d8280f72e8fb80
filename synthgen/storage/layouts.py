"""Finding the image/label pairs of a dataset in the folder layouts people download.

``camus``: ``patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz`` (or ``.mhd`` of the older release).
``acdc``: ``patientNNN/patientNNN_frameFF[_gt].nii.gz`` volumes, with ``Info.cfg`` giving ED/ES frames.
``pairs``: any folder of images and labels, the label of ``dir/name.ext`` found by naming patterns
relative to ``dir`` (``{name}_gt``, ``../labels/{name}``...), with any supported suffix.

Discovery only lists files and pairs them: no file is opened except ACDC's small ``Info.cfg``.
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from synthgen.errors import ConfigError, InputDataError
from synthgen.storage.readers import file_suffix, strip_suffix

LAYOUTS = ("camus", "acdc", "pairs")
DEFAULT_PATTERNS = ("{name}_gt", "{name}_label", "{name}_mask", "{name}_seg")
VIEWS = {0: "unknown", 1: "apical 2-chamber", 2: "apical 4-chamber", 3: "short axis"}
PHASES = {0: "unknown", 1: "end-diastole (ED)", 2: "end-systole (ES)"}

_CAMUS = re.compile(r"^patient(\d{4})_(2CH|4CH)_(ED|ES)(_gt)?\.(nii\.gz|nii|mhd)$")
_ACDC = re.compile(r"^patient(\d{3})_frame(\d{2})(_gt)?\.(nii\.gz|nii)$")


@dataclass(frozen=True)
class SourcePair:
    """One image file and its label file, as paths relative to the source folder (POSIX style)."""

    image: str
    label: str
    patient: int = -1
    view: int = 0
    phase: int = 0


def list_files(root: Path, exclude: Path | None = None) -> list[str]:
    """Relative POSIX paths of every file under ``root`` with a supported suffix, sorted.

    Hidden folders, Zarr stores (folders holding ``zarr.json``) and ``exclude`` are skipped.
    """
    found = []
    exclude_abs = exclude.resolve() if exclude is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and not (here / d / "zarr.json").exists()
            and (exclude_abs is None or (here / d).resolve() != exclude_abs)
        )
        rel = here.relative_to(root).as_posix()
        for f in filenames:
            if not f.startswith(".") and file_suffix(f) is not None:
                found.append(f if rel == "." else f"{rel}/{f}")
    return sorted(found)


def detect_layout(files: Sequence[str], source: Path) -> str:
    """``camus`` or ``acdc`` when the file names say so unambiguously, else ``pairs``."""
    names = [posixpath.basename(f) for f in files]
    camus = sum(bool(_CAMUS.match(n)) for n in names)
    acdc = sum(bool(_ACDC.match(n)) for n in names)
    if camus and acdc:
        raise InputDataError(
            f"Expected one dataset layout in {source}. Got {camus} CAMUS-named and {acdc} ACDC-named files: "
            "pass --layout camus, acdc or pairs."
        )
    return "camus" if camus else "acdc" if acdc else "pairs"


def _pair_by_regex(files: Sequence[str], regex: re.Pattern, label_group: int, source: Path, what: str):
    """Group files whose names match ``regex`` into (image, label) by name without ``_gt``."""
    images: dict[str, tuple[str, re.Match]] = {}
    labels: dict[str, str] = {}
    for f in files:
        m = regex.match(posixpath.basename(f))
        if m is None:
            continue
        key = posixpath.join(posixpath.dirname(f), strip_suffix(posixpath.basename(f)).removesuffix("_gt"))
        table = labels if m.group(label_group) else images
        if key in table:
            other = table[key] if table is labels else table[key][0]
            raise InputDataError(f"Expected one file per name in {source}. Got both {other} and {f}.")
        table[key] = f if table is labels else (f, m)
    if not images and not labels:
        raise InputDataError(
            f"Expected {what} files in {source}. Found none: check the path or pass --layout."
        )
    for key, (image, _) in images.items():
        if key not in labels:
            expected = f"{posixpath.basename(key)}_gt{file_suffix(image)}"
            raise InputDataError(f"Image {image} has no label in {source}: expected {expected} beside it.")
    for key, label in labels.items():
        if key not in images:
            raise InputDataError(
                f"Label {label} has no image in {source}: expected the same name without _gt."
            )
    return [(images[k][0], labels[k], images[k][1]) for k in sorted(images)]


def _camus_pairs(files: Sequence[str], source: Path) -> list[SourcePair]:
    what = "CAMUS (patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz or .mhd)"
    return [
        SourcePair(
            image, label, int(m.group(1)), 1 if m.group(2) == "2CH" else 2, 1 if m.group(3) == "ED" else 2
        )
        for image, label, m in _pair_by_regex(files, _CAMUS, 4, source, what)
    ]


def _acdc_phases(folder: Path) -> dict[int, int]:
    """Frame number -> phase code from ACDC's ``Info.cfg`` (``ED: 1`` / ``ES: 12``); empty if absent."""
    cfg = folder / "Info.cfg"
    phases: dict[int, int] = {}
    if not cfg.is_file():
        return phases
    for line in cfg.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("ED", "ES") and value.strip().isdigit():
            phases[int(value)] = 1 if key.strip() == "ED" else 2
    return phases


def _acdc_pairs(files: Sequence[str], source: Path) -> list[SourcePair]:
    what = "ACDC (patientNNN_frameFF[_gt].nii.gz)"
    pairs, phases = [], {}
    for image, label, m in _pair_by_regex(files, _ACDC, 3, source, what):
        folder = posixpath.dirname(image)
        if folder not in phases:
            phases[folder] = _acdc_phases(source / folder)
        phase = phases[folder].get(int(m.group(2)), 0)
        pairs.append(SourcePair(image, label, int(m.group(1)), 3, phase))
    return pairs


def _generic_pairs(files: Sequence[str], source: Path, patterns: Sequence[str]) -> list[SourcePair]:
    by_stem: dict[str, list[str]] = {}
    for f in files:
        by_stem.setdefault(strip_suffix(f), []).append(f)
    label_of: dict[str, str] = {}
    for f in files:
        folder, name = posixpath.dirname(f), strip_suffix(posixpath.basename(f))
        for pattern in patterns:
            stem = posixpath.normpath(posixpath.join(folder, pattern.format(name=name)))
            candidates = [c for c in by_stem.get(stem, []) if c != f]
            if not candidates:
                continue
            same = [c for c in candidates if file_suffix(c) == file_suffix(f)]
            if len(same) != 1 and len(candidates) > 1:
                raise InputDataError(f"Expected one label for {f}. Got several: {candidates}.")
            label_of[f] = same[0] if same else candidates[0]
            break
    used = set(label_of.values())
    pairs = [SourcePair(f, label_of[f]) for f in files if f in label_of and f not in used]
    owners: dict[str, str] = {}
    for p in pairs:
        if p.label in owners:
            raise InputDataError(
                f"Expected each label to belong to one image. {p.label} matches {owners[p.label]} and {p.image}."
            )
        owners[p.label] = p.image
    orphans = [f for f in files if f not in label_of and f not in used]
    if orphans:
        looked = ", ".join(p.format(name=strip_suffix(posixpath.basename(orphans[0]))) for p in patterns)
        raise InputDataError(
            f"Image {orphans[0]} has no label in {source} ({len(orphans)} such file(s)): looked for {looked} "
            "with any supported suffix. Pass --pattern to say how labels are named."
        )
    if not pairs:
        raise InputDataError(
            f"Expected image/label pairs (PNG, TIFF, NIfTI, MetaImage or .npy) in {source}. Found none."
        )
    return pairs


def parse_patterns(patterns: Sequence[str]) -> tuple[str, ...]:
    for p in patterns:
        try:
            ok = "{name}" in p and p.format(name="x") != "x"
        except (KeyError, IndexError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(
                f"Expected a label naming pattern with {{name}} and nothing else in braces, like '{{name}}_gt' "
                f"or '../labels/{{name}}'. Got {p!r} instead."
            )
    return tuple(patterns)


def discover(
    source: Path,
    layout: str | None = None,
    *,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    include: Sequence[str] = (),
    limit: int | None = None,
    exclude: Path | None = None,
) -> tuple[str, list[SourcePair]]:
    """The layout (detected when ``layout`` is None) and the sorted pairs of ``source``.

    ``include`` keeps pairs whose image path matches one of the globs; ``limit`` keeps the first ones.
    """
    if not source.is_dir():
        raise InputDataError(f"Expected SOURCE to be a folder. {source} is not one.")
    files = list_files(source, exclude)
    if not files:
        raise InputDataError(
            f"Expected image and label files (NIfTI, MetaImage, PNG, TIFF or .npy) in {source}. "
            "The folder holds none."
        )
    layout = layout or detect_layout(files, source)
    if layout == "camus":
        pairs = _camus_pairs(files, source)
    elif layout == "acdc":
        pairs = _acdc_pairs(files, source)
    elif layout == "pairs":
        pairs = _generic_pairs(files, source, parse_patterns(patterns))
    else:
        raise ConfigError(f"Expected a layout in {LAYOUTS}. Got {layout!r} instead.")
    if include:
        pairs = [p for p in pairs if any(fnmatch.fnmatchcase(p.image, g) for g in include)]
        if not pairs:
            raise InputDataError(
                f"Expected --include {list(include)} to match some images in {source}. None did."
            )
    return layout, pairs[:limit] if limit is not None else pairs
