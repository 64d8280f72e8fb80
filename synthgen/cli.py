"""The ``synthgen`` command line. Thin: each command parses options, builds one config, calls one function.

Heavy libraries (torch, dask, zarr) are imported inside the commands so that ``synthgen --help`` is instant.
A :class:`~synthgen.errors.SynthgenError` becomes one line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import sys

import click

from synthgen import __version__
from synthgen.errors import SynthgenError


class _Group(click.Group):
    """Every failure a user can cause ends as one line ``synthgen: error: ...`` and a non-zero exit:
    synthgen's own errors (1), click's usage errors (2), a full disk or another system error (1), and
    anything unexpected (1; ``SYNTHGEN_DEBUG=1`` shows the traceback)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            _fail("interrupted", 130)
        except click.ClickException as e:
            _fail(f"{e.format_message()} (see 'synthgen --help')", e.exit_code)
        except SynthgenError as e:
            _fail(str(e), 1)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except OSError as e:  # a full disk, a file-size limit, a permission...
            _debug()
            _fail(f"{e.strerror or e} ({e.filename})" if e.filename else f"{e.strerror or e}", 1)
        except Exception as e:
            _debug()
            _fail(f"unexpected {type(e).__name__}: {e} (SYNTHGEN_DEBUG=1 shows where)", 1)


def _debug() -> None:
    if os.environ.get("SYNTHGEN_DEBUG") == "1":
        import traceback

        traceback.print_exc()


def _fail(message: str, status: int) -> None:
    lines = str(message).strip().splitlines() or ["failed"]
    first = lines[0]
    if first.startswith("Caught ") and "worker process" in first and len(lines) > 1:
        first = lines[-1].split(": ", 1)[-1]  # a DataLoader worker's error: its own message, last
    click.echo(f"synthgen: error: {first}", err=True)
    sys.exit(status)


def _use_fast_codecs() -> None:
    """The zarrs codec pipeline for this process: every command that reads or writes stores calls this."""
    from synthgen.storage import use_fast_codecs

    use_fast_codecs()


