"""Every import arrow points down (STYLE.md, "Layers"), checked by reading the sources with ``ast``.

```
cli.py                          # LectureCLI, run(args), main()
lecture_modules/<topic>/        # one package (or module) per lecture topic; topics never import each other
callbacks/                      # imports only the shared layer (and datamodules); configs wire them in
lecture_modules/{base,nets,...} # the shared layer
datamodules/                    # never imports lecture_modules or cli
```

Every import counts: at module level, inside functions, under ``TYPE_CHECKING``; relative imports are resolved.
``benchmarks/`` and ``tests/`` are exempt (they sit on top of everything).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]  # not tests.helpers: this test needs no Lightning

SHARED = {"base", "nets", "figures", "schedules", "registry", "tracking", "checkpoints", "parse_errors"}
PACKAGE_FILES = ("__init__.py", "__main__.py")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``; ``from a import b`` gives ``a.b`` and ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source, filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
    return found


def _topic(module: str) -> str | None:
    """The topic of a ``lecture_modules`` module (``lecture_modules.meta_learning.maml`` -> ``meta_learning``);
    None for the shared layer and the package itself."""
    parts = module.split(".")
    if parts[0] != "lecture_modules" or len(parts) < 2 or parts[1] in SHARED or parts[1] in ("__init__", "__main__"):
        return None
    return parts[1]


def _is_module(name: str) -> bool:
    """Whether ``lecture_modules.x`` names a module or package of the repo (not an attribute such as a class)."""
    parts = name.split(".")
    base = REPO.joinpath(*parts)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _arrows(layer: str) -> list[tuple[str, int, str]]:
    """(file, line, imported module) for every import of a repo module in the files of ``layer``."""
    files = [REPO / "cli.py"] if layer == "cli" else sorted((REPO / layer).rglob("*.py"))
    arrows = []
    for path in files:
        for line, name in _imports(path):
            if name.split(".")[0] in ("lecture_modules", "datamodules", "callbacks", "cli") and _is_module(name):
                arrows.append((str(path.relative_to(REPO)), line, name))
    return arrows


def _violations(layer: str, forbidden) -> list[str]:
    return sorted({f"{file}:{line} imports {name}" for file, line, name in _arrows(layer) if forbidden(file, name)})


def test_datamodules_import_neither_lecture_modules_nor_cli():
    bad = _violations("datamodules", lambda file, name: name.split(".")[0] in ("lecture_modules", "cli"))
    assert not bad, "datamodules/ is the bottom layer:\n" + "\n".join(bad)


def test_topics_never_import_each_other_and_the_shared_layer_imports_no_topic():
    def forbidden(file: str, name: str) -> bool:
        target = _topic(name)
        return target is not None and target != _topic(_module_name(REPO / file))

    bad = _violations("lecture_modules", forbidden)
    assert not bad, "a lecture topic (or the shared layer) imports another topic:\n" + "\n".join(bad)


def test_callbacks_import_only_the_shared_layer_and_datamodules():
    def forbidden(file: str, name: str) -> bool:
        return name.split(".")[0] == "cli" or _topic(name) is not None

    bad = _violations("callbacks", forbidden)
    assert not bad, "callbacks/ may import lecture_modules.{" + ",".join(sorted(SHARED)) + "}:\n" + "\n".join(bad)


def test_nothing_in_lecture_modules_imports_callbacks():
    bad = _violations("lecture_modules", lambda file, name: name.split(".")[0] == "callbacks")
    assert not bad, (
        "callbacks/ sit on the shared layer and are wired in by configs, never imported by it:\n" + "\n".join(bad)
    )


def test_nothing_in_lecture_modules_imports_cli():
    bad = _violations("lecture_modules", lambda file, name: name.split(".")[0] == "cli")
    assert not bad, "cli.py is the top layer:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from . import core", "lecture_modules.meta_learning.core"),
        ("from ..classification import Classification", "lecture_modules.classification"),
        ("import cli", "cli"),
        ("def f():\n    from datamodules.text import QA", "datamodules.text"),
    ],
)
def test_the_walker_sees_relative_and_function_level_imports(source, expected):
    path = REPO / "lecture_modules" / "meta_learning" / "probe.py"
    assert expected in [name for _, name in _imports(path, source)]
