"""Lecture plugins discovered through the ``ml_lectures.lectures`` entry-point group.

Discovery (:func:`discover`) reads installed package metadata only and imports nothing. Loading
(:func:`load_all`, :func:`resolve`) imports each plugin and checks that it is a ``LectureModule`` subclass.

* A plugin whose import raises is an error naming the plugin and its distribution, with the cause chained.
* A plugin whose import fails only because a module is missing is listed as *unavailable* with the missing
  module and an install hint; selecting it is an error.
* The same entry seen twice (an editable install next to its metadata, say) is merged; one name pointing at two
  different targets is an error.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

__all__ = [
    "ENTRY_POINT_GROUP",
    "LectureEntry",
    "LectureNotFoundError",
    "PluginConflictError",
    "PluginLoadError",
    "discover",
    "load_all",
    "resolve",
]

ENTRY_POINT_GROUP = "ml_lectures.lectures"
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
    error: BaseException | None = field(default=None, repr=False)

    @property
    def class_name(self) -> str:
        return self.value.partition(":")[2]

    @property
    def class_path(self) -> str:
        """Dotted path as LightningCLI's ``class_path`` expects it."""
        module, _, attr = self.value.partition(":")
        return f"{module}.{attr}"

    @property
    def status(self) -> str:
        if self.missing is not None:
            return f"unavailable (missing module '{self.missing}'; pip install it, or the extra that provides it)"
        return "ok" if self.cls is not None else "not loaded"

    @property
    def description(self) -> str:
        doc = (self.cls.__doc__ or "") if self.cls is not None else ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def load(self) -> type:
        """Import the plugin class; see the module docstring for the error rules."""
        if self.cls is not None:
            return self.cls
        from lecture_modules.base import LectureModule

        module_name, _, attr = self.value.partition(":")
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
        self.cls = obj
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


def load_all(entries: dict[str, LectureEntry] | None = None) -> dict[str, LectureEntry]:
    """Import every plugin. Broken plugins raise; plugins missing a module are marked unavailable and logged."""
    entries = discover() if entries is None else entries
    for entry in entries.values():
        try:
            entry.load()
        except PluginLoadError:
            if entry.missing is None:
                raise
            log.warning("lecture '%s' is unavailable: %s", entry.name, entry.status)
    return entries


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