def _set_storage_options(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> None:
    """The one handling of --storage-option: ``KEY=VALUE`` (a string) or ``KEY:=JSON`` (a number,
    true/false, an object...); a dotted KEY nests (``config_kwargs.connect_timeout:=2``). The options
    go to every remote store the command opens, in this process and in those it starts."""
    if not values:
        return
    import json

    from synthgen.storage import set_storage_options

    options: dict = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key.rstrip(":"):
            raise click.BadParameter(f"Expected KEY=VALUE or KEY:=JSON. Got {text!r} instead.", param=param)
        if key.endswith(":"):
            key = key[:-1]
            try:
                value = json.loads(value)
            except ValueError as e:
                raise click.BadParameter(f"Expected JSON after '{key}:='. Got {value!r} instead.") from e
        *parents, last = key.split(".")
        node = options
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise click.BadParameter(
                    f"Expected {part!r} to hold options. It is set to a value: {text!r}."
                )
        node[last] = value
    set_storage_options(options)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synthgen")
@click.option(
    "--storage-option",
    multiple=True,
    metavar="KEY=VALUE",
    expose_value=False,
    callback=_set_storage_options,
    help="fsspec option for remote stores (s3://...), before the command: endpoint_url=http://host:9000, "
    "key=..., secret=...; KEY:=JSON for numbers, true/false, objects; dots nest "
    "(config_kwargs.connect_timeout:=2). Repeatable. Worker processes get them too.",
)
def cli() -> None:
    """synthgen: paired image/label synthesis for medical segmentation, into sharded Zarr stores."""


@cli.command("ingest")
@click.argument("source", type=click.Path(file_okay=False))
@click.argument("out")
@click.option(
    "--layout",
    type=click.Choice(["camus", "acdc", "pairs", "nnunet"]),
    help="Default: detected from file names (camus, acdc or pairs); nnunet reads an nnU-Net v2 raw dataset "
    "folder (dataset.json, imagesTr/CASE_0000, labelsTr/CASE).",
)
@click.option(
    "--schema",
    help="Label schema preset (camus, acdc, mmwhs) or .toml/.json file. Default: the layout's "
    "(nnunet: dataset.json's labels).",
)
@click.option(
    "--size",
    nargs=2,
    type=int,
    metavar="H W",
    help="Stretch every slice to H x W (labels nearest, images linear). Not with --spacing or --pad-or-crop.",
)
@click.option(
    "--spacing",
    nargs=2,
    type=float,
    metavar="MM MM",
    help="Resample to this (row, col) pixel size in mm, from the spacing in each file's header (as MONAI "
    "Spacingd: images linear, labels nearest). Before --pad-or-crop.",
)
@click.option(
    "--pad-or-crop",
    nargs=2,
    type=int,
    metavar="H W",
    help="Pad with 0 or crop about the centre to H x W, keeping the aspect ratio (as MONAI ResizeWithPadOrCrop).",
)
@click.option("--shard-size", default=256, show_default=True, help="Samples per shard.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is an existing Zarr store.")
@click.option(
    "--pattern",
    "patterns",
    multiple=True,
    help="pairs layout: where the label of DIR/NAME.ext is, relative to DIR, e.g. '{name}_gt' or "
    "'../labels/{name}' (any supported suffix). Repeatable. Default: {name}_gt, _label, _mask, _seg.",
)
@click.option(
    "--include", multiple=True, help="Keep images whose relative path matches this glob. Repeatable."
)
@click.option("--limit", type=int, help="Keep only the first N image/label pairs (sorted by path).")
@click.option(
    "--test-remainder",
    default=0,
    show_default=True,
    metavar="R",
    help="Held-out test patients: number % 10 == R (validation: == 5), for every split of this store. The "
    "shared copy of ACDC lacks the patients % 10 == 0: ingest it with 1.",
)
def ingest_command(
    source,
    out,
    layout,
    schema,
    size,
    spacing,
    pad_or_crop,
    shard_size,
    overwrite,
    patterns,
    include,
    limit,
    test_remainder,
) -> None:
    """Ingest a labelled dataset (CAMUS, ACDC, nnU-Net, or image/label pairs, DICOM images among them) in
    SOURCE into a store at OUT. NIfTI comes reoriented to RAS+ (the slice axis kept); then --spacing,
    then --pad-or-crop."""
    from synthgen.storage import DEFAULT_PATTERNS, IngestConfig, ingest

    _use_fast_codecs()

    config = IngestConfig(
        source=source,
        out=out,
        layout=layout,
        schema=schema,
        size=tuple(size) if size else None,
        spacing=tuple(spacing) if spacing else None,
        pad_or_crop=tuple(pad_or_crop) if pad_or_crop else None,
        shard_size=shard_size,
        overwrite=overwrite,
        patterns=tuple(patterns) or DEFAULT_PATTERNS,
        include=tuple(include),
        limit=limit,
        test_remainder=test_remainder,
    )
    result = ingest(config)
    lay = result.attrs.layout
    click.echo(
        f"Ingested {lay.n} samples ({result.layout} layout, {' x '.join(map(str, lay.image_shape))} "
        f"{lay.image_dtype}, schema {result.attrs.schema.name}) into {out} in {lay.num_shards} shards "
        f"in {result.seconds:.1f} s."
    )


@cli.command("inspect")
@click.argument("store")
@click.option(
    "--preview", type=click.Path(dir_okay=False), help="Write a PNG grid of samples with label overlays."
)
@click.option(
    "--n", "n", default=16, show_default=True, type=click.IntRange(1), help="Samples in the preview."
)
@click.option(
    "--max-shards",
    default=64,
    show_default=True,
    type=click.IntRange(1),
    help="Count class frequencies over at most this many shards.",
)
def inspect_command(store, preview, n, max_shards) -> None:
    """Summarise a synthgen store: samples, shards, shapes, schema, class frequencies, provenance."""
    from synthgen.storage import StoreReader, format_summary, summarize_store, write_preview

    _use_fast_codecs()

    reader = StoreReader(store)
    click.echo(format_summary(summarize_store(reader, max_shards=max_shards)))
    if preview:
        shown = write_preview(reader, preview, n=n)
        click.echo(f"preview      {preview} ({len(shown)} samples)")


@cli.command("verify")
@click.argument("store")
@click.option(
    "--repair", is_flag=True, help="Unlist damaged shards, so that rerunning the build rewrites them."
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify_command(store, repair, quiet) -> None:
    """Check every complete shard of STORE: its files against the digest recorded when it was written,
    and that every chunk decodes (zstd checksums). Exit status 1 where a shard is damaged (0 once
    --repair has unlisted them)."""
    from synthgen.storage import verify_store

    _use_fast_codecs()
    report = verify_store(store, repair=repair, progress=not quiet)
    for line in report.lines():
        click.echo(line)
    if not report.intact and not report.repaired:
        sys.exit(1)


@cli.command("convert")
@click.argument("store")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--to", "to", required=True, type=click.Choice(["nnunet", "nifti", "png"]), help="Output format."
)
@click.option("--split", is_flag=True, help="nnunet: held-out test patients to imagesTs/labelsTs.")
@click.option(
    "--dataset-id", type=int, help="nnunet: write OUT/DatasetXXX_NAME (OUT is nnUNet_raw). Default: into OUT."
)
@click.option("--name", help="nnunet: the NAME of DatasetXXX_NAME (with --dataset-id).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if an earlier 'synthgen convert' wrote it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def convert_command(store, out, to, split, dataset_id, name, overwrite, quiet) -> None:
    """Convert the complete shards of STORE into an nnU-Net v2 raw dataset, NIfTI or PNG files in OUT.

    Written into a scratch folder and renamed to OUT at the end: a failure leaves OUT as it was.
    """
    from synthgen.storage import ConvertConfig, convert_store

    _use_fast_codecs()
    config = ConvertConfig(store, out, to, split, dataset_id, name, overwrite)
    for line in convert_store(config, progress=not quiet).lines():
        click.echo(line)


@cli.command("build-dataset")
@click.option("--out", required=True, help="Output store: a path or fsspec URL (memory://, s3://...).")
@click.option(
    "--n",
    "n",
    type=int,
    default=None,
    help="Number of samples [default: 10000]; more than a store of the same build holds grows it.",
)
@click.option(
    "--seed", type=int, default=None, help="Root seed: sample i derives from (seed, i) [default: 0]."
)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="Build config TOML."
)
@click.option("--preset", default=None, help="echo (default), sa-mr or ct: a complete starting config.")
@click.option(
    "--scheduler",
    default="threads",
    show_default=True,
    help="sync, threads, processes or tcp://host:port (threads: the kernels and ONNX Runtime release the GIL).",
)
@click.option("--workers", type=int, default=2, show_default=True, help="Local threads or processes.")
@click.option("--image-size", type=(int, int), default=None, help="H W [default: the generator's, 128 128].")
@click.option("--shard-size", type=int, default=None, help="Samples per shard [default: 256].")
@click.option("--source", "source_kind", default=None, help="Label source kind: procedural, store or volume.")
@click.option(
    "--source-url", default=None, help="Store (for --source store) or volume file (for --source volume)."
)
@click.option(
    "--source-split",
    type=click.Choice(["all", "train"]),
    default=None,
    help="--source store: draw from every patient or the train patients (no held-out test tenth) [default: all].",
)
@click.option("--view", default=None, help="Procedural view: apical, a4c, a2c, short_axis, ct_axial.")
@click.option(
    "--generator",
    default=None,
    help="Generator checkpoint folder, or 'randomised' (images drawn from the label maps alone) "
    "[default: the preset's bundled one].",
)
@click.option(
    "--backend",
    default=None,
    help="auto, torch, torch-compile, onnxruntime (FP32), onnxruntime-int8 (quantised; refused below "
    "35 dB PSNR from FP32) or tensorrt [default: auto].",
)
@click.option("--batch-size", type=int, default=None, help="Generator batch size [default: 32].")
@click.option(
    "--dtype", "image_dtype", default=None, help="uint8, uint16, float16 or float32 [default: uint8]."
)
@click.option("--gate/--no-gate", default=None, help="Reject implausible label maps [default: on].")
@click.option("--max-attempts", type=int, default=None, help="Draws per sample before the gate gives up.")
@click.option("--deform/--no-deform", default=None, help="Elastic + affine label deformation [default: on].")
@click.option("--max-displacement", type=float, default=None, help="Largest elastic displacement, pixels.")
@click.option("--spacing", type=float, default=None, help="Elastic control-point spacing, pixels.")
@click.option("--sector-mask/--no-sector-mask", default=None, help="Blank outside the echo sector.")
@click.option(
    "--appearance/--no-appearance",
    "appearance_enabled",
    default=None,
    help="Randomise gamma, contrast, blur, bias, noise and the echo sector after the generator "
    "(config [appearance]) [default: on].",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace an existing output instead of resuming or growing it."
)
@click.option("--dry-run", is_flag=True, help="Print the plan (shards, size, estimated time) and stop.")
@click.option(
    "--max-give-up",
    type=float,
    default=0.01,
    show_default=True,
    help="Stop when more than this fraction of samples ran out of gate attempts (they are flagged).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build_dataset_cmd(
    out, config_path, scheduler, workers, overwrite, dry_run, max_give_up, quiet, **flags
) -> None:
    """Stream deformed-label / generated-image pairs into a Zarr store (resumes an interrupted build;
    a larger --n grows a finished one)."""
    from synthgen.engine import RunOptions, build_dataset, plan_build
    from synthgen.schemas import load_build_config

    _use_fast_codecs()
    source = {k: v for k, v in (("kind", flags.pop("source_kind")), ("url", flags.pop("source_url"))) if v}
    for key in ("view", "source_split"):
        if flags.get(key):
            source[key.removeprefix("source_")] = flags[key]
        flags.pop(key)
    deform = {k: flags.pop(k) for k in ("max_displacement", "spacing")}
    deform["enabled"] = flags.pop("deform")
    appearance = {"enabled": flags.pop("appearance_enabled")}
    overrides = dict(flags) | {"deform": {k: v for k, v in deform.items() if v is not None}}
    overrides["appearance"] = {k: v for k, v in appearance.items() if v is not None}
    if source:
        overrides["source"] = source
    config = load_build_config(config_path, overrides)
    options = RunOptions(
        scheduler=scheduler, workers=workers, overwrite=overwrite, progress=not quiet, max_give_up=max_give_up
    )
    if dry_run:
        for line in plan_build(out, config, options).lines():
            click.echo(line)
        return
    summary = build_dataset(out, config, options)
    for line in summary.lines():
        click.echo(line)


def _options(*options):
    """One decorator applying click ``options`` in the order given (the order ``--help`` lists them)."""

    def apply(f):
        for option in reversed(options):
            f = option(f)
        return f

    return apply


_SEED = click.option("--seed", type=int, help="Root seed (default 0).")
_DEVICE = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Default: cuda if present."
)


