"""The layout rules of the package, checked on its source: no import
circle among ndshm's modules, and no module (of the package, its tests or
its benchmarks) reaching into another module's ``_private`` names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import ndshm

ROOT = Path(__file__).resolve().parent.parent
# The package as imported: the source tree in a checkout, site-packages
# when the tests run against an installed wheel.
PACKAGE = Path(ndshm.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources(*dirs: Path) -> list[Path]:
    return sorted(p for d in dirs for p in d.rglob("*.py") if ".venv" not in p.parts)


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute name of what `node` (in `module`) imports from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, str | None]]:
    """``(module, name)`` of each import in `tree`; name None for ``import m``."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, node, is_package)
            found.extend((src, a.name) for a in node.names)
    return found


def package_graph() -> dict[str, set[str]]:
    """Which ndshm modules each ndshm module imports (at any depth in it)."""
    modules = {_module_name(p): p for p in _sources(PACKAGE)}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        tree = ast.parse(path.read_text())
        for src, name in _imports(tree, mod, path.name == "__init__.py"):
            if name is not None and f"{src}.{name}" in modules:
                target = f"{src}.{name}"  # `from . import sharing`
            elif src in modules:
                target = src
            else:
                continue
            if target != mod:
                graph[mod].add(target)
    return graph


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle in `graph`, or None. A package's ``__init__`` is left out as
    a target: every submodule's import runs it first, by design."""
    done: set[str] = set()
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        if m in path:
            return [*path[path.index(m) :], m]
        if m in done:
            return None
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if n in packages:
                continue
            circle = visit(n)
            if circle:
                return circle
        path.pop()
        done.add(m)
        return None

    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    for m in sorted(graph):
        circle = visit(m)
        if circle:
            return circle
    return None


def private_reaches(paths: list[Path], local: set[str]) -> list[str]:
    """Each place where one of `paths` imports, or reads off an imported
    module, a ``_private`` name of another module of `local`."""

    def ours(src: str) -> bool:
        return src in local or src.split(".")[0] in local

    bad = []
    for path in paths:
        mod = _module_name(path) if PACKAGE in path.parents else path.stem
        where = path.relative_to(ROOT) if ROOT in path.parents else path
        tree = ast.parse(path.read_text())
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    aliases[a.asname or a.name.split(".")[0]] = (a.asname and a.name) or a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                src = _resolve(mod, node, path.name == "__init__.py")
                for a in node.names:
                    if not ours(src):
                        continue
                    private = a.name.startswith("_") and not a.name.startswith("__")
                    if private and f"{src}.{a.name}" not in local and src != mod:
                        bad.append(f"{where}:{node.lineno}: from {src} import {a.name}")
                    else:
                        aliases[a.asname or a.name] = f"{src}.{a.name}"
        for node in ast.walk(tree):
            if (
                not isinstance(node, ast.Attribute)
                or not node.attr.startswith("_")
                or node.attr.startswith("__")
            ):
                continue
            chain = []
            base: ast.expr = node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if not isinstance(base, ast.Name) or base.id not in aliases:
                continue
            target = ".".join([aliases[base.id], *reversed(chain)])
            if target in local and target != mod and f"{target}.{node.attr}" not in local:
                bad.append(f"{where}:{node.lineno}: {target}.{node.attr}")
    return bad


def test_the_package_has_no_import_circle():
    graph = package_graph()
    assert "ndshm.pool" in graph and "ndshm.protocol" in graph["ndshm._worker"]
    assert find_circle(graph) is None, " -> ".join(find_circle(graph) or [])


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_circle(graph) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None


def test_no_module_reaches_into_another_modules_private_names():
    paths = _sources(PACKAGE, ROOT / "tests", ROOT / "benchmarks")
    local = set(package_graph()) | {"ndshm", "ndshm._native"}
    # Modules of tests/ and benchmarks/, imported by their file name.
    local |= {p.stem for p in _sources(ROOT / "tests", ROOT / "benchmarks")}
    # A private module (the extension, the worker's loop) may be imported
    # within the project; its public names are fair game.
    assert private_reaches(paths, local) == []


