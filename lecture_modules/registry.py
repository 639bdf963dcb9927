"""Lecture plugins discovered through the ``ml_lectures.lectures`` entry-point group.

Three levels, each cheaper than the next:

* Discovery (:func:`discover`) reads installed package metadata only and imports nothing.
* Listing (:func:`lecture_table`, behind ``python cli.py lectures``) adds what can be read without importing: the
  first line of the class docstring, read with :mod:`ast` from the plugin module's source (following one
  re-export in a package ``__init__.py``). No plugin, no torch and no Lightning is imported, so it is fast.
* Loading (:func:`load_all`, :func:`resolve`) imports each plugin and checks that it is a ``LectureModule``
  subclass.

Loading errors, decided once here:

* A plugin whose import raises, that lacks its attribute, or that is not a ``LectureModule`` is *broken*: the
  entry keeps the error (``status`` says ``broken`` and why), :func:`load_all` logs one warning line naming it
  and goes on, and selecting it (:func:`resolve`) raises :class:`PluginLoadError` with the cause chained.
  One broken third-party plugin therefore never blocks the other lectures.
* A plugin whose import fails only because another module is missing is *unavailable*: the same, with the
  missing module and an install hint.
* The same entry seen twice (an editable install next to its metadata, say) is merged; one name pointing at two
  different targets is an error.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import importlib
import importlib.util
import logging
import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.machinery import PathFinder
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

__all__ = [
    "ENTRY_POINT_GROUP",
    "LectureEntry",
    "LectureNotFoundError",
    "PluginConflictError",
    "PluginLoadError",
    "discover",
    "lecture_table",
    "lectures_command",
    "load_all",
    "resolve",
    "warn_unusable",
]

ENTRY_POINT_GROUP = "ml_lectures.lectures"
DEBUG_ENV = "ML_LECTURES_DEBUG"  # set to 1 for full tracebacks of the errors reported in one line
REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


class PluginLoadError(ImportError):
    """A lecture plugin could not be imported or is not a LectureModule subclass."""


class PluginConflictError(RuntimeError):
    """Two installed distributions register the same lecture name with different targets."""


class LectureNotFoundError(LookupError):
    """The requested lecture is not installed."""


@dataclass
class LectureEntry:
    """One registered lecture, as read from entry-point metadata (and filled in once loaded)."""

    name: str
    value: str  # "package.module:Class"
    distribution: str
    cls: type | None = None
    missing: str | None = None  # name of the missing module when the plugin is unavailable
    error: BaseException | None = field(default=None, repr=False)  # why the import failed (the cause)
    failure: PluginLoadError | None = field(default=None, repr=False)  # raised again each time it is selected

    @property
    def module(self) -> str:
        return self.value.partition(":")[0]

    @property
    def class_name(self) -> str:
        return self.value.partition(":")[2]

    @property
    def class_path(self) -> str:
        """Dotted path as LightningCLI's ``class_path`` expects it."""
        return f"{self.module}.{self.class_name}"

    @property
    def topic(self) -> str:
        """The lecture topic: the package (or module) right under the top-level package, e.g. ``meta_learning``."""
        parts = self.module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    @property
    def status(self) -> str:
        """``ok``, ``unavailable (...)``, ``broken (...)`` once loading was tried; ``not loaded`` before."""
        if self.missing is not None:
            return f"unavailable (missing module '{self.missing}'; pip install it, or the extra that provides it)"
        if self.failure is not None:
            cause = self.error if self.error is not None else self.failure
            reason = f"{type(cause).__name__}: {cause}" if self.error is not None else str(cause)
            return f"broken ({reason})"
        return "ok" if self.cls is not None else "not loaded"

    @property
    def description(self) -> str:
        """First line of the class docstring: from the class once loaded, else read from the source."""
        if self.cls is not None:
            doc = (self.cls.__doc__ or "").strip()
            return doc.splitlines()[0] if doc else ""
        return static_description(self.module, self.class_name)

    def load(self) -> type:
        """Import the plugin class; see the module docstring for the error rules.

        Raises:
            PluginLoadError: the plugin is broken or unavailable (the same error again on every call).
        """
        if self.cls is not None:
            return self.cls
        if self.failure is not None:
            raise self.failure
        try:
            self.cls = self._import()
        except PluginLoadError as exc:
            self.failure = exc
            raise
        return self.cls

    def _import(self) -> type:
        from lecture_modules.base import LectureModule

        module_name, attr = self.module, self.class_name
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            own_root = module_name.split(".")[0]
            if exc.name and exc.name.split(".")[0] != own_root:
                self.missing, self.error = exc.name, exc
                raise PluginLoadError(
                    f"lecture plugin '{self.name}' (distribution '{self.distribution}') is unavailable: it needs "
                    f"the module '{exc.name}', which is not installed. Install it (or the extra of "
                    f"'{self.distribution}' that provides it) and try again."
                ) from exc
            raise self._broken(exc) from exc
        except Exception as exc:  # any import-time failure is the plugin's, and must be reported with its name
            raise self._broken(exc) from exc
        try:
            obj = getattr(module, attr)
        except AttributeError as exc:
            raise PluginLoadError(
                f"lecture plugin '{self.name}' (distribution '{self.distribution}'): module '{module_name}' has no "
                f"attribute '{attr}' (entry point value '{self.value}')"
            ) from exc
        if not (isinstance(obj, type) and issubclass(obj, LectureModule)):
            raise PluginLoadError(
                f"lecture plugin '{self.name}' (distribution '{self.distribution}'): '{self.value}' is not a "
                "subclass of lecture_modules.LectureModule"
            )
        return obj

    def _broken(self, exc: BaseException) -> PluginLoadError:
        self.error = exc
        return PluginLoadError(
            f"lecture plugin '{self.name}' (distribution '{self.distribution}') failed to import "
            f"'{self.value}': {type(exc).__name__}: {exc}"
        )