def _set_torch_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    """The one handling of --threads: sets torch's thread count for the whole command."""
    if value:
        import torch

        torch.set_num_threads(value)


_THREADS = click.option(
    "--threads",
    type=int,
    expose_value=False,
    callback=_set_torch_threads,
    help="CPU threads for torch (default: torch's choice).",
)
_PROGRESS = click.option("--progress/--no-progress", default=True, help="Show progress bars.")
# the run options of the generative trainers (train-gan, train-shape)
_RUN_OPTIONS = _options(
    click.option("--resume", is_flag=True, help="Continue the run in OUT_DIR from its last checkpoint."),
    click.option(
        "--split", type=click.Choice(["all", "train", "test"]), help="'train' holds out test patients."
    ),
    _SEED,
    click.option("--sample-every", type=int, help="Write a sample grid every N steps (default 200)."),
    click.option("--checkpoint-every", type=int, help="Write a checkpoint every N steps (default 200)."),
    _DEVICE,
    _THREADS,
    _PROGRESS,
)


@cli.command("train-gan")
@click.argument("store")
@click.argument("out_dir")
@click.option(
    "--arch", type=click.Choice(["spade", "pix2pix", "cyclegan"]), help="Architecture. Default: spade."
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON training config.")
@click.option("--steps", type=int, help="Total training steps (default 1000).")
@click.option("--image-size", type=int, help="Train at S x S (default 128); the store is resized.")
@click.option("--batch-size", type=int, help="Default 8.")
@click.option("--lr-g", type=float, help="Generator learning rate (default 2e-4).")
@click.option("--lr-d", type=float, help="Discriminator learning rate (default 2e-4).")
@click.option("--lr-decay-steps", type=int, help="Decay the rates linearly to 0 over the last N steps.")
@click.option("--augment/--no-augment", default=None, help="Small random affine warps of image and labels.")
@click.option("--width", type=int, help="Generator channels at full resolution (U-Net: first level).")
@click.option("--max-width", type=int, help="Generator channel cap.")
@click.option("--depth", type=int, help="Number of resolution levels of the generator.")
@click.option(
    "--style-dim", type=int, help="Length of the style vector (SPADE; pix2pix: 0, the default, for none)."
)
@click.option("--style-encoder/--no-style-encoder", default=None, help="SPADE: VAE style encoder.")
@click.option("--spectral-norm/--no-spectral-norm", default=None, help="Spectral norm in training.")
@click.option("--lambda-l1", type=float, help="Weight of the L1 loss to the real image.")
@click.option(
    "--disc-scales", type=int, help="Discriminators at 1, 1/2, 1/4 ... of the image (SPADE 2; pix2pix 1)."
)
@click.option("--lambda-fm", type=float, help="Weight of feature matching (SPADE 10; pix2pix 0, off).")
@_RUN_OPTIONS
def train_gan_command(store, out_dir, arch, config_file, resume, progress, **options) -> None:
    """Train a mask-conditioned GAN on the pairs of STORE; checkpoints, samples and losses go to OUT_DIR.

    The label count, schema, channels and intensity convention come from STORE. Options override
    --config (or, with --resume, the checkpoint's config: only --steps and intervals may change).
    """
    import json
    from pathlib import Path

    from synthgen.errors import ConfigError
    from synthgen.trainers import merge_config, resume_config, train_gan

    _use_fast_codecs()
    model_keys = (
        "width", "max_width", "depth", "style_dim", "style_encoder", "spectral_norm", "lambda_l1",
        "disc_scales", "lambda_fm",
    )  # fmt: skip
    model_options = {k: options.pop(k) for k in model_keys}
    base = None
    if resume:
        base = resume_config(out_dir)
    elif config_file:
        try:
            base = json.loads(Path(config_file).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"Cannot read the training config {config_file}: {e}.") from e
    config = merge_config(base, options | {"store": store, "out_dir": out_dir}, model_options, arch)
    result = train_gan(config, resume=resume, progress=progress)
    click.echo(
        f"Trained {config.model.arch} to step {result.step} in {result.seconds:.1f} s; "
        f"generator and training state in {result.checkpoint}."
    )


@cli.command("export")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(["onnx", "tensorrt"]), default="onnx", show_default=True)
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Default: CHECKPOINT/generator.onnx; engines: the cache."
)
@click.option(
    "--fp16", is_flag=True, help="TensorRT: FP16 arithmetic (normalisation and last conv stay FP32)."
)
@click.option("--fp16-all-layers", is_flag=True, help="TensorRT with --fp16: FP16 in those layers too.")
@click.option("--max-batch", default=64, show_default=True, help="TensorRT: largest batch of the engine.")
@click.option("--opset", default=18, show_default=True, help="ONNX opset (17 or later).")
@click.option("--tolerance", default=1e-3, show_default=True, help="Refuse an ONNX export that differs more.")
def export_command(checkpoint, fmt, out, fp16, fp16_all_layers, max_batch, opset, tolerance) -> None:
    """Export the generator CHECKPOINT to ONNX (checked against torch) or to a TensorRT engine.

    For TensorRT, CHECKPOINT may also be an .onnx written by this command.
    """
    if fmt == "onnx":
        from synthgen.inference import OnnxExportConfig, export_onnx

        art = export_onnx(OnnxExportConfig(checkpoint, out=out, opset=opset, tolerance=tolerance))
        click.echo(
            f"Exported {art.spec.arch} to {art.path} (opset {art.opset}, dynamic batch); max |ONNX - torch| = "
            f"{art.max_abs_diff:.2e}; {art.onnx_hash}"
        )
        return
    from synthgen.inference import TensorRTExportConfig, export_tensorrt

    config = TensorRTExportConfig(
        checkpoint, out=out, fp16=fp16, fp32_sensitive=not fp16_all_layers, max_batch=max_batch
    )
    art = export_tensorrt(config)
    click.echo(
        f"TensorRT engine for {art.gpu} (TensorRT {art.tensorrt_version}, {art.options}) at {art.path}"
    )


