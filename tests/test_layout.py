"""The package layout: one `triptych` namespace, and an import graph that is a clean stack.

core (shared plumbing) <- clip <- {vlm, diffusion} <- apps;  world beside, used by training and evaluation only;
weights: data (bundled models, recipes, examples), imported for its paths.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import triptych

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "world", "weights", "clip", "vlm", "diffusion", "apps")
# which other triptych packages each may import at all (any line, functions included)
ALLOWED = {
    "weights": set(),
    "core": {"weights"},
    "world": set(),
    "clip": {"core", "weights", "world"},
    "vlm": {"core", "weights", "world", "clip"},
    "diffusion": {"core", "weights", "world", "clip"},
    "apps": {"core", "weights", "world", "clip", "vlm", "diffusion"},
}
# modules that may import the world simulator: training data and training (the apps may, for examples and scores)
WORLD_USERS = {"clip/train.py", "vlm/train.py", "vlm/data.py", "diffusion/train.py", "diffusion/data.py"}


def _python(code: str) -> str:
    """Run `code` in a fresh interpreter outside the checkout (so only the installed names resolve)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/", timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module, line) for every import in a file, relative ones resolved, at any depth."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = [*rel.parts[:-1]]  # a module's package; an __init__'s package is its own folder, the same parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(["triptych", *base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found += [(module, node.lineno)]
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def _triptych_package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "triptych" and len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    return None


def test_one_top_level_name_and_a_version() -> None:
    assert triptych.__version__ != "0+unknown"
    out = _python("import triptych, triptych.clip as c; print(triptych.__version__, c.__file__)")
    version, clip_file = out.split()
    assert version == triptych.__version__ and Path(clip_file) == ROOT / "clip" / "__init__.py"
    command = Path(sys.executable).parent / "triptych"  # the console script beside this interpreter
    assert subprocess.run([command, "--version"], capture_output=True, text=True).stdout.strip() == (
        f"triptych {triptych.__version__}"
    )


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_lies_beneath_it(package: str) -> None:
    """Every import line in the package (functions included) names only packages beneath it or beside it."""
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for module, line in _imports(path):
            other = _triptych_package(module)
            if module.split(".")[0] in PACKAGES:
                bad.append(f"{rel}:{line} imports {module} outside the triptych namespace")
            elif other and other != package and other not in ALLOWED[package]:
                bad.append(f"{rel}:{line} imports {module}")
            elif other == "world" and package in ("clip", "vlm", "diffusion") and rel not in WORLD_USERS:
                bad.append(f"{rel}:{line} imports the world simulator outside training code")
            elif other == "clip" and package in ("vlm", "diffusion") and module.count(".") > 2:
                bad.append(f"{rel}:{line} reaches into clip ({module}): use the encoder's public names")
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules() -> None:
    """The module graph (every import, functions included) has no cycle."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(["triptych", *rel.parts])
            modules[name.removesuffix(".__init__")] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for module, _ in _imports(path):
            target = next((m for m in (module, module.rpartition(".")[0]) if m in modules), None)
            if target and target != name and not name.startswith(target + "."):  # a submodule sees its package
                graph[name].add(target)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


@pytest.mark.parametrize(
    ("package", "may_load"),
    [
        ("triptych.core", {"core", "weights"}),
        ("triptych.clip", {"core", "weights", "clip"}),
        ("triptych.vlm", {"core", "weights", "clip", "vlm"}),
        ("triptych.diffusion", {"core", "weights", "clip", "diffusion"}),
    ],
)
def test_inference_imports_no_training_code_and_no_world(package: str, may_load: set[str]) -> None:
    out = _python(f"import sys, {package}; print(' '.join(sorted(sys.modules)))")
    loaded = [m for m in out.split() if m.startswith("triptych.")]
    assert {m.split(".")[1] for m in loaded} <= may_load, loaded
    training = [m for m in loaded if m.rpartition(".")[2] in ("train", "data", "datasets", "training")]
    assert not training, training
    web = [m for m in out.split() if m.split(".")[0] in ("gradio", "gradio_client", "fastapi", "uvicorn")]
    assert not web, web[:5]  # the core install has no web stack (the `app` extra)


def test_without_the_app_extra_serve_names_the_extra() -> None:
    blocked = "import sys; sys.modules['gradio'] = None; sys.modules['gradio_client'] = None"
    code = f"{blocked}; from triptych.apps.cli.main import main; sys.exit(main(['serve']))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "pip install 'triptych[app]'" in run.stderr, run.stderr[-500:]
    code = f"{blocked}; from triptych.apps.benchmarks.main import main; sys.exit(main(['load']))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "pip install 'triptych[app]'" in run.stderr, run.stderr[-500:]


@pytest.mark.parametrize("blocked", ["ray", "ray.serve"])
def test_serve_on_ray_without_ray_serve_names_the_extra(blocked: str) -> None:
    code = f"import sys; sys.modules[{blocked!r}] = None; from triptych.apps.cli.main import main; "
    code += "sys.exit(main(['serve', '--ray']))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "pip install 'triptych[distributed]'" in run.stderr, run.stderr[-500:]


def test_a_stand_in_clip_package_does_not_shadow_ours(tmp_path: Path) -> None:
    """OpenAI's CLIP installs a top-level `clip`; with one earlier on sys.path, ours still imports and runs."""
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "__init__.py").write_text("raise ImportError('the stand-in clip was imported')\n")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "__init__.py").write_text("raise ImportError('the stand-in weights was imported')\n")
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "from triptych import clip, vlm, diffusion\n"
        "enc = clip.load('shapes', device='cpu')\n"
        "print(enc.encode_text(['a red circle']).shape[1])\n"
    )
    assert int(_python(code)) > 0


@pytest.mark.slow
def test_the_wheel_installs_only_triptych(tmp_path: Path) -> None:
    """A wheel built from the repository has `triptych` as its only top-level name (no clip, weights, apps)."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(tmp_path.glob("triptych-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"triptych"}, tops
    assert "triptych/weights/shapes/clip/open_clip_model.safetensors" in names
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    assert "triptych.apps.cli.main:main" in zipfile.ZipFile(wheel).read(meta).decode()
    assert json.loads(zipfile.ZipFile(wheel).read("triptych/weights/recipes/shapes_clip.json"))
