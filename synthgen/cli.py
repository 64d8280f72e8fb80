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


def main() -> None:
    cli(prog_name="synthgen")


if __name__ == "__main__":
    main()