def _seg_train_options(f):
    """Options shared by train-seg and evaluate utility (the segmenter and its training budget)."""
    options = [
        click.option("--arch", type=click.Choice(["unet", "lite"]), help="Segmenter (default unet)."),
        click.option("--width", type=int, help="Channels at full resolution (default 16)."),
        click.option("--depth", type=int, help="Resolution levels (default 4)."),
        click.option(
            "--image-size", type=(int, int), help="Train at H W (default 64 64); stores are resized."
        ),
        click.option("--batch-size", type=int, help="Default 16."),
        click.option("--steps", type=int, help="Training steps (default 1000)."),
        click.option("--val-every", type=int, help="Validate every N steps (default 100)."),
        click.option("--lr", type=float, help="Peak learning rate, AdamW, polynomial decay (default 2e-3)."),
        _SEED,
        click.option("--workers", "num_workers", type=int, help="DataLoader worker processes (default 0)."),
        _DEVICE,
        click.option(
            "--augment",
            type=click.Choice(["none", "light", "strong"]),
            is_flag=False,
            flag_value="light",
            help="Augmentation of image and labels: none, light (small affine + intensity) or strong "
            "(nnU-Net's set) [default: strong for train-seg, light for evaluate utility].",
        ),
        click.option("--no-augment", is_flag=True, hidden=True, help="Same as --augment none."),
        click.option(
            "--normalise",
            type=click.Choice(["none", "percentile", "zscore"]),
            help="Per-image intensity normalisation after augmentation: percentile (clip to the 0.5 and "
            "99.5th percentiles, scale to [0, 1]) or zscore (nnU-Net's for MR) [default: none]; "
            "recorded in the spec, and evaluate seg applies it.",
        ),
        _THREADS,
        _PROGRESS,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _seg_train_config(options: dict, default_augment: str = "strong", **fixed):
    """A SegTrainConfig from the shared options (None = default; ``--augment`` else ``default_augment``)."""
    from synthgen.models import SegModelConfig
    from synthgen.trainers import SegTrainConfig, seg_augment

    model = {k: options.pop(k) for k in ("arch", "width", "depth")}
    level, no_augment = options.pop("augment"), options.pop("no_augment")
    if no_augment and level not in (None, "none"):
        raise click.UsageError(f"Expected --no-augment or --augment {level}. Got both.")
    augment = seg_augment("none" if no_augment else level or default_augment)
    model_cfg = SegModelConfig(**{k: v for k, v in model.items() if v is not None})
    given = {k: v for k, v in options.items() if v is not None}
    return SegTrainConfig(model=model_cfg, augment=augment, **(given | fixed))


def _share_schedule(ctx: click.Context, param: click.Parameter, value: str | None):
    """``START:END`` -> (start, end) floats; None where not given."""
    if value is None:
        return None
    start, sep, end = value.partition(":")
    try:
        if not sep:
            raise ValueError(value)
        return float(start), float(end)
    except ValueError:
        raise click.BadParameter(f"Expected START:END, two numbers in [0, 1]. Got {value!r}.") from None


def _seed_list(ctx: click.Context, param: click.Parameter, value: str) -> int | tuple[int, ...]:
    """``N`` -> the count N; ``a,b,c`` -> those seeds."""
    try:
        if "," not in value:
            count = int(value)
            if count < 1:
                raise ValueError(value)
            return count
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"Expected a count N >= 1 or a list of seeds 0,1,2. Got {value!r}."
        ) from None


