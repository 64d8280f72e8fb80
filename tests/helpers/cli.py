"""Checks shared by the CLI tests."""

from __future__ import annotations

from pathlib import Path

from synthgen.storage import store_exists


def assert_clean_failure(result, out: Path, *needles: str, no_leftovers: bool = False) -> None:
    """A click result that failed with exit 1 and one ``synthgen: error:`` line holding every needle,
    and wrote no store at ``out`` (nor, with ``no_leftovers``, any file beside it named like it)."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthgen: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not store_exists(str(out))
    if no_leftovers:
        assert not out.exists() and not any(p.name.startswith(out.name) for p in out.parent.iterdir())
