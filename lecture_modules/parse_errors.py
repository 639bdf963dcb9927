"""One line for a command-line or config mistake that jsonargparse reports as a many-line tree.

jsonargparse explains a rejected value by nesting: ``Parser key "data":`` / ``Does not validate against any of the
Union subtypes`` / ``Errors:`` / ``- Parser key "batch_size":`` / ``Expected a <class 'int'>. Got value: abc``.
:func:`one_line` keeps what a user acts on: the setting as written in a config (``data.init_args.batch_size``), the
reason, and a "did you mean" for a misspelt setting or class path. :func:`check_config_files` reads each
``--config`` file first, so a missing file or a YAML syntax error names the file, line and column.

Pure string work plus imports of the classes named in the message (for suggestions); no Lightning.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import re
import typing
from collections.abc import Iterable
from pathlib import Path

__all__ = ["check_config_files", "init_arguments", "init_parameters", "one_line", "setting_names", "suggest"]

_KEY = re.compile(r'^-?\s*Parser key "([^"]+)":\s*(.*)$')
_CLASS_PATH = re.compile(r"^-?\s*Problem with given class_path '([^']+)':\s*$")
_NESTED_ARG = re.compile(r"^Given value: NestedArg\(key='([^']+)', val=(.*)\)$")
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Expected a <class 'NoneType'>",
    "Given value type:",
    "Given value:",
    "Expected a path but",
)


def check_config_files(argv: list[str]) -> str | None:
    """The one-line problem with a ``--config`` / ``-c`` file of ``argv`` (missing, unreadable, not YAML), or None."""
    import yaml

    for path in _config_paths(argv):
        file = Path(path)
        if not file.is_file():
            what = "is a folder, not a file" if file.is_dir() else "not found"
            return f"config file {path}: {what} (given to --config)"
        try:
            yaml.safe_load(file.read_text(encoding="utf-8"))
        except OSError as exc:
            return f"config file {path}: cannot be read ({exc.strerror or exc})"
        except UnicodeDecodeError:
            return f"config file {path}: not UTF-8 text"
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
            if context and start is not None:
                problem += f" ({context} from line {start.line + 1}, column {start.column + 1})"
            return f"config file {path}: YAML syntax error{where}: {problem}"
    return None


def _config_file_with(key: str, argv: list[str]) -> str | None:
    """The last ``--config`` file of ``argv`` that sets the dotted ``key`` (the one that wins), or None."""
    import yaml

    found = None
    for path in _config_paths(argv):
        try:
            node = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        *parents, last = key.split(".")
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and last in node:
            found = path
    return found


def _config_paths(argv: list[str]) -> list[str]:
    paths = []
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(argv[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.split("=", 1)[1])
    return paths


def one_line(message: str, argv: list[str] | None = None) -> str:
    """jsonargparse's error ``message`` as one line naming the setting (config key), the reason and a suggestion;
    with ``argv``, an unknown key found in a ``--config`` file names that file."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "invalid command line"
    first = lines[0]
    if first.startswith("unrecognized arguments:"):
        return _unrecognized(first.split(":", 1)[1].split(), prefix="", owner=None)
    if match := re.match(r"Subcommand '[^']+' does not accept option '([^']+)'", first):  # a key of a config file
        found = _config_file_with(match.group(1), argv or [])
        return _unrecognized([match.group(1)], prefix="", owner=None) + (f" (in {found})" if found else "")
    if first.startswith("Problems parsing config"):
        return "a config value is not valid YAML: " + " ".join(lines)[len("Problems parsing config: ") :]
    keys, class_path, reason, nested, given = _walk(lines)
    if not keys:
        return " ".join(lines)
    return _explain(".init_args.".join(keys), reason or "invalid value", class_path, nested, given)


def _walk(lines: list[str]) -> tuple[list[str], str | None, str | None, str | None, str | None]:
    """(nested "Parser key" names, the class path the error is about, the first reason line, NestedArg key, the
    value given)."""
    keys: list[str] = []
    class_path = reason = nested = given = None
    for line in lines:
        bare = line.lstrip("- ").strip()
        if bare.startswith("Given value: ") and not bare.startswith("Given value: NestedArg") and given is None:
            given = bare[len("Given value: ") :]
        if match := _KEY.match(line):
            keys.append(match.group(1))
            if match.group(2) and reason is None:
                reason = match.group(2)
        elif match := _CLASS_PATH.match(line):
            class_path = class_path or match.group(1)
        elif match := _NESTED_ARG.match(bare):
            nested = nested or match.group(1)
        elif bare.startswith(_NOISE):
            continue
        elif reason is None:
            reason = bare
    return keys, class_path, reason, nested, given


