"""The layer contract of the README's architecture section: each package imports lower layers only,
through their public names; the low layers import no torch; every public name resolves."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "synthgen"
PACKAGES = (
    "schemas",
    "kernels",
    "models",
    "storage",
    "sources",
    "inference",
    "engine",
    "trainers",
    "evaluation",
)


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def test_cross_package_imports_use_public_names():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        own = parts[1] if len(parts) > 2 else None
        for line, module in _imports(path):
            words = module.split(".")
            if words[0] == "synthgen" and len(words) > 2 and words[1] in PACKAGES and words[1] != own:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_resolves(name):
    package = importlib.import_module(f"synthgen.{name}")
    assert package.__all__, f"synthgen.{name} exports nothing"
    for public in package.__all__:
        assert getattr(package, public) is not None, public
    with pytest.raises(AttributeError, match="has no attribute"):
        package.not_a_public_name  # noqa: B018


def test_low_layers_and_package_imports_load_no_torch():
    code = (
        "import sys\n"
        "import synthgen.schemas, synthgen.kernels, synthgen.seeding\n"
        "assert not {'torch', 'zarr', 'dask'} & set(sys.modules), 'schemas/kernels'\n"
        "import synthgen.models, synthgen.storage, synthgen.sources, synthgen.inference, synthgen.engine\n"
        "import synthgen.trainers, synthgen.evaluation\n"
        "from synthgen.storage import StoreReader\n"
        "from synthgen.sources import source_from_config\n"
        "from synthgen.inference import open_generator\n"
        "assert 'torch' not in sys.modules, 'a package import or the build path imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_contract_holds():
    """The same check as .ci/run (pyproject.toml [tool.importlinter]): layers, no upward import, no cycle."""
    linter = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if linter is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([linter, "--no-cache"], cwd=PACKAGE.parent, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
