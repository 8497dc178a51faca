"""A plugin imports from ``glocon.plugin_api`` and nothing else of glocon (issue 21, item 3).

Two checks: the import statements of every plugin module (function-level ones included), and a
real import of each module in a fresh interpreter where every glocon module except
``glocon.plugin_api`` has been made unreachable."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# every plugin's package: the ones under plugins/ and the ones glocon ships
PLUGIN_PACKAGES = sorted(p for p in (REPO / "plugins").glob("*/glocon_*") if p.is_dir()) + [REPO / "platform" / "glocon" / "builtin_plugins"]
ALLOWED = "glocon.plugin_api"


def _modules() -> list[Path]:
    return sorted(f for pkg in PLUGIN_PACKAGES for f in pkg.rglob("*.py") if "tests" not in f.parts)


def _dotted(path: Path) -> str:
    """The module name a file imports as: its path below the folder that holds its top package."""
    root = REPO / "platform" if path.is_relative_to(REPO / "platform") else next(p.parent for p in PLUGIN_PACKAGES if path.is_relative_to(p))
    rel = path.relative_to(root).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def glocon_imports(source: str) -> list[str]:
    """Every glocon module a file's import statements name (``from glocon import x`` names ``glocon.x``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == "glocon" or a.name.startswith("glocon.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "glocon":
                found += [f"glocon.{a.name}" for a in node.names]
            elif node.module.startswith("glocon."):
                found.append(node.module)
    return found


def test_the_scan_sees_every_form_of_a_glocon_import():
    src = "import glocon.ops\nfrom glocon import regionmaps\ndef f():\n    from glocon.models.prior import PriorExtractor\nfrom glocon.plugin_api import resize\n"
    assert sorted(glocon_imports(src)) == ["glocon.models.prior", "glocon.ops", "glocon.plugin_api", "glocon.regionmaps"]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_a_plugin_module_imports_only_the_plugin_api_from_glocon(path):
    other = [m for m in glocon_imports(path.read_text()) if m != ALLOWED]
    assert not other, f"{path.relative_to(REPO)} imports {other}: a plugin reaches glocon only through {ALLOWED}"


SANDBOX = """
import importlib, sys
import glocon.plugin_api  # loads what the API itself needs
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("glocon.") and name != "glocon.plugin_api" and name not in ALLOWED_PKGS:
            raise ImportError(f"{name} is not reachable from a plugin")
        return None
ALLOWED_PKGS = {"glocon.builtin_plugins", *sys.argv[1:]}  # the plugin modules under test
import glocon
for name in [m for m in list(sys.modules) if m.startswith("glocon.") and m != "glocon.plugin_api"]:
    sys.modules[name] = None  # `import glocon.x` / `from glocon.x import y` now fail
    head, _, tail = name.rpartition(".")
    if head == "glocon" and hasattr(glocon, tail):
        delattr(glocon, tail)  # `from glocon import x` fails too
sys.meta_path.insert(0, Refuse())
for mod in sys.argv[1:]:
    importlib.import_module(mod)
    print("imported", mod)
"""


def _sandbox(modules: list[str], extra_path: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", SANDBOX, *modules]
    env = None
    if extra_path is not None:
        import os

        env = dict(os.environ, PYTHONPATH=f"{extra_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_every_plugin_module_imports_with_only_the_plugin_api_reachable():
    modules = [_dotted(p) for p in _modules()]
    assert "glocon_qgnet.model" in modules and "glocon.builtin_plugins.proto" in modules
    r = _sandbox(modules)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("imported") == len(modules)


def test_the_sandbox_refuses_a_plugin_that_reaches_past_the_api(tmp_path):
    (tmp_path / "sneaky_plugin.py").write_text("from glocon.ops import resize\n")
    r = _sandbox(["sneaky_plugin"], extra_path=tmp_path)
    assert r.returncode != 0 and "glocon.ops" in r.stderr


def test_the_plugins_declare_typed_rows():
    from glocon.plugin_api import Row
    from glocon.plugins import load_plugin

    for name in ("qgnet", "proto"):
        rows = load_plugin(name).variants
        assert rows and all(isinstance(r, Row) for r in rows.values()), name
    assert load_plugin("proto").variants["proto-imagenet-tuned"].tune


def test_a_segmenter_is_recognised_by_its_protocol():
    from glocon.plugin_api import Segmenter, region_maps_of
    from glocon.plugins import load_plugin

    plugin = load_plugin("qgnet")
    model = plugin.build_model(plugin.make_config({"backbone": "resnet18", "reduce_dim": 32, "use_prior_map": False}), None)
    assert isinstance(model, Segmenter)
    assert region_maps_of(model) == ("prior_region_map", "guided_region_map")
    assert region_maps_of(object()) == ()