@cli.command("train-seg")
@click.argument("train")
@click.argument("out_dir")
@click.option(
    "--split",
    type=click.Choice(["train", "all"]),
    default="train",
    show_default=True,
    help="Of the real training stores: 'train' leaves out the test patients (number % 10 == 0, or the "
    "store's ingest --test-remainder).",
)
@click.option(
    "--val",
    default="",
    help="Validation STORE[:split], split val|train|all (default: val for a training store, else all). "
    "Default: the validation patients (number % 10 == 5) of the first real store of TRAIN. Validation "
    "samples of a training store are left out of training.",
)
@click.option("--val-limit", type=int, help="Validate on the first N samples only.")
@click.option(
    "--init",
    default="",
    help="Fine-tune: start from this segmenter checkpoint (a folder with segmenter.json, or a train-seg "
    "OUT_DIR: its best) of the same architecture, schema and channels.",
)
@click.option(
    "--synth-share-schedule",
    callback=_share_schedule,
    help="START:END, e.g. 0.9:0.1: the synthetic stores' share of each batch of a real + synthetic mix "
    "moves linearly from START at the first step to END at the last (instead of the mix's ratios).",
)
@click.option("--overwrite", is_flag=True, help="Replace a segmenter already in OUT_DIR.")
@_seg_train_options
def train_seg_command(
    train, out_dir, split, val, val_limit, init, synth_share_schedule, overwrite, progress, **options
) -> None:
    """Train a segmenter on TRAIN (a store, or a mix 'real.zarr:0.3,synth.zarr:0.7'); results in OUT_DIR.

    Real stores are split by patient (a store without patient metadata by sample index, with a note);
    synthetic stores (build-dataset) are read whole. OUT_DIR/best and OUT_DIR/last hold
    segmenter.safetensors + segmenter.json + splits.json (what it trained and validated on); log.csv,
    log.json and curves.png hold the loss and validation Dice curves.
    """
    from synthgen.trainers import train_seg

    def note(message: str) -> None:
        click.echo(f"synthgen: note: {message}", err=True)

    _use_fast_codecs()
    config = _seg_train_config(
        options,
        train=train,
        val=val,
        out_dir=out_dir,
        val_limit=val_limit,
        split=split,
        init=init,
        synth_share_schedule=synth_share_schedule,
    )
    result = train_seg(config, progress=progress, overwrite=overwrite, notify=note)
    if init:
        click.echo(f"Started from the segmenter {init}.")
    dice = result.best_metrics.get("val_dice_mean", float("nan"))
    data = result.splits
    seen = ", ".join(
        f"{s.url} ({'whole' if s.by == 'whole' else s.split}: {s.n} samples)" for s in data.train
    )
    click.echo(f"Trained on {seen}; validated on {data.val.url} ({data.val.split}: {data.val.describe()}).")
    click.echo(
        f"Trained {config.model.arch} for {result.steps} steps in {result.seconds:.1f} s; best validation "
        f"mean Dice {dice:.4f} at step {result.best_step}, saved in {result.best}."
    )