def _distribution_name(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else "<unknown>"


def discover(eps: list[EntryPoint] | None = None) -> dict[str, LectureEntry]:
    """Read the ``ml_lectures.lectures`` entry points without importing them.

    Args:
        eps: entry points to use instead of the installed ones (tests pass fakes here).

    Raises:
        PluginConflictError: one name registered with two different targets.
    """
    if eps is None:
        eps = list(entry_points(group=ENTRY_POINT_GROUP))
    found: dict[str, LectureEntry] = {}
    for ep in eps:
        entry = LectureEntry(name=ep.name, value=ep.value, distribution=_distribution_name(ep))
        seen = found.get(ep.name)
        if seen is None:
            found[ep.name] = entry
        elif seen.value != entry.value:
            raise PluginConflictError(
                f"lecture name '{ep.name}' is registered twice with different targets: '{seen.value}' "
                f"(distribution '{seen.distribution}') and '{entry.value}' (distribution '{entry.distribution}'). "
                "Uninstall one of them or rename its entry point."
            )
    return dict(sorted(found.items()))


def load_all(entries: dict[str, LectureEntry] | None = None, *, warn: bool = True) -> dict[str, LectureEntry]:
    """Import every plugin. A broken or unavailable plugin is marked as such (see ``LectureEntry.status``) and,
    with ``warn``, logged as one warning line naming it (:func:`warn_unusable`); the others load. Selecting it
    later (:func:`resolve`) is the error."""
    entries = discover() if entries is None else entries
    for entry in entries.values():
        with contextlib.suppress(PluginLoadError):  # kept on the entry: status, failure
            entry.load()
    if warn:
        warn_unusable(entries)
    return entries


def warn_unusable(entries: dict[str, LectureEntry], skip: Iterable[str] = ()) -> None:
    """One warning line for each loaded-and-failed plugin (except the names in ``skip``)."""
    for entry in entries.values():
        if entry.failure is not None and entry.name not in set(skip):
            log.warning(
                "lecture plugin '%s' (distribution '%s') is %s; the other lectures work "
                "('python cli.py lectures --check' lists every plugin's status).",
                entry.name,
                entry.distribution,
                entry.status,
            )


def resolve(query: str, entries: dict[str, LectureEntry] | None = None) -> LectureEntry:
    """Find a lecture by entry-point name, class name or full class path.

    Raises:
        LectureNotFoundError: listing the installed lectures and the closest match.
        PluginLoadError: the lecture exists but is unavailable or broken.
    """
    entries = discover() if entries is None else entries
    for entry in entries.values():
        if query in (entry.name, entry.class_name, entry.class_path, entry.value):
            entry.load()
            return entry
    raise LectureNotFoundError(not_found_message(query, entries))


def not_found_message(query: str, entries: dict[str, LectureEntry]) -> str:
    names = sorted({e.name for e in entries.values()} | {e.class_name for e in entries.values()})
    close = difflib.get_close_matches(query, names, n=1, cutoff=0.5)
    lower = {n.lower(): n for n in names}
    if not close and query.lower() in lower:
        close = [lower[query.lower()]]
    hint = f" Did you mean '{close[0]}'?" if close else ""
    listing = ", ".join(f"{e.name} ({e.class_name})" for e in entries.values()) or "none installed"
    return f"unknown lecture '{query}'.{hint} Installed lectures: {listing}. Run 'python cli.py lectures' for details."


# ---------------------------------------------------------------------------------------------- static listing
def module_source(module: str) -> Path | None:
    """The source file of ``module``, found without importing it or any of its parent packages (None if absent).

    Only the top-level package is looked up through ``sys.meta_path`` (which knows editable installs); each
    subpackage is then searched in its parent's folders, so no package ``__init__`` runs.
    """
    top, *rest = module.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            return None
        spec = PathFinder.find_spec(f"{spec.name}.{part}", list(spec.submodule_search_locations))
    if spec is None or not spec.has_location or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def static_description(module: str, class_name: str, follow: int = 1) -> str:
    """First line of ``module.class_name``'s docstring, read with :mod:`ast` (nothing is imported).

    A class re-exported with ``from ... import`` (a package ``__init__.py``) is followed ``follow`` levels.
    Returns "" when the source or the class cannot be found statically.
    """
    path = module_source(module)
    if path is None:
        return ""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return ""
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            doc = (ast.get_docstring(node) or "").strip()
            return doc.splitlines()[0] if doc else ""
    if follow <= 0:
        return ""
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == class_name:
                    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                    source = _absolute_module(node, package)
                    return static_description(source, alias.name, follow - 1) if source else ""
    return ""


def _absolute_module(node: ast.ImportFrom, package: str) -> str | None:
    if node.level == 0:
        return node.module
    parts = package.split(".")
    if node.level - 1 > len(parts) - 1:
        return None
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def static_status(entry: LectureEntry) -> str:
    """What is known without importing: ``found`` when the module's source exists, else ``broken (...)``."""
    if entry.cls is not None or entry.failure is not None:
        return entry.status
    if module_source(entry.module) is None:
        return f"broken (module '{entry.module}' not found)"
    return "found"


def lecture_table(entries: dict[str, LectureEntry], *, markdown: bool = False, checked: bool = False) -> str:
    """The lecture list printed by ``python cli.py lectures``.

    Args:
        entries: the registered lectures (from :func:`discover`; loaded with :func:`load_all` when ``checked``).
        markdown: the README's table instead: ``| name | lecture | description |``, one row per entry, ordered by
            topic then name; a topic links to ``docs/lectures/<topic>.md`` when that page exists in this repo.
        checked: the entries were loaded, so the status column says ``ok``, ``broken (...)`` or ``unavailable
            (...)``; otherwise it says what is known without importing (``found`` or ``broken (...)``).
    """
    if markdown:
        return _markdown_table(entries.values())
    rows = [("NAME", "CLASS PATH", "DISTRIBUTION", "STATUS", "DESCRIPTION")]
    for entry in entries.values():
        status = entry.status if checked else static_status(entry)
        rows.append((entry.name, entry.class_path, entry.distribution, status, entry.description))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ("  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows)
    return "\n".join(line.rstrip() for line in lines)


def _markdown_table(entries: Iterable[LectureEntry]) -> str:
    lines = ["| name | lecture | description |", "|---|---|---|"]
    for entry in sorted(entries, key=lambda e: (e.topic, e.name)):
        page = Path("docs") / "lectures" / f"{entry.topic}.md"
        topic = f"[{entry.topic}]({page.as_posix()})" if (REPO_ROOT / page).is_file() else entry.topic
        description = entry.description.replace("|", "\\|")
        lines.append(f"| `{entry.name}` | {topic} | {description} |")
    return "\n".join(lines)


def debug_requested(argv: list[str] | None = None) -> bool:
    """Whether full tracebacks were asked for: ``--debug`` in ``argv`` or ``ML_LECTURES_DEBUG=1``."""
    return "--debug" in (argv or []) or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def lectures_command(argv: list[str], *, prog: str = "python cli.py lectures") -> int:
    """``python cli.py lectures [--markdown | --check] [--debug]``; returns the exit code.

    Without options nothing is imported (the status says ``found``); ``--check`` imports every plugin and exits
    with 1 when one is broken or unavailable; ``--markdown`` prints the README's lecture table.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=f"List the installed lectures (entry-point group '{ENTRY_POINT_GROUP}')."
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--markdown", action="store_true", help="print the README's lecture table")
    mode.add_argument(
        "--check", action="store_true", help="import each plugin: ok, broken (error) or unavailable (missing module)"
    )
    parser.add_argument(
        "--debug", action="store_true", help=f"with --check, the traceback of each broken plugin (or set {DEBUG_ENV}=1)"
    )
    args = parser.parse_args(argv)
    try:
        entries = discover()
    except PluginConflictError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.check:
        for entry in entries.values():
            try:
                entry.load()
            except PluginLoadError:
                if args.debug or debug_requested():
                    sys.stderr.write("".join(traceback.format_exception(entry.failure)))
    sys.stdout.write(lecture_table(entries, markdown=args.markdown, checked=args.check) + "\n")
    return 1 if args.check and any(entry.cls is None for entry in entries.values()) else 0
