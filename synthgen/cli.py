"""The ``synthgen`` command line. Thin: each command parses options, builds one config, calls one function.

Heavy libraries (torch, dask, zarr) are imported inside the commands so that ``synthgen --help`` is instant.
A :class:`~synthgen.errors.SynthgenError` becomes one line on stderr and exit status 1.
"""

from __future__ import annotations

import sys

import click

from synthgen import __version__
from synthgen.errors import SynthgenError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SynthgenError as e:
            click.echo(f"synthgen: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("synthgen: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synthgen")
def cli() -> None:
    """synthgen: paired image/label synthesis for medical segmentation, into sharded Zarr stores."""


@cli.command("ingest")
@click.argument("source", type=click.Path(file_okay=False))
@click.argument("out")
@click.option(
    "--layout", type=click.Choice(["camus", "acdc", "pairs"]), help="Default: detected from file names."
)
@click.option(
    "--schema", help="Label schema preset (camus, acdc, mmwhs) or .toml/.json file. Default: the layout's."
)
@click.option(
    "--size", nargs=2, type=int, metavar="H W", help="Resample to H x W (labels nearest, images linear)."
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
def ingest_command(
    source, out, layout, schema, size, shard_size, overwrite, patterns, include, limit
) -> None:
    """Ingest a labelled dataset (CAMUS, ACDC, or image/label pairs) in SOURCE into a store at OUT."""
    from synthgen.engine.ingest import DEFAULT_PATTERNS, IngestConfig, ingest

    config = IngestConfig(
        source=source,
        out=out,
        layout=layout,
        schema=schema,
        size=tuple(size) if size else None,
        shard_size=shard_size,
        overwrite=overwrite,
        patterns=tuple(patterns) or DEFAULT_PATTERNS,
        include=tuple(include),
        limit=limit,
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
    from synthgen.engine.preview import write_preview
    from synthgen.engine.store import StoreReader
    from synthgen.engine.summary import format_summary, summarize_store

    reader = StoreReader(store)
    click.echo(format_summary(summarize_store(reader, max_shards=max_shards)))
    if preview:
        shown = write_preview(reader, preview, n=n)
        click.echo(f"preview      {preview} ({len(shown)} samples)")


@cli.command("build-dataset")
@click.option("--out", required=True, help="Output store: a path or fsspec URL (memory://, s3://...).")
@click.option("--n", "n", type=int, default=None, help="Number of samples [default: 10000].")
@click.option(
    "--seed", type=int, default=None, help="Root seed: sample i derives from (seed, i) [default: 0]."
)
@click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default=None, help="Build config TOML."
)
@click.option("--preset", default=None, help="echo (default), sa-mr or ct: a complete starting config.")
@click.option(
    "--scheduler", default="processes", show_default=True, help="sync, threads, processes or tcp://host:port."
)
@click.option("--workers", type=int, default=2, show_default=True, help="Local threads or processes.")
@click.option("--image-size", type=(int, int), default=None, help="H W [default: the generator's, 128 128].")
@click.option("--shard-size", type=int, default=None, help="Samples per shard [default: 256].")
@click.option("--source", "source_kind", default=None, help="Label source kind: procedural, store or volume.")
@click.option(
    "--source-url", default=None, help="Store (for --source store) or volume file (for --source volume)."
)
@click.option("--view", default=None, help="Procedural view: apical, a4c, a2c, short_axis, ct_axial.")
@click.option("--generator", default=None, help="Generator checkpoint folder [default: the bundled one].")
@click.option(
    "--backend", default=None, help="auto, torch, torch-compile, onnxruntime or tensorrt [default: auto]."
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
@click.option("--overwrite", is_flag=True, help="Replace an existing output instead of resuming it.")
@click.option("--dry-run", is_flag=True, help="Print the plan (shards, size, estimated time) and stop.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build_dataset_cmd(out, config_path, scheduler, workers, overwrite, dry_run, quiet, **flags) -> None:
    """Stream deformed-label / generated-image pairs into a Zarr store (resumes an interrupted build)."""
    from synthgen.engine.build import RunOptions, build_dataset, plan_build
    from synthgen.schemas.build_config import load_build_config

    source = {k: v for k, v in (("kind", flags.pop("source_kind")), ("url", flags.pop("source_url"))) if v}
    if flags.get("view"):
        source["view"] = flags["view"]
    flags.pop("view")
    deform = {k: flags.pop(k) for k in ("max_displacement", "spacing")}
    deform["enabled"] = flags.pop("deform")
    overrides = dict(flags) | {"deform": {k: v for k, v in deform.items() if v is not None}}
    if source:
        overrides["source"] = source
    config = load_build_config(config_path, overrides)
    options = RunOptions(scheduler=scheduler, workers=workers, overwrite=overwrite, progress=not quiet)
    if dry_run:
        for line in plan_build(out, config, options).lines():
            click.echo(line)
        return
    summary = build_dataset(out, config, options)
    for line in summary.lines():
        click.echo(line)


@cli.command("train-gan")
@click.argument("store")
@click.argument("out_dir")
@click.option("--arch", type=click.Choice(["spade", "pix2pix"]), help="Architecture. Default: spade.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="JSON training config.")
@click.option("--resume", is_flag=True, help="Continue the run in OUT_DIR from its last checkpoint.")
@click.option("--steps", type=int, help="Total training steps (default 1000).")
@click.option("--image-size", type=int, help="Train at S x S (default 128); the store is resized.")
@click.option("--batch-size", type=int, help="Default 8.")
@click.option("--lr-g", type=float, help="Generator learning rate (default 2e-4).")
@click.option("--lr-d", type=float, help="Discriminator learning rate (default 2e-4).")
@click.option("--lr-decay-steps", type=int, help="Decay the rates linearly to 0 over the last N steps.")
@click.option("--split", type=click.Choice(["all", "train", "test"]), help="'train' holds out test patients.")
@click.option("--augment/--no-augment", default=None, help="Small random affine warps of image and labels.")
@click.option("--seed", type=int, help="Root seed (default 0).")
@click.option("--width", type=int, help="Generator channels at full resolution (U-Net: first level).")
@click.option("--max-width", type=int, help="Generator channel cap.")
@click.option("--depth", type=int, help="Number of resolution levels of the generator.")
@click.option("--style-dim", type=int, help="SPADE: length of the style vector.")
@click.option("--style-encoder/--no-style-encoder", default=None, help="SPADE: VAE style encoder.")
@click.option("--spectral-norm/--no-spectral-norm", default=None, help="Spectral norm in training.")
@click.option("--lambda-l1", type=float, help="Weight of the L1 loss to the real image.")
@click.option("--sample-every", type=int, help="Write a sample grid every N steps (default 200).")
@click.option("--checkpoint-every", type=int, help="Write a checkpoint every N steps (default 200).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Default: cuda if present.")
@click.option("--threads", type=int, help="CPU threads for torch (default: torch's choice).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def train_gan_command(store, out_dir, arch, config_file, resume, threads, progress, **options) -> None:
    """Train a mask-conditioned GAN on the pairs of STORE; checkpoints, samples and losses go to OUT_DIR.

    The label count, schema, channels and intensity convention come from STORE. Options override
    --config (or, with --resume, the checkpoint's config: only --steps and intervals may change).
    """
    import json
    from pathlib import Path

    import torch

    from synthgen.errors import ConfigError
    from synthgen.trainers.config import merge_config
    from synthgen.trainers.train_gan import resume_config, train_gan

    model_keys = ("width", "max_width", "depth", "style_dim", "style_encoder", "spectral_norm", "lambda_l1")
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
    if threads:
        torch.set_num_threads(threads)
    result = train_gan(config, resume=resume, progress=progress)
    click.echo(
        f"Trained {config.model.arch} to step {result.step} in {result.seconds:.1f} s; "
        f"generator and training state in {result.checkpoint}."
    )


def main() -> None:
    cli(prog_name="synthgen")


if __name__ == "__main__":
    main()
