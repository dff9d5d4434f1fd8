"""The layout stays easy to change: no import cycles (lazy imports included), RQ known to one
module, a command line that starts without torch, small files and functions, tests that go
through public names, and a Label Studio stand-in that answers to the real client's contract."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

from ml_backend.labelstudio import LabelStudioAPI, LabelStudioClient
from tests.unit.fakes import FakeLabelStudio

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ml_backend", "model", "sampling")
# Being split by their own change; remove from here once they are under the limit.
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules `name` imports anywhere in its file (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def test_no_import_cycle_among_the_packages_lazy_imports_included():
    known = modules()
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_import_check_sees_lazy_imports():
    known = modules()
    # __main__ imports the server only inside the `serve` command.
    assert "ml_backend.server" in imports_of("ml_backend.__main__",
                                             known["ml_backend.__main__"], known)


def test_only_the_jobs_module_knows_it_runs_in_an_rq_job():
    users = [name for name, path in modules().items() if "get_current_job" in path.read_text()]
    assert users == ["ml_backend.jobs"]


def test_the_command_line_starts_without_torch():
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "ml_backend", "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    heavy = {m for m in imported if m.split(".")[0] in ("torch", "torchvision", "fastapi",
                                                        "label_studio_sdk", "rq")}
    assert not heavy, sorted(heavy)[:10]
    assert "ml_backend.settings" in imported  # the check did see the imports


def test_files_and_functions_stay_small():
    too_long = []
    for name, path in modules().items():
        rel = str(path.relative_to(ROOT))
        lines = path.read_text().count("\n")
        if lines > 400:
            too_long.append(f"{rel}: {lines} lines")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > 100 and rel not in OVERSIZED:
                    too_long.append(f"{rel}: {node.name}() is {length} lines")
    assert not too_long, too_long


def test_tests_use_only_public_names_of_other_modules():
    """`from x import _name` and `module._name` (a module the test imported) are reaching into
    internals; a test's own helpers and objects' dunder names are its business."""
    found = []
    paths = [*(ROOT / "tests" / "unit").glob("test_*.py"),
             *(ROOT / "tests" / "integration").glob("test_*.py")]
    for path in sorted(paths):
        tree = ast.parse(path.read_text())
        imported_modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                    *PACKAGES, "tests"):
                for alias in node.names:
                    if alias.name.startswith("_"):
                        found.append(f"{path.name}: from {node.module} import {alias.name}")
                    imported_modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                imported_modules |= {a.asname or a.name.split(".")[0] for a in node.names
                                     if a.name.split(".")[0] in PACKAGES}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in imported_modules):
                found.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "setattr"
                    and len(node.args) >= 2 and isinstance(node.args[0], ast.Name)
                    and node.args[0].id in imported_modules
                    and isinstance(node.args[1], ast.Constant)
                    and str(node.args[1].value).startswith("_")):
                found.append(f"{path.name}:{node.lineno}: setattr of {node.args[0].id}."
                             f"{node.args[1].value}")
    assert not found, found


def test_the_stand_in_and_the_client_answer_to_the_same_contract():
    """The unit tests' Label Studio takes the real client's arguments for everything the loop
    asks of Label Studio (the Protocol the runtime is typed with)."""
    members = [n for n, v in vars(LabelStudioAPI).items()
               if callable(v) and not n.startswith("_")]
    assert "labelling_tasks" in members and "delete_model_version" in members
    for name in members:
        want = inspect.signature(getattr(LabelStudioAPI, name))
        for impl in (LabelStudioClient, FakeLabelStudio):
            got = inspect.signature(getattr(impl, name))
            assert [(p.name, p.kind) for p in got.parameters.values()] == [
                (p.name, p.kind) for p in want.parameters.values()], (impl.__name__, name)
