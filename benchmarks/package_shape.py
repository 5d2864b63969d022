"""The package's shape, for reviews of its layout: modules per folder, the longest
functions, imports made inside functions, and how often one decode asks the model
registry for something (and reads registry.json).

    python benchmarks/package_shape.py [--longest 8]
"""

from __future__ import annotations

import argparse
import ast
import builtins
import collections
import io
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "invgray_cli"
SAMPLE = PACKAGE.parent / "samples" / "kodim23.png"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def modules_per_folder() -> dict[str, int]:
    counts: dict[str, int] = collections.Counter()
    for path in modules():
        folder = path.parent.relative_to(PACKAGE.parent).as_posix()
        counts[folder] += 1
    return dict(sorted(counts.items()))


def longest_functions(count: int) -> list[tuple[int, str]]:
    found = []
    for path in modules():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{path.relative_to(PACKAGE.parent).as_posix()}:{node.name}"
                found.append((node.end_lineno - node.lineno + 1, name))
    return sorted(found, reverse=True)[:count]


def imports_inside_functions() -> tuple[int, collections.Counter]:
    """Import statements whose nearest enclosing scope is a function."""
    per_module: collections.Counter = collections.Counter()

    def visit(node: ast.AST, in_function: bool, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                per_module[where] += 1
            visit(child, inside, where)

    for path in modules():
        visit(ast.parse(path.read_text()), False, path.relative_to(PACKAGE.parent).as_posix())
    return sum(per_module.values()), per_module


def registry_lookups_per_decode() -> tuple[int, int]:
    """(calls into the model registry's functions, reads of registry.json) while one
    sample pair decodes on the CPU, after a first decode has warmed every cache. Every
    name a module imported from the registry is wrapped, cached functions included."""
    sys.path.insert(0, str(PACKAGE.parent))
    import invgray_cli

    data = SAMPLE.read_bytes()
    encoded = invgray_cli.encode(data)
    invgray_cli.decode_array(encoded.gray, encoded.residual)
    registry_names = {"invgray_cli.engines.registry", "invgray_cli.engines.registry"}
    calls = 0
    reads = 0

    def counted(function):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            nonlocal calls
            calls += 1
            return function(*args, **kwargs)
        return wrapper

    patched = []
    for module in [m for name, m in sys.modules.items() if name.startswith("invgray_cli") and m is not None]:
        if module.__name__ in registry_names:
            continue
        for attribute, value in list(vars(module).items()):
            if callable(value) and getattr(value, "__module__", None) in registry_names \
                    and not isinstance(value, type):
                patched.append((module, attribute, value))
                setattr(module, attribute, counted(value))
    real_open = io.open

    def counting_open(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        nonlocal reads
        if str(file).endswith("registry.json"):
            reads += 1
        return real_open(file, *args, **kwargs)

    builtins.open, io.open = counting_open, counting_open
    try:
        invgray_cli.decode_array(encoded.gray, encoded.residual)
    finally:
        builtins.open, io.open = real_open, real_open
        for module, attribute, value in patched:
            setattr(module, attribute, value)
    return calls, reads


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--longest", type=int, default=8)
    args = parser.parse_args(argv)
    print("modules per folder:")
    for folder, count in modules_per_folder().items():
        print(f"  {folder:28} {count}")
    print(f"  {'total':28} {len(modules())}")
    print("longest functions (lines):")
    for lines, name in longest_functions(args.longest):
        print(f"  {lines:4}  {name}")
    total, per_module = imports_inside_functions()
    print(f"imports inside functions: {total} (most: "
          + ", ".join(f"{name} {n}" for name, n in per_module.most_common(4)) + ")")
    calls, reads = registry_lookups_per_decode()
    print(f"one decode: {calls} calls into the model registry, {reads} reads of registry.json")


if __name__ == "__main__":
    main()
