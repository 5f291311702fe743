"""The package's own source as data: which files a module can execute (its import closure), and their hash.

A step's code is the import closure of its module inside the package: the modules it imports, transitively, at any
depth and from anywhere in a function, with the __init__ of every package on the way, and the data folders beside
those modules (a folder without __init__.py inside a package, such as hcmi/model/configs/: the files the code reads),
and the top-level folders a module reads as code (READS: the report notebooks, notebooks/). The workflows depend on
these files, and results record their hash.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PACKAGE = PACKAGE_DIR.name


def notebooks_dir() -> Path:
    """The report notebooks: notebooks/ beside the package in a checkout, hcmi/notebooks/ in an installed wheel."""
    top = PACKAGE_DIR.parent / "notebooks"
    return top if top.is_dir() else PACKAGE_DIR / "notebooks"


# modules that read a folder outside their own as code (a notebook edit re-runs the reports, and nothing else)
READS = {"hcmi.report.render": notebooks_dir}
# modules that import by a table of "module:name" strings (a dict literal), chosen at run time: their code holds the
# modules the table names, all of them or only the chosen keys (a model's head: code_files(..., heads=...))
DISPATCH = {"hcmi.model.factory": "HEADS"}


def _module_path(module: str) -> Path | None:
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """Modules of the package imported anywhere in a file (top level and inside functions)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {name for name in found if name.split(".")[0] == PACKAGE}


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@lru_cache(maxsize=None)
def code_closure(module: str) -> tuple[Path, ...]:
    """Every source file of the package that running `module` can execute (importing a module also runs the
    __init__ of each package above it)."""
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        for candidate in _with_parents(name):
            if candidate in seen:
                continue
            path = _module_path(candidate)
            if path is None:
                continue
            seen[candidate] = path
            todo.extend(_imports(path, candidate))
    return tuple(sorted(set(seen.values())))


def data_folders(package_dir: Path) -> list[Path]:
    """The files of the non-package folders directly inside a package's folder."""
    files = []
    for folder in package_dir.iterdir():
        if folder.is_dir() and not (folder / "__init__.py").exists() and folder.name != "__pycache__" \
                and folder != notebooks_dir():
            files += [p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return files


def module_docstring(module: str) -> str:
    """A module's docstring, read from its source (nothing imported)."""
    return ast.get_docstring(ast.parse(_module_path(module).read_text())) or ""


@lru_cache(maxsize=None)
def dispatch_table(module: str) -> dict[str, str]:
    """The table of a dispatching module (DISPATCH), read from its source."""
    name = DISPATCH[module]
    for node in ast.parse(_module_path(module).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError(f"{module} defines no table {name}")


def code_files(module: str, heads: tuple[str, ...] | None = None) -> list[str]:
    """The code of `module` as paths relative to the repository root (the package's parent), sorted; with `heads`,
    only those entries of a dispatch table (the model heads a job builds), else every one."""
    files = set(code_closure(module))
    for dispatcher in DISPATCH:
        if _module_path(dispatcher) in files:
            for key, target in dispatch_table(dispatcher).items():
                if heads is None or key in heads:
                    files.update(code_closure(target.split(":")[0]))
    for folder in {path.parent for path in files}:
        files.update(data_folders(folder))
    for reader, folder in READS.items():
        if _module_path(reader) in files:
            files.update(p for p in folder().rglob("*") if p.is_file() and ".ipynb_checkpoints" not in p.parts)
    root = PACKAGE_DIR.parent
    return sorted(str(path.relative_to(root)) for path in files)


def code_hash(module: str, heads: tuple[str, ...] | None = None) -> str:
    """sha256 over the code files of `module` (their paths and contents)."""
    digest = hashlib.sha256()
    root = PACKAGE_DIR.parent
    for name in code_files(module, heads):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()
