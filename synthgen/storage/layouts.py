"""Finding the image/label pairs of a dataset in the folder layouts people download.

``camus``: ``patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz`` (or ``.mhd`` of the older release).
``acdc``: ``patientNNN/patientNNN_frameFF[_gt].nii.gz`` volumes, with ``Info.cfg`` giving ED/ES frames.
``pairs``: any folder of images and labels, the label of ``dir/name.ext`` found by naming patterns
relative to ``dir`` (``{name}_gt``, ``../labels/{name}``...), with any supported suffix. DICOM images
pair the same way: ``case.dcm`` with ``case_gt.png`` or ``case_gt.nii.gz`` beside it (a label file
of the same suffix is preferred where there are several; a DICOM label is refused when read). A
folder whose files are all DICOM (a DICOM suffix, or none and the ``DICM`` marker; ``DICOMDIR``
aside) is one image, a DICOM series, where a label volume is named after it by the same patterns,
the folder name standing for the image's name: ``patient01/`` (``IM0001.dcm``... or files without a
suffix) with ``patient01_gt.nii.gz`` or ``patient01_gt.mha`` beside it. A folder of DICOM files with no
such label keeps its files as images of their own.
``nnunet``: an nnU-Net v2 raw dataset folder: ``dataset.json`` (``channel_names``, ``labels`` by name,
``file_ending``), ``imagesTr/{case}_{XXXX}{file_ending}`` (one file per channel, ``_0000``, ``_0001``...)
and ``labelsTr/{case}{file_ending}``; the label schema comes from ``dataset.json``. The 2D NIfTI slices
that ``synthgen convert --to nnunet`` writes read back as they were; 3D volumes are sliced like ACDC's.

Discovery only lists files and pairs them: no file is opened except ACDC's small ``Info.cfg``,
nnU-Net's ``dataset.json`` and the first 132 bytes (the ``DICM`` marker) of suffix-less files in
folders otherwise all DICOM. Files no reader opens (NRRD, JPEG, a DICOM file without a ``.dcm``
suffix...; in the nnunet layout anything but ``file_ending``) are skipped; where one of them is the
missing half of a pair, or all a folder holds, the error names it as not a readable image format.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from synthgen.errors import ConfigError, InputDataError, SchemaError
from synthgen.schemas import LabelClass, LabelSchema
from synthgen.storage.readers import (
    DICOM_SUFFIXES,
    READ_FORMATS,
    SUFFIXES,
    bare_name,
    file_suffix,
    has_dicom_marker,
    not_read,
    strip_suffix,
)

LAYOUTS = ("camus", "acdc", "pairs", "nnunet")
DEFAULT_PATTERNS = ("{name}_gt", "{name}_label", "{name}_mask", "{name}_seg")
VIEWS = {0: "unknown", 1: "apical 2-chamber", 2: "apical 4-chamber", 3: "short axis"}
PHASES = {0: "unknown", 1: "end-diastole (ED)", 2: "end-systole (ES)"}

_CAMUS = re.compile(r"^patient(\d{4})_(2CH|4CH)_(ED|ES)(_gt)?\.(nii\.gz|nii|mhd)$")
_ACDC = re.compile(r"^patient(\d{3})_frame(\d{2})(_gt)?\.(nii\.gz|nii)$")
_NNUNET_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


@dataclass(frozen=True)
class SourcePair:
    """One image file and its label file, as paths relative to the source folder (POSIX style).

    ``channels``: the files of the image's further channels, where each channel is a file (nnU-Net)."""

    image: str
    label: str
    patient: int = -1
    view: int = 0
    phase: int = 0
    channels: tuple[str, ...] = ()

    @property
    def images(self) -> tuple[str, ...]:
        """Every file of the image, one per channel where channels are files."""
        return (self.image, *self.channels)


def list_files(root: Path, exclude: Path | None = None) -> list[str]:
    """Relative POSIX paths of every file under ``root`` with a supported suffix, sorted.

    Hidden folders, Zarr stores (folders holding ``zarr.json``) and ``exclude`` are skipped.
    """
    return _walk(root, exclude)[0]