@cli.group("evaluate")
def evaluate_group() -> None:
    """Evaluate segmenters (seg), synthetic stores (realism) and the usefulness table (utility)."""


@evaluate_group.command("seg")
@click.argument("checkpoint")
@click.argument("store")
@click.option("--out", "out_dir", help="Write per_sample.csv, summary.json and summary.md here.")
@click.option(
    "--split",
    type=click.Choice(["all", "train", "val", "test"]),
    default="all",
    show_default=True,
    help="'test': the held-out test patients only (number % 10 == 0, or the store's ingest --test-remainder; "
    "by sample index without patients).",
)
@click.option("--spacing", type=(float, float), help="Pixel size (row, col) in mm [default: the store's].")
@click.option("--limit", type=int, help="First N samples only.")
@click.option(
    "--strict", is_flag=True, help="Refuse samples the segmenter trained or validated on (else a warning)."
)
@click.option(
    "--normalise",
    type=click.Choice(["none", "percentile", "zscore"]),
    help="Per-image intensity normalisation [default: the segmenter's training one; another warns].",
)
@click.option(
    "--alias",
    "aliases",
    multiple=True,
    metavar="STORE_CLASS=SEG_CLASS",
    help="Score the store's class STORE_CLASS as the segmenter's SEG_CLASS. Repeatable. Default: classes "
    "paired by name, then by alias (the schemas' aliases and common names: lv, myo, rv...).",
)
@click.option(
    "--shift",
    help="Score the images under one fixed, seeded acquisition shift: gamma, bias, noise, blur, "
    "resolution, or inversion (MR).",
)
@click.option(
    "--modality",
    type=click.Choice(["echo", "mr", "ct"]),
    help="Of the store's images, for --shift [default: from the schema: camus echo, acdc mr, mmwhs ct].",
)
@_THREADS
def evaluate_seg_command(
    checkpoint, store, out_dir, split, spacing, limit, strict, normalise, aliases, shift, modality
) -> None:
    """Score the segmenter CHECKPOINT on STORE: Dice, IoU, Hausdorff, HD95, ASSD per class.

    A store of another label schema is scored on the classes the two share; the output names those
    scored and those skipped. Warns (stderr and summary.json) where the checkpoint's splits.json shows
    it trained or validated on evaluated samples."""

    from synthgen.evaluation import classes_line, evaluate_segmentation, seg_table

    pairs = {}
    for text in aliases:
        theirs, sep, mine = (part.strip() for part in text.partition("="))
        if not (sep and theirs and mine):
            raise click.BadParameter(f"Expected STORE_CLASS=SEG_CLASS. Got {text!r}.", param_hint="--alias")
        pairs[theirs] = mine
    _use_fast_codecs()
    acquisition = None
    if shift:
        from synthgen.evaluation import AcquisitionShift, store_modality
        from synthgen.storage import StoreReader

        acquisition = AcquisitionShift(shift, store_modality(StoreReader(store).schema.name, modality))
    result = evaluate_segmentation(
        checkpoint,
        store,
        out_dir,
        split=split,
        spacing=spacing,
        limit=limit,
        strict=strict,
        normalise=normalise,
        aliases=pairs,
        shift=acquisition,
    )
    for warning in (result.seen.warning if result.seen is not None else "", result.normalise_warning):
        if warning:
            click.echo(f"synthgen: warning: {warning}", err=True)
    click.echo(classes_line(result.classes))
    click.echo(seg_table(result))


