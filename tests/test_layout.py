"""The layout: bpy only in serialgen/assets, serialgen/render and serialgen/blender_io.py; stages never import stages;
the measuring probes (serialgen/probes) out of reach of every model we train.

The plain-numpy package serialgen/synthetic, and the modules a stage driver imports to hand work to
Blender processes, must import where bpy cannot; no module outside the Blender code may import bpy at
all, not even inside a function. The asset side never depends on the renderer. A stage driver in
serialgen/stages is an entry point: what two stages share lives a layer down (serialgen/storage,
serialgen/inference, serialgen/dag.py, ...), so a change to one stage never reaches into another.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import serialgen.synthetic

ROOT = Path(__file__).resolve().parent.parent
BLENDER_MODULES = ("bpy", "bmesh", "mathutils", "bpy_extras")
BLENDER_CODE = ("serialgen/assets/", "serialgen/render/", "serialgen/blender_io.py")
PLAIN = tuple(f"serialgen.synthetic.{m.name}" for m in pkgutil.iter_modules(serialgen.synthetic.__path__))
#: What the stage drivers import to start Blender workers: importing these must not load Blender.
DRIVER_SIDE = ("serialgen.assets.worker", "serialgen.render.actor", "serialgen.stages.assets",
               "serialgen.stages.render")

#: Run in a fresh interpreter: every Blender module is made unimportable first (``sys.modules[name] = None``).
WITHOUT_BLENDER = f"""
import importlib, sys
for name in {BLENDER_MODULES!r}:
    sys.modules[name] = None
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
        print(name, "imported")
    except ImportError as exc:
        print(name, "failed:", exc)
"""


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports anywhere in the file, with ``from a import b`` also as ``a.b``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _sources() -> dict[str, set[str]]:
    """{path relative to the repository: its imports} for every module of the serialgen package."""
    return {p.relative_to(ROOT).as_posix(): _imports(p) for p in sorted((ROOT / "serialgen").rglob("*.py"))}


def _importing(prefixes: tuple[str, ...], sources: dict[str, set[str]]) -> list[str]:
    return sorted(f"{path}: {name}" for path, names in sources.items() for name in names
                  if name.split(".")[0] in prefixes or name.startswith(prefixes))


def test_only_the_blender_code_imports_bpy():
    outside = {path: names for path, names in _sources().items() if not path.startswith(BLENDER_CODE)}
    assert "serialgen/synthetic/skeleton.py" in outside and "serialgen/stages/render.py" in outside
    assert _importing(BLENDER_MODULES, outside) == []


def test_plain_code_does_not_depend_on_blender_code_nor_assets_on_the_renderer():
    sources = _sources()
    plain = {path: names for path, names in sources.items() if path.startswith("serialgen/synthetic/")}
    assets = {path: names for path, names in sources.items() if path.startswith("serialgen/assets/")}
    assert _importing(("serialgen.assets", "serialgen.render", "serialgen.blender_io"), plain) == []
    assert _importing(("serialgen.render",), assets) == []


def test_stages_never_import_stages():
    stages = {path: names for path, names in _sources().items() if path.startswith("serialgen/stages/")}
    assert "serialgen/stages/standardize.py" in stages and "serialgen/stages/train_personalizer.py" in stages
    assert _importing(("serialgen.stages",), stages) == []


def test_plain_and_driver_side_modules_import_without_blender():
    assert {"serialgen.synthetic.skeleton", "serialgen.synthetic.render_plan",
            "serialgen.synthetic.character_spec", "serialgen.synthetic.body_mesh"} <= set(PLAIN)
    bpy_module = "serialgen.render.camera"   # proves the block works: it imports bpy at the top
    run = subprocess.run([sys.executable, "-c", WITHOUT_BLENDER, *PLAIN, *DRIVER_SIDE, bpy_module],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines == [f"{name} imported" for name in (*PLAIN, *DRIVER_SIDE)] + [lines[-1]]
    assert lines[-1].startswith(f"{bpy_module} failed: import of bpy halted")


#: Code that builds, trains or runs a model we train: it must never reach the measuring probes.
MODEL_CODE = ("serialgen/models/", "serialgen/pipelines/", "serialgen/training/", "serialgen/preprocessing/",
              "serialgen/stages/train_standardizer.py", "serialgen/stages/train_personalizer.py",
              "serialgen/stages/train_base.py",
              "serialgen/inference/", "serialgen/stages/standardize.py")


def test_models_never_import_the_probes_that_measure_them():
    sources = _sources()
    model_code = {path: names for path, names in sources.items() if path.startswith(MODEL_CODE)}
    assert "serialgen/models/standardizer.py" in model_code and "serialgen/training/personalizer.py" in model_code
    assert _importing(("serialgen.probes",), model_code) == []
    assert _importing(("serialgen.probes",), {"planted.py": {"serialgen.probes.model"}}) == ["planted.py: serialgen.probes.model"]
