"""What the firstlayer_zoo package's files import, read with ast: every import statement, at module level or inside
a function (a lazy import only defers the need to the first call), relative and absolute.

A package `__init__.py` that hands its `__path__` to a call (registry.import_modules, pkgutil.iter_modules)
imports every module of the package: the source subpackages import their sources that way.

One exception: a module-level `__getattr__` (PEP 562) runs only when its own attribute is asked for
(`firstlayer_zoo.analyse`), not when a submodule is imported, so its imports are not what importing the
module needs."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "scripts" / "firstlayer_zoo"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_files(root: Path = PACKAGE_ROOT) -> dict[str, Path]:
    """{dotted module name: file} of a package and its subpackages."""
    return {module_name(path, root): path for path in root.rglob("*.py")}


def imports(path: Path, files: dict[str, Path], name: str = "") -> tuple[set[str], set[str]]:
    """(the package's modules, other top-level modules) that one file imports; `name` is its own module name.

    Importing `a.b.c` also runs the packages `a.b` and `a`: they count as imported too, except
    the importer's own packages (which Python has already started when it runs the importer).
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    own_packages = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    internal, external = set(), set()
    tree = ast.parse(path.read_text())
    lazy_attributes = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    tree.body = [node for node in tree.body if node not in lazy_attributes]
    if path.name == "__init__.py" and imports_every_module(tree):
        internal.update(module for module in files if module.rpartition(".")[0] == name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from pkg import name` imports the submodule pkg.name where there is one.
            imported = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
        else:
            continue
        for module in imported:
            parts = module.split(".")
            prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if parts[0] in files:
                internal.update(prefix for prefix in prefixes
                                if prefix in files and prefix not in own_packages and prefix != name)
            else:
                external.add(parts[0])
    return internal, external


def imports_every_module(tree: ast.Module) -> bool:
    """Whether a package's `__init__` passes its `__path__` to a call: what imports every module it holds."""
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return any(isinstance(arg, ast.Name) and arg.id == "__path__"
               for call in calls for arg in [*call.args, *(keyword.value for keyword in call.keywords)])


def import_graph(root: Path = PACKAGE_ROOT) -> dict[str, set[str]]:
    """{module: the package's modules it imports}."""
    files = module_files(root)
    return {name: imports(path, files, name)[0] for name, path in files.items()}


def third_party_imports(script: Path, root: Path = PACKAGE_ROOT) -> set[str]:
    """Top-level modules outside the package that a script imports, itself or through the package's modules."""
    files = module_files(root)
    pending, external = imports(script, files)
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        internal, found = imports(files[name], files, name)
        external |= found
        pending |= internal - seen
    return external