@evaluate_group.command("realism")
@click.argument("synth")
@click.argument("real")
@click.option(
    "--segmenter",
    required=True,
    help="train-seg checkpoint trained on REAL: features + adherence (one trained on SYNTH is refused).",
)
@click.option("--out", "out_dir", help="Write realism.json, memorisation.csv, closest_pairs.png here.")
@click.option("--real-split", default="train", show_default=True, help="Real images the generator saw.")
@click.option(
    "--reference-split", default="test", show_default=True, help="Unseen real images for reference; 'none'."
)
@click.option("--memo-size", default=64, show_default=True, help="Compare images at this size.")
@click.option("--kid-subset-size", default=1000, show_default=True, help="Samples per KID subset.")
@click.option("--limit", type=int, help="First N synthetic samples only.")
@_THREADS
def evaluate_realism_command(synth, real, segmenter, out_dir, reference_split, **options) -> None:
    """FID/KID, label adherence and memorisation of the synthetic store SYNTH against the real store REAL."""

    from synthgen.evaluation import RealismConfig, evaluate_realism, realism_lines

    _use_fast_codecs()
    reference = "" if reference_split == "none" else reference_split
    config = RealismConfig(synth, real, segmenter, out_dir, reference_split=reference, **options)
    for line in realism_lines(evaluate_realism(config)):
        click.echo(line)


