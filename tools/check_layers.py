#!/usr/bin/env python3
"""Enforce kvstore's import layering: layers point one way.

A module may import from its own layer group and from any lower layer, never from a higher
layer nor from a sibling group of its own layer. Checked statically (stdlib ast only):

* direct imports: every ``import``/``from ... import`` (relative ones resolved, imports inside
  functions and under ``if TYPE_CHECKING:`` included), reported with file:line;
* what importing a module really loads: the transitive closure of its runtime imports, plus
  the imports Python performs by itself (importing ``kvstore.a.b`` runs ``kvstore/__init__.py``
  and ``kvstore/a/__init__.py``), reported with the chain that gets there.

The root package (``kvstore/__init__.py``) is the public facade and belongs to no layer. As
every import of any ``kvstore.x`` runs it, it may import nothing from kvstore when it runs: its
``if TYPE_CHECKING:`` imports and the lazy imports inside its functions (the PEP 562
``__getattr__``) are not followed; any other import of kvstore there is a violation.

Usage: tools/check_layers.py [PACKAGE_DIR]   (default: the kvstore/ package beside tools/)
Exit status 0 with a one-line summary, 1 with a report of every violation.
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Lowest first. Each inner list is one layer; each string in it is one group (a module or a
# package and everything under it). Groups of the same layer are siblings: independent of
# each other.
LAYERS: list[list[str]] = [
    ["kvstore._pb", "kvstore._native", "kvstore.errors", "kvstore.extras"],  # foundation
    ["kvstore.core"],
    ["kvstore.storage", "kvstore.config", "kvstore.security"],
    ["kvstore.rpc"],
    ["kvstore.node"],
    ["kvstore.client"],
    ["kvstore.bench", "kvstore.chaos"],
    ["kvstore.cli"],
    ["kvstore.__main__"],  # `python -m kvstore`: runs the CLI
]

# Third-party packages only some modules may import (the module or package named, or any
# module under it): gRPC stays below the transport seam (kvstore.rpc, and the clients, which
# are gRPC clients), RocksDB inside the storage engine, X.509 and keys inside kvstore.security.
# kvstore.bench.wire is kvbench's gRPC to services that are not kvstore's (etcd's KV API, the
# floor's echo).
CONFINED: dict[str, tuple[str, ...]] = {
    "grpc": ("kvstore.rpc", "kvstore.client", "kvstore._pb", "kvstore.bench.wire"),
    "grpc_health": ("kvstore.rpc", "kvstore.client"),
    "rocksdict": ("kvstore.storage.engine",),
    "cryptography": ("kvstore.security",),
}

# Directories (relative to the package) of generated code: not parsed, their modules are leaves.
GENERATED: tuple[str, ...] = ("_pb",)

# Modules that exist without a .py file: compiled extensions and their stubs.
_EXTENSION_SUFFIXES: tuple[str, ...] = (".pyi", ".so", ".pyd")


@dataclass(frozen=True)
class Import:
    """One import statement's resolved target inside the package."""

    target: str
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`
    in_function: bool  # inside a def: runs when called, still a dependency
    implicit: bool = False  # a parent package Python runs before the module


@dataclass
class Module:
    name: str
    path: Path
    is_package: bool
    parsed: bool
    imports: list[Import] = field(default_factory=list)


@dataclass(frozen=True)
class Violation:
    kind: str  # "direct", "type-only", "transitive", "facade", "unassigned", "confined"
    module: str
    target: str
    message: str
    location: str = ""  # file:line of the import, for direct ones
    chain: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"[{self.kind}] {self.message}"
        if self.location:
            text += f"\n    at {self.location}"
        if self.chain:
            text += "\n    chain: " + " -> ".join(self.chain)
        return text


@dataclass(frozen=True)
class Group:
    name: str
    layer: int


# --- discovery ---------------------------------------------------------------------------


def _module_name(root: str, package_dir: Path, path: Path) -> tuple[str, bool]:
    rel = path.relative_to(package_dir)
    parts = [root, *rel.parts[:-1]]
    stem = rel.name.split(".", 1)[0]  # _native.cpython-311-x86_64-linux-gnu.so -> _native
    if stem == "__init__":
        return ".".join(parts), True
    return ".".join([*parts, stem]), False


def discover(package_dir: Path, generated: Sequence[str] = GENERATED) -> dict[str, Module]:
    """Every module of the package, by dotted name (the package's directory name is the root)."""
    root = package_dir.name
    modules: dict[str, Module] = {}
    for path in sorted(package_dir.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        rel = path.relative_to(package_dir)
        is_generated = bool(rel.parts) and rel.parts[0] in generated and len(rel.parts) > 1
        if path.suffix == ".py":
            name, is_package = _module_name(root, package_dir, path)
            modules[name] = Module(name, path, is_package, parsed=not is_generated)
        elif path.suffix in _EXTENSION_SUFFIXES:
            name, is_package = _module_name(root, package_dir, path)
            modules.setdefault(name, Module(name, path, is_package, parsed=False))
    return modules


# --- parsing -----------------------------------------------------------------------------


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _walk(
    node: ast.AST, type_only: bool = False, in_function: bool = False
) -> Iterator[tuple[ast.AST, bool, bool]]:
    """Every node under `node` with whether it is type-only and whether it is in a function."""
    for child in ast.iter_child_nodes(node):
        yield child, type_only, in_function
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, True, in_function
                yield from _walk(stmt, True, in_function)
            for stmt in child.orelse:
                yield stmt, type_only, in_function
                yield from _walk(stmt, type_only, in_function)
            continue
        nested = in_function or isinstance(
            child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        )
        yield from _walk(child, type_only, nested)


def _resolve_existing(name: str, modules: dict[str, Module]) -> str | None:
    """`name` if it is a module, else its longest prefix that is one."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _base_package(module: Module, level: int) -> str | None:
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    if level - 1 > len(parts) - 1:
        return None
    return ".".join(parts[: len(parts) - (level - 1)])


def _reexports(module: Module) -> dict[str, str]:
    """Names a package's __init__ binds by importing them: name -> absolute source module."""
    bound: dict[str, str] = {}
    if not module.parsed:
        return bound
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    for node, _type_only, _in_function in _walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _base_package(module, node.level)
                if package is None:
                    continue
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                if alias.name != "*":
                    bound[alias.asname or alias.name] = f"{base}.{alias.name}"
    return bound


def _dynamic_import(call: ast.Call) -> str | None:
    """The module `importlib.import_module("a.b")` or `__import__("a.b")` names, if literal."""
    func = call.func
    named = (isinstance(func, ast.Name) and func.id in {"import_module", "__import__"}) or (
        isinstance(func, ast.Attribute) and func.attr == "import_module"
    )
    if not named or not call.args:
        return None
    first = call.args[0]
    return first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else None


def parse_imports(module: Module, modules: dict[str, Module]) -> list[Import]:
    """The module's imports of modules inside the package (targets resolved to modules)."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), str(module.path))
    found: list[Import] = []

    def add(name: str, line: int, type_only: bool, in_function: bool) -> None:
        target = _resolve_existing(name, modules)
        if target is None or target == module.name:
            return
        imp = Import(target, line, type_only, in_function)
        if imp not in found:
            found.append(imp)

    for node, type_only, in_function in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno, type_only, in_function)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _base_package(module, node.level)
                if package is None:
                    continue
                base = f"{package}.{base}" if base else package
            if base:
                add(base, node.lineno, type_only, in_function)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:  # `from a.b import c` where a.b.c is a submodule
                    add(full, node.lineno, type_only, in_function)
                elif base in modules and modules[base].is_package:
                    # a name the package re-exports (eagerly or lazily): its source counts
                    source = _reexports(modules[base]).get(alias.name)
                    if source is not None:
                        add(source, node.lineno, type_only, in_function)
        elif isinstance(node, ast.Call):
            name = _dynamic_import(node)
            if name is not None:
                add(name, node.lineno, type_only, in_function)
    return found


# --- checking ----------------------------------------------------------------------------


def _group_of(name: str, groups: list[Group]) -> Group | None:
    best: Group | None = None
    for group in groups:
        if (name == group.name or name.startswith(group.name + ".")) and (
            best is None or len(group.name) > len(best.name)
        ):
            best = group
    return best


def _forbidden(source: Group, target: Group) -> bool:
    return target.layer > source.layer or (
        target.layer == source.layer and target.name != source.name
    )


def _describe(group: Group) -> str:
    return f"layer {group.layer} {group.name}"


def _label(name: str, root: str, via_parent: bool) -> str:
    return f"{name} (package __init__)" if via_parent or name == root else name


@dataclass
class Graph:
    modules: dict[str, Module]
    edges: int


def build(package_dir: Path, generated: Sequence[str] = GENERATED) -> Graph:
    modules = discover(package_dir, generated)
    edges = 0
    for module in modules.values():
        if module.parsed:
            module.imports = parse_imports(module, modules)
        parts = module.name.split(".")
        for depth in range(1, len(parts)):  # the parent packages Python runs first
            parent = ".".join(parts[:depth])
            if parent in modules:
                module.imports.append(Import(parent, 0, False, False, implicit=True))
        edges += len(module.imports)
    return Graph(modules, edges)


def _runtime_edges(module: Module, root: str) -> list[Import]:
    """The imports that run when the module is imported (the ones the closure follows)."""
    if module.name == root:  # the facade: its type-only and lazy imports never run on import
        return [imp for imp in module.imports if not imp.type_only and not imp.in_function]
    return [imp for imp in module.imports if not imp.type_only]


def check(
    package_dir: Path,
    layers: list[list[str]] = LAYERS,
    generated: Sequence[str] = GENERATED,
) -> list[Violation]:
    """Every layering violation in the package at `package_dir`."""
    return _check(build(package_dir, generated), package_dir, layers)


def _check(graph: Graph, package_dir: Path, layers: list[list[str]]) -> list[Violation]:
    root = package_dir.name
    modules = graph.modules
    groups = [Group(name, index) for index, layer in enumerate(layers) for name in layer]
    base = package_dir.parent
    violations: list[Violation] = []

    def where(module: Module, line: int) -> str:
        try:
            path = module.path.relative_to(base)
        except ValueError:
            path = module.path
        return f"{path}:{line}"

    # The facade: nothing from the package may run when it is imported.
    facade = modules.get(root)
    if facade is not None:
        for imp in _runtime_edges(facade, root):
            violations.append(
                Violation(
                    "facade",
                    root,
                    imp.target,
                    f"{root}/__init__.py imports {imp.target} at runtime: every import of "
                    f"any {root}.x runs it (import lazily in __getattr__, or under "
                    "TYPE_CHECKING)",
                    where(facade, imp.line),
                )
            )

    for name, module in sorted(modules.items()):
        if name == root:
            continue
        group = _group_of(name, groups)
        if group is None:
            violations.append(
                Violation("unassigned", name, "", f"{name} belongs to no layer in the table")
            )
            continue

        # Direct imports, type-only and lazy ones included.
        direct_groups: set[str] = set()
        for imp in module.imports:
            if imp.implicit:
                continue
            target_group = _group_of(imp.target, groups)
            if target_group is None or not _forbidden(group, target_group):
                continue
            if not imp.type_only:
                direct_groups.add(target_group.name)
            kind = "type-only" if imp.type_only else "direct"
            note = " (under TYPE_CHECKING)" if imp.type_only else ""
            note += " (inside a function)" if imp.in_function else ""
            violations.append(
                Violation(
                    kind,
                    name,
                    imp.target,
                    f"{name} ({_describe(group)}) imports {imp.target} "
                    f"({_describe(target_group)}){note}",
                    where(module, imp.line),
                )
            )

        # What importing it loads: BFS over runtime edges, shortest chains first.
        parent: dict[str, tuple[str, Import] | None] = {name: None}
        queue: deque[str] = deque([name])
        reported: set[str] = set(direct_groups)
        while queue:
            current = queue.popleft()
            for imp in _runtime_edges(modules[current], root):
                if imp.target in parent:
                    continue
                parent[imp.target] = (current, imp)
                target_group = _group_of(imp.target, groups)
                if target_group is not None and _forbidden(group, target_group):
                    # An entry into a forbidden group: report it, and do not go on through it
                    # (what it loads in turn is the reason it is forbidden, not news).
                    if target_group.name not in reported:
                        reported.add(target_group.name)
                        chain, hops = _chain(imp.target, parent, modules, root, where)
                        violations.append(
                            Violation(
                                "transitive",
                                name,
                                imp.target,
                                f"importing {name} ({_describe(group)}) loads {imp.target} "
                                f"({_describe(target_group)}); hops: {', '.join(hops)}",
                                chain=chain,
                            )
                        )
                    continue
                queue.append(imp.target)
    return violations


def _chain(
    end: str,
    parent: dict[str, tuple[str, Import] | None],
    modules: dict[str, Module],
    root: str,
    where: Callable[[Module, int], str],
) -> tuple[tuple[str, ...], list[str]]:
    names: list[str] = []
    hops: list[str] = []
    current: str | None = end
    while current is not None:
        step = parent[current]
        names.append(_label(current, root, step is not None and step[1].implicit))
        if step is None:
            break
        source, imp = step
        location = (
            f"{source} runs its parent package"
            if imp.implicit
            else where(modules[source], imp.line)
        )
        hops.append(location)
        current = source
    names.reverse()
    hops.reverse()
    return tuple(names), hops


def check_confined(
    package_dir: Path, confined: dict[str, tuple[str, ...]] = CONFINED
) -> list[Violation]:
    """Imports of a confined third-party package from a module not allowed to make them
    (type-only and function-level imports included)."""
    violations: list[Violation] = []
    base = package_dir.parent
    for name, module in sorted(discover(package_dir).items()):
        if not module.parsed:
            continue
        tree = ast.parse(module.path.read_text(), filename=str(module.path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [node.module]
            else:
                continue
            for target in targets:
                top = target.split(".")[0]
                allowed = confined.get(top)
                if allowed is None or any(_within(name, a) for a in allowed):
                    continue
                location = f"{module.path.relative_to(base)}:{node.lineno}"
                violations.append(
                    Violation(
                        kind="confined",
                        module=name,
                        target=target,
                        message=f"{name} imports {target}: only {', '.join(allowed)} may",
                        location=location,
                    )
                )
    return violations


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) > 1 or (args and args[0] in {"-h", "--help"}):
        print(__doc__)
        return 2
    package_dir = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "kvstore"
    package_dir = package_dir.resolve()
    if not (package_dir / "__init__.py").is_file():
        print(f"check_layers: {package_dir} is not a package", file=sys.stderr)
        return 2
    graph = build(package_dir)
    violations = _check(graph, package_dir, LAYERS) + check_confined(package_dir)
    if violations:
        print(f"check_layers: {len(violations)} layering violation(s) in {package_dir.name}/")
        print("(layers, lowest first: " + " < ".join(" | ".join(g) for g in LAYERS) + ")")
        for violation in violations:
            print(violation)
        return 1
    print(
        f"check_layers: {len(graph.modules)} modules, {graph.edges} import edges, "
        "layers point one way"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