def _walk(root: Path, exclude: Path | None) -> tuple[list[str], list[str]]:
    """:func:`list_files`, and the files it leaves out for their suffix (what no reader opens)."""
    found, skipped = [], []
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
            if not f.startswith("."):
                (found if file_suffix(f) is not None else skipped).append(f if rel == "." else f"{rel}/{f}")
    return sorted(found), sorted(skipped)


def dicom_folders(source: Path, files: Sequence[str], skipped: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Folders under ``source`` (not itself) whose every file is DICOM, each a possible DICOM series:
    folder -> its files (relative paths, from ``files`` and ``skipped`` as :func:`_walk` gives them)."""
    members: dict[str, list[str]] = {}
    for f in (*files, *skipped):
        if posixpath.dirname(f):
            members.setdefault(posixpath.dirname(f), []).append(f)
    found = {}
    for folder, fs in sorted(members.items()):
        slices = [f for f in fs if posixpath.basename(f).upper() != "DICOMDIR"]
        if slices and all(file_suffix(f) in (None, *DICOM_SUFFIXES) for f in slices):
            if all(file_suffix(f) is not None or has_dicom_marker(source / f) for f in slices):
                found[folder] = tuple(sorted(fs))
    return found


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


def _unread_partner(orphan: str, skipped: Sequence[str], patterns: Sequence[str]) -> str | None:
    """The skipped file that would be the image or the label of ``orphan`` under ``patterns``."""
    stem = strip_suffix(orphan)
    folder, name = posixpath.dirname(orphan), strip_suffix(posixpath.basename(orphan))
    its_labels = {posixpath.normpath(posixpath.join(folder, p.format(name=name))) for p in patterns}
    for s in skipped:
        s_folder, s_name = posixpath.dirname(s), bare_name(posixpath.basename(s))
        if posixpath.normpath(posixpath.join(s_folder, s_name)) in its_labels:
            return s
        if any(posixpath.normpath(posixpath.join(s_folder, p.format(name=s_name))) == stem for p in patterns):
            return s
    return None


def _label_of(image: str, name: str, by_stem: Mapping[str, list[str]], patterns: Sequence[str]) -> str | None:
    """The label of ``image`` (a file, or a series folder) whose name stands as ``name`` in ``patterns``."""
    folder = posixpath.dirname(image)
    for pattern in patterns:
        stem = posixpath.normpath(posixpath.join(folder, pattern.format(name=name)))
        candidates = [c for c in by_stem.get(stem, []) if c != image]
        if not candidates:
            continue
        same = [c for c in candidates if file_suffix(c) == file_suffix(image)]
        if len(same) != 1 and len(candidates) > 1:
            raise InputDataError(f"Expected one label for {image}. Got several: {candidates}.")
        return same[0] if same else candidates[0]
    return None


def _generic_pairs(
    files: Sequence[str],
    source: Path,
    patterns: Sequence[str],
    skipped: Sequence[str] = (),
    series: Mapping[str, Sequence[str]] | None = None,
) -> list[SourcePair]:
    by_stem: dict[str, list[str]] = {}
    for f in files:
        by_stem.setdefault(strip_suffix(f), []).append(f)
    series = series or {}
    series_labels = {}
    for folder in series:  # a DICOM folder with a label named after it is one image; else its files are
        label = _label_of(folder, posixpath.basename(folder), by_stem, patterns)
        if label is not None:
            series_labels[folder] = label
    in_series = {f for folder in series_labels for f in series[folder]}
    files = [f for f in files if f not in in_series]
    skipped = [f for f in skipped if f not in in_series]
    label_of: dict[str, str] = {}
    for f in files:
        label = _label_of(f, strip_suffix(posixpath.basename(f)), by_stem, patterns)
        if label is not None:
            label_of[f] = label
    used = set(label_of.values()) | set(series_labels.values())
    pairs = [SourcePair(f, label_of[f]) for f in files if f in label_of and f not in used]
    pairs = sorted(
        [*pairs, *(SourcePair(d, label) for d, label in series_labels.items())], key=lambda p: p.image
    )
    owners: dict[str, str] = {}
    for p in pairs:
        if p.label in owners:
            raise InputDataError(
                f"Expected each label to belong to one image. {p.label} matches {owners[p.label]} and {p.image}."
            )
        owners[p.label] = p.image
    orphans = [f for f in files if f not in label_of and f not in used]
    for orphan in orphans:
        partner = _unread_partner(orphan, skipped, patterns)
        if partner is not None:
            raise InputDataError(
                f"{not_read(partner, source / partner)}, so {orphan} has no partner to pair with in {source}. "
                "Convert that file or leave both out."
            )
    if orphans:
        looked = ", ".join(p.format(name=strip_suffix(posixpath.basename(orphans[0]))) for p in patterns)
        folder = posixpath.dirname(orphans[0])
        hint = (
            f" To read {folder}/ as one DICOM series, name its label after the folder "
            f"({posixpath.basename(folder)}_gt.nii.gz beside it)."
            if folder in series
            else ""
        )
        raise InputDataError(
            f"Image {orphans[0]} has no label in {source} ({len(orphans)} such file(s)): looked for {looked} "
            f"with any supported suffix. Pass --pattern to say how labels are named.{hint}"
        )
    if not pairs:
        raise InputDataError(f"Expected image/label pairs ({READ_FORMATS}) in {source}. Found none.")
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
    if layout == "nnunet":
        return layout, _select(_nnunet_pairs(source, nnunet_dataset(source)), source, include, limit)
    files, skipped = _walk(source, exclude)
    if not files:
        unread = f": {not_read(skipped[0], source / skipped[0])}" if skipped else ""
        raise InputDataError(
            f"Expected image and label files ({READ_FORMATS}) in {source}. The folder holds none{unread}."
        )
    layout = layout or detect_layout(files, source)
    if layout == "camus":
        pairs = _camus_pairs(files, source)
    elif layout == "acdc":
        pairs = _acdc_pairs(files, source)
    elif layout == "pairs":
        series = dicom_folders(source, files, skipped)
        pairs = _generic_pairs(files, source, parse_patterns(patterns), skipped, series)
    else:
        raise ConfigError(f"Expected a layout in {LAYOUTS}. Got {layout!r} instead.")
    return layout, _select(pairs, source, include, limit)


def _select(
    pairs: list[SourcePair], source: Path, include: Sequence[str], limit: int | None
) -> list[SourcePair]:
    if include:
        pairs = [p for p in pairs if any(fnmatch.fnmatchcase(p.image, g) for g in include)]
        if not pairs:
            raise InputDataError(
                f"Expected --include {list(include)} to match some images in {source}. None did."
            )
    return pairs[:limit] if limit is not None else pairs


# -- nnU-Net v2 raw dataset --------------------------------------------------------------------------
@dataclass(frozen=True)
class NnunetDataset:
    """What synthgen uses of an nnU-Net ``dataset.json``: channel names in channel order, the
    foreground labels (name, value) in value order, the file ending and the dataset's name."""

    channels: tuple[str, ...]
    labels: tuple[tuple[str, int], ...]
    file_ending: str
    name: str

    def schema(self) -> LabelSchema:
        """The label schema: background 0 and each named class at its value."""
        return LabelSchema(
            self.name,
            tuple(LabelClass(n, v) for n, v in self.labels),
            description="from the nnU-Net dataset.json labels",
        )


def _parse_channels(channels: object, where: str) -> tuple[str, ...]:
    keys = sorted(channels, key=lambda k: (len(str(k)), str(k))) if isinstance(channels, dict) else []
    if not keys or [str(k) for k in keys] != [str(c) for c in range(len(keys))]:
        raise InputDataError(
            f"Expected 'channel_names' in {where} to map '0', '1'... to channel names. Got {channels!r} instead."
        )
    return tuple(str(channels[k]) for k in keys)  # type: ignore[index]


def _parse_labels(labels: object, where: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(labels, dict) or labels.get("background") != 0:
        raise InputDataError(
            f"Expected 'labels' in {where} to map names to values with background 0. Got {labels!r} instead."
        )
    out = []
    for name, value in labels.items():
        if name == "background":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 255:
            raise InputDataError(
                f"Expected label values 1..255 in {where} (region labels are not read). Got {name!r}: {value!r}."
            )
        out.append((str(name), value))
    if not out:
        raise InputDataError(f"Expected foreground labels besides background in {where}. Got none.")
    return tuple(sorted(out, key=lambda nv: nv[1]))


def nnunet_dataset(source: Path) -> NnunetDataset:
    """The ``dataset.json`` of the nnU-Net raw dataset folder ``source``, checked."""
    path = source / "dataset.json"
    if not path.is_file():
        raise InputDataError(f"Expected an nnU-Net dataset.json in {source}. Found none: check the path.")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise InputDataError(f"Cannot read {path}: {type(e).__name__}. Expected nnU-Net's JSON.") from e
    if not isinstance(data, dict):
        raise InputDataError(f"Expected a JSON object in {path}. Got {type(data).__name__} instead.")
    ending = data.get("file_ending")
    endings = [s for s in SUFFIXES if s != ".mhd" and s not in DICOM_SUFFIXES]
    if not isinstance(ending, str) or file_suffix(ending) != ending.lower() or ending.lower() not in endings:
        raise InputDataError(
            f"Expected a 'file_ending' this layout reads ({', '.join(endings)}) in {path}. Got {ending!r} instead."
        )
    name = data.get("name")
    try:
        return NnunetDataset(
            _parse_channels(data.get("channel_names"), str(path)),
            _parse_labels(data.get("labels"), str(path)),
            ending,
            name if isinstance(name, str) and name.strip() else source.name,
        )
    except (ConfigError, SchemaError) as e:
        raise InputDataError(f"Cannot use the labels of {path}: {e}") from e


def _folder_files(folder: Path, source: Path) -> list[str]:
    if not folder.is_dir():
        raise InputDataError(f"Expected {folder.name}/ in the nnU-Net dataset {source}. Found none.")
    return sorted(f.name for f in folder.iterdir() if f.is_file() and not f.name.startswith("."))


def _nnunet_pairs(source: Path, dataset: NnunetDataset) -> list[SourcePair]:
    ending, n = dataset.file_ending, len(dataset.channels)
    reads = f"dataset.json's file_ending {ending}"
    cases: dict[str, dict[int, str]] = {}
    unread_images = []
    for f in _folder_files(source / "imagesTr", source):
        m = _NNUNET_CHANNEL.match(f[: -len(ending)]) if f.endswith(ending) else None
        if not f.endswith(ending):
            unread_images.append(f)
        elif m is None:
            raise InputDataError(
                f"Expected image files named CASE_XXXX{ending} (XXXX: the channel) in {source / 'imagesTr'}. "
                f"Got {f}."
            )
        else:
            cases.setdefault(m.group(1), {})[int(m.group(2))] = f
    label_files = _folder_files(source / "labelsTr", source)
    labels = {f[: -len(ending)]: f for f in label_files if f.endswith(ending)}
    unread_labels = [f for f in label_files if not f.endswith(ending)]
    pairs = []
    for case in sorted(cases):
        found = sorted(cases[case])
        if found != list(range(n)):
            raise InputDataError(
                f"Expected {n} channel file(s) per case ({case}_0000..{case}_{n - 1:04d}{ending}, as dataset.json's "
                f"channel_names say). Case {case} has {', '.join(f'_{c:04d}' for c in found)}."
            )
        if case not in labels:
            other = [f for f in unread_labels if bare_name(f) == case]
            if other:
                raise InputDataError(
                    f"{not_read('labelsTr/' + other[0], source / 'labelsTr' / other[0], reads)}."
                )
            raise InputDataError(f"Case {case} has no label in {source}: expected labelsTr/{case}{ending}.")
        files = tuple(f"imagesTr/{cases[case][c]}" for c in range(n))
        pairs.append(SourcePair(files[0], f"labelsTr/{labels[case]}", channels=files[1:]))
    orphans = sorted(set(labels) - set(cases))
    if orphans:
        label = f"labelsTr/{labels[orphans[0]]}"
        other = [f for f in unread_images if bare_name(f).startswith(orphans[0] + "_")]
        if other:
            unread = not_read("imagesTr/" + other[0], source / "imagesTr" / other[0], reads)
            raise InputDataError(f"{unread}, so {label} has no image in {source}.")
        raise InputDataError(
            f"Label {label} has no image in {source}: expected imagesTr/{orphans[0]}_0000{ending}."
        )
    if not pairs:
        unread = (
            f": {not_read('imagesTr/' + unread_images[0], source / 'imagesTr' / unread_images[0], reads)}"
        )
        raise InputDataError(
            f"Expected training cases (imagesTr/CASE_0000{ending}) in {source}. Found none"
            f"{unread if unread_images else ''}."
        )
    return pairs