@evaluate_group.command("utility")
@click.argument("real")
@click.argument("out_dir")
@click.option("--synth", help="Synthetic store from build-dataset. Without it only the real arms run.")
@click.option(
    "--arms",
    help="Comma-separated subset of: real, synthetic, real+synthetic, real10+synthetic, "
    "real25+synthetic, real10, real25, synthetic-pretrain+real-finetune, real10-finetune (fine-tuned from "
    "the synthetic arm's segmenter of the same seed, which then runs too) [default: all the stores allow].",
)
@click.option(
    "--synth-share", type=float, default=0.5, show_default=True, help="Synthetic share of mixed batches."
)
@click.option(
    "--seeds",
    default="3",
    show_default=True,
    callback=_seed_list,
    help="Training seeds: a count N (seeds --seed .. --seed + N - 1) or a list 0,1,2 (one seed k: 'k,'). "
    "Every arm trains once per seed; the table gives means over seeds and test images with 95% bootstrap "
    "intervals.",
)
@click.option(
    "--shift",
    is_flag=True,
    help="Also score every arm under fixed, seeded acquisition shifts of the test images (gamma, bias "
    "field, noise, blur, resolution loss; intensity inversion for MR): Dice and its drop.",
)
@click.option(
    "--modality",
    type=click.Choice(["echo", "mr", "ct"]),
    help="Of REAL's images, for --shift [default: from the schema: camus echo, acdc mr, mmwhs ct].",
)
@_seg_train_options
def evaluate_utility_command(
    real, out_dir, synth, arms, synth_share, seeds, shift, modality, progress, **options
) -> None:
    """The usefulness table: segmenters trained on real / synthetic / mixed / reduced real data /
    synthetic then fine-tuned on real, once per seed, each evaluated on the held-out real test patients
    of REAL. Writes utility.md, utility.json and utility.png to OUT_DIR. Re-running continues an
    interrupted run: every finished (arm, seed) is reused."""
    from synthgen.evaluation import UtilityConfig, run_utility

    _use_fast_codecs()

    train = _seg_train_config(  # light unless --augment: the augmentation of bench/results/utility.md
        options, "light", train="", val="", out_dir="", device=options.get("device") or "cpu"
    )
    chosen = tuple(a.strip() for a in arms.split(",")) if arms else ()
    if isinstance(seeds, int):
        seeds = tuple(range(train.seed, train.seed + seeds))
    config = UtilityConfig(
        real,
        out_dir,
        synth,
        chosen,
        seeds,
        synth_share=synth_share,
        shift=shift,
        modality=modality,
        train=train,
    )

    def note(message: str) -> None:
        click.echo(f"synthgen: {message}", err=True)

    table, _ = run_utility(config, progress=progress, notify=note)
    click.echo(table)


@cli.command("train-shape")
@click.argument("store")
@click.argument("out_dir")
@click.option("--steps", type=int, help="Total training steps (default 2000).")
@click.option("--image-size", type=int, help="Train at S x S (default 64); labels resized nearest.")
@click.option("--batch-size", type=int, help="Default 32.")
@click.option("--lr", type=float, help="Learning rate (default 1e-3).")
@click.option("--latent-dim", type=int, help="Latent dimensions (default 32).")
@click.option("--width", type=int, help="Channels at the first level (default 16).")
@click.option("--depth", type=int, help="Stride-2 levels (default 4).")
@click.option("--kl-weight", type=float, help="Final KL weight (default 1.0).")
@click.option("--kl-anneal-steps", type=int, help="Steps over which the KL weight ramps up (default 500).")
@click.option("--gate-samples", type=int, help="Maps sampled and gated at each checkpoint (default 200).")
@click.option(
    "--fit-prior/--no-fit-prior",
    default=None,
    help="Sample from a Gaussian fitted to the codes [default: on].",
)
@_RUN_OPTIONS
def train_shape_command(store, out_dir, resume, progress, **options) -> None:
    """Train a shape VAE on the label maps of STORE; checkpoint, sampled maps and losses go to OUT_DIR.

    The schema comes from STORE. Sampled maps are put through the plausibility gate at each checkpoint.
    With --resume the checkpoint's config is used; only --steps and the intervals may change.
    """
    from pathlib import Path

    from synthgen.models import read_vae_spec
    from synthgen.schemas import merge_overrides
    from synthgen.trainers import ShapeTrainConfig, latest_vae_checkpoint, train_shape

    _use_fast_codecs()

    model_keys = ("image_size", "latent_dim", "width", "depth")
    model = {k: options.pop(k) for k in model_keys}
    base: dict = {}
    if resume:
        ckpt = latest_vae_checkpoint(Path(out_dir))
        base = dict(read_vae_spec(ckpt).train_config) if ckpt is not None else {}
    given = options | {"store": store, "out_dir": out_dir, "model": model}
    config = ShapeTrainConfig.from_dict(merge_overrides(base, given))
    result = train_shape(config, resume=resume, progress=progress)
    gate = result.gate
    reasons = ", ".join(f"{code} {k}" for code, k in gate.reasons) or "none"
    click.echo(
        f"Trained the shape VAE to step {result.step} in {result.seconds:.1f} s; {gate.passed} of "
        f"{gate.checked} sampled maps passed the gate ({100 * gate.pass_rate:.1f}%; rejections: {reasons}); "
        f"checkpoint in {result.checkpoint}."
    )


def main() -> None:
    cli(prog_name="synthgen")


if __name__ == "__main__":
    main()