def _explain(base: str, reason: str, class_path: str | None, nested: str | None, given: str | None) -> str:
    """One line from the setting's base key (``data.init_args.source``: each nested "Parser key" level lies in the
    ``init_args`` of the one above), jsonargparse's reason, the class path it concerns and the value given."""
    owner = f" of {class_path}" if class_path else ""
    option = None
    if match := re.match(r"Option '([^']+)' is not accepted", reason):
        option = match.group(1)
    elif reason.startswith("unrecognized arguments:"):
        option = reason.split(":", 1)[1].split()[0].lstrip("-").split("=", 1)[0]
    if option is not None:
        full = f"{base}.init_args.{option}"
        close = suggest(option, setting_names(class_path))
        return f"unknown setting {full}{owner}" + (f"; did you mean {base}.init_args.{close}?" if close else "")
    if match := re.match(r"the following arguments are required: (.+)", reason):
        names = [f"{base}.init_args.{n.strip()}" for n in match.group(1).split(",")]
        return f"{', '.join(names)} is required (no default): set it in the config or on the command line"
    if match := re.match(r"module '([^']+)' has no attribute '([^']+)'", reason) or re.match(
        r"No module named '([^']+)'", reason
    ):
        wanted = class_path or match.group(0)
        close = suggest(wanted, _classes_near(wanted))
        return f"{base}: no class {wanted}" + (f"; did you mean {close}?" if close else "")
    key = base if not nested or base.endswith(nested) else f"{base}.init_args.{nested}"
    if match := re.match(r"Expected a (?:<class '([^']+)'>|(.+?))\.? ?(?:Got value: (.*))?$", reason):
        expected = (match.group(1) or match.group(2) or "").replace("typing.Literal", "one of ")
        value = match.group(3) if match.group(3) is not None else given
        return f"{key}: expected {expected}" + (f", got {value!r}" if value is not None else "")
    return f"{key}: {reason}"


def _unrecognized(tokens: list[str], prefix: str, owner: str | None) -> str:
    """``--trainer.nosuch 1`` -> ``unknown setting trainer.nosuch (did you mean ...)``."""
    options = [t for t in tokens if t.startswith("--")] or tokens
    option = options[0].lstrip("-").split("=", 1)[0]
    key = f"{prefix}.{option}" if prefix and not option.startswith(prefix) else option
    head, _, name = key.rpartition(".")
    candidates: Iterable[str] = ()
    if head == "trainer":
        candidates = init_arguments("lightning.pytorch.Trainer")
    elif owner:
        candidates = init_arguments(owner)
    of = f" of {owner}" if owner else ""
    close = suggest(name, candidates)
    return f"unknown setting {key}{of}" + (f"; did you mean {head}.{close}?" if close and head else "")


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of ``cls.__init__`` along its class hierarchy (``**kwargs`` followed), each as the
    first class in the MRO that names it declares it (with its default)."""
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        for p in params:
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                found.setdefault(p.name, p)
    return found


def init_arguments(class_path: str | None) -> list[str]:
    """The keyword arguments of ``class_path``'s ``__init__`` along its class hierarchy (``**kwargs`` followed)."""
    cls = _import(class_path) if class_path else None
    return list(init_parameters(cls)) if inspect.isclass(cls) else []


def setting_names(class_path: str | None) -> list[str]:
    """Every setting of ``class_path`` as written under its ``init_args``: its ``__init__`` arguments, and for an
    argument typed with a dataclass (a network spec) each field as ``arg.field``."""
    names = init_arguments(class_path)
    cls = _import(class_path) if class_path else None
    for klass in getattr(cls, "__mro__", ()):
        init = klass.__dict__.get("__init__")
        try:
            hints = typing.get_type_hints(init) if init is not None else {}
        except Exception:  # an annotation that does not resolve here: no nested names from it
            hints = {}
        for arg, hint in hints.items():
            if dataclasses.is_dataclass(hint):
                names += [f"{arg}.{field.name}" for field in dataclasses.fields(hint)]
    return list(dict.fromkeys(names))


def _classes_near(class_path: str) -> list[str]:
    """Class paths a misspelt ``class_path`` may have meant: the classes of its module (or of its package's
    modules when the module itself is misspelt) and every registered lecture."""
    module_name, _, _ = class_path.rpartition(".")
    found: list[str] = []
    module = _import(module_name)
    if module is not None:
        found += [f"{module_name}.{n}" for n, obj in vars(module).items() if inspect.isclass(obj) and n[:1] != "_"]
    try:
        from lecture_modules.registry import discover

        found += [entry.class_path for entry in discover().values()]
    except Exception:  # suggestions only: a broken registry must not hide the error being reported
        pass
    return found


def suggest(given: str, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(given, list(dict.fromkeys(candidates)), n=1, cutoff=0.6)
    return close[0] if close else None


def _import(dotted: str | None) -> object | None:
    """The module or attribute ``dotted`` names, or None when it does not import."""
    if not dotted:
        return None
    try:
        return importlib.import_module(dotted)
    except ImportError:
        pass
    module_name, _, attr = dotted.rpartition(".")
    if not module_name:
        return None
    try:
        return getattr(importlib.import_module(module_name), attr, None)
    except ImportError:
        return None