def test_the_private_name_check_sees_both_forms(tmp_path):
    src = tmp_path / "user.py"
    src.write_text("from ndshm.blocks import _even\nimport ndshm.pool\nndshm.pool._CHECK\nndshm.pool.Pool\n")
    found = private_reaches([src], set(package_graph()) | {"ndshm"})
    assert [f.split(": ", 1)[1] for f in found] == ["from ndshm.blocks import _even", "ndshm.pool._CHECK"]


# -- the Rust core -------------------------------------------------------------

CORE = ROOT / "crates" / "ndshm" / "src"


def _rust_code(path: Path) -> str:
    """`path`'s Rust text without comments (doc links are not uses)."""
    return re.sub(r"//[^\n]*", "", path.read_text())


def _top_items(group: str) -> list[str]:
    """The first path segment of each item of a ``{a::b, c, d::{e, f}}`` group."""
    items, depth, cur = [], 0, ""
    for ch in group[1:-1]:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [i.strip().split("::")[0].strip() for i in items if i.strip()]


def _paths_after(code: str, prefix: str) -> list[str]:
    """The first segment of each path that starts with `prefix` (``crate::``,
    ``super::``), braces groups opened."""
    found = []
    for m in re.finditer(re.escape(prefix) + r"(\w+|\{)", code):
        if m.group(1) != "{":
            found.append(m.group(1))
            continue
        start, depth = m.end() - 1, 0
        for end in range(start, len(code)):
            depth += code[end] == "{"
            depth -= code[end] == "}"
            if depth == 0:
                found.extend(_top_items(code[start : end + 1]))
                break
    return found


def core_graph() -> dict[str, set[str]]:
    """Which modules of the core crate each of its modules uses. A module in
    a folder (``dispatch``) is a node per file and uses each of its files;
    names the crate root re-exports count as uses of the module they come
    from."""
    lib = _rust_code(CORE / "lib.rs")
    folders = {d.name for d in CORE.iterdir() if (d / "mod.rs").exists()}
    top = {p.stem for p in CORE.glob("*.rs")} - {"lib"} | folders
    reexported = {}
    for m in re.finditer(r"pub use (\w+)::(\{[^}]*\}|\w+);", lib):
        for name in _top_items(m.group(2)) if m.group(2).startswith("{") else [m.group(2)]:
            reexported[name] = m.group(1)
    graph: dict[str, set[str]] = {}
    for path in sorted(CORE.rglob("*.rs")):
        if path.name == "lib.rs":
            continue
        folder = path.parent.name if path.parent != CORE else None
        inner = {p.stem for p in path.parent.glob("*.rs")} - {"mod"} if folder else set()
        node = folder if path.name == "mod.rs" else f"{folder}::{path.stem}" if folder else path.stem
        code = _rust_code(path)
        uses = set()
        for seg in _paths_after(code, "crate::"):
            target = reexported.get(seg, seg)
            if target in top:
                uses.add(target)
        if folder:
            uses |= {f"{folder}::{s}" for s in _paths_after(code, "super::") if s in inner}
            if path.name == "mod.rs":
                uses |= {f"{folder}::{s}" for s in inner}
        graph[node] = uses - {node}
    return graph


def test_the_core_crate_has_no_module_circle():
    graph = core_graph()
    assert "segment" in graph and "dispatch::worker" in graph["dispatch"]
    assert "dispatch::layout" in graph["dispatch::board"]
    circle = find_circle(graph)
    assert circle is None, " -> ".join(circle or [])


def test_the_rust_use_reader_sees_groups_and_inline_paths():
    code = "use crate::{a::{b, c}, d};\nfn f() { crate::e::g(); super::h::i(); }\n"
    assert _paths_after(code, "crate::") == ["a", "d", "e"]
    assert _paths_after(code, "super::") == ["h"]
