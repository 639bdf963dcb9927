"""Entry-point discovery, loading errors, duplicates and name resolution."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from lecture_modules import LectureModule
from lecture_modules.classification import Classification
from lecture_modules.registry import (
    LectureNotFoundError,
    PluginConflictError,
    PluginLoadError,
    discover,
    lecture_table,
    load_all,
    module_source,
    resolve,
    static_description,
)


def fake_ep(name: str, value: str, dist: str = "some-dist"):
    return SimpleNamespace(name=name, value=value, dist=SimpleNamespace(metadata={"Name": dist}))


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A folder on sys.path for throw-away plugin modules."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for mod in [m for m in sys.modules if m.startswith("tmp_plugin_")]:
        del sys.modules[mod]


def test_installed_classification_entry_point_loads():
    entries = discover()
    assert "classification" in entries
    entry = entries["classification"]
    assert entry.distribution == "ml-lectures"
    assert entry.load() is Classification
    assert entry.description.startswith("Image classification")


def test_discover_imports_nothing(monkeypatch):
    monkeypatch.delitem(sys.modules, "lecture_modules.classification", raising=False)
    discover()
    assert "lecture_modules.classification" not in sys.modules


def test_identical_duplicates_are_merged():
    value = "lecture_modules.classification:Classification"
    entries = discover([fake_ep("classification", value), fake_ep("classification", value)])
    assert list(entries) == ["classification"]


def test_same_name_two_targets_is_an_error():
    with pytest.raises(PluginConflictError, match=r"'classification'.*dist-a.*dist-b"):
        discover([fake_ep("classification", "a.mod:A", "dist-a"), fake_ep("classification", "b.mod:B", "dist-b")])


def test_plugin_raising_on_import_is_broken_and_selecting_it_names_plugin_and_distribution(plugin_dir, caplog):
    (plugin_dir / "tmp_plugin_broken.py").write_text("raise RuntimeError('boom at import')\n")
    built_in = fake_ep("classification", "lecture_modules.classification:Classification")
    entries = discover([fake_ep("broken", "tmp_plugin_broken:Lecture", "broken-dist"), built_in])
    load_all(entries)  # does not raise: the other lectures stay usable
    assert entries["classification"].cls is Classification
    assert entries["broken"].status == "broken (RuntimeError: boom at import)"
    [warning] = caplog.messages
    assert "lecture plugin 'broken' (distribution 'broken-dist') is broken (RuntimeError: boom at import)" in warning
    for _ in range(2):  # the same error each time it is selected; the module is not imported again
        with pytest.raises(PluginLoadError, match=r"'broken'.*'broken-dist'.*boom at import") as info:
            resolve("broken", entries)
        assert isinstance(info.value.__cause__, RuntimeError)  # the original exception is chained


def test_plugin_missing_a_module_is_listed_unavailable(plugin_dir):
    (plugin_dir / "tmp_plugin_extra.py").write_text("import not_installed_extra_pkg\n")
    entries = load_all(discover([fake_ep("needs_extra", "tmp_plugin_extra:Lecture", "extra-dist")]))
    entry = entries["needs_extra"]
    assert entry.cls is None and entry.missing == "not_installed_extra_pkg"
    assert "unavailable" in entry.status and "not_installed_extra_pkg" in entry.status
    with pytest.raises(PluginLoadError, match="not_installed_extra_pkg"):
        resolve("needs_extra", entries)


def test_entry_point_must_be_a_lecture_module(plugin_dir):
    (plugin_dir / "tmp_plugin_notlecture.py").write_text("class Lecture:\n    pass\n")
    entries = load_all(discover([fake_ep("nope", "tmp_plugin_notlecture:Lecture")]))
    assert entries["nope"].status.startswith("broken (") and "not a subclass" in entries["nope"].status
    with pytest.raises(PluginLoadError, match=r"not a subclass of lecture_modules.LectureModule"):
        resolve("nope", entries)


def test_missing_attribute_names_the_entry_point(plugin_dir):
    (plugin_dir / "tmp_plugin_noattr.py").write_text("X = 1\n")
    entries = load_all(discover([fake_ep("noattr", "tmp_plugin_noattr:Lecture")]))
    with pytest.raises(PluginLoadError, match="has no attribute 'Lecture'"):
        resolve("noattr", entries)


@pytest.mark.parametrize("query", ["classification", "Classification", "lecture_modules.classification.Classification"])
def test_resolve_by_name_class_or_path(query):
    entry = resolve(query)
    assert entry.cls is Classification and issubclass(entry.cls, LectureModule)


def test_unknown_name_lists_lectures_and_closest_match():
    with pytest.raises(LectureNotFoundError) as info:
        resolve("Clasification")
    message = str(info.value)
    assert "Did you mean 'Classification'?" in message
    assert "classification (Classification)" in message


def test_static_description_reads_the_docstring_without_importing(plugin_dir, monkeypatch):
    (plugin_dir / "tmp_plugin_static.py").write_text(
        'raise RuntimeError("never imported")\n\nclass Lecture:\n    """One line.\n\n    More."""\n'
    )
    entry = discover([fake_ep("static", "tmp_plugin_static:Lecture")])["static"]
    assert entry.description == "One line."
    assert "tmp_plugin_static" not in sys.modules
    assert "found" in lecture_table({"static": entry})


def test_static_description_follows_one_re_export_without_running_the_package(plugin_dir):
    package = plugin_dir / "tmp_plugin_pkg"
    package.mkdir()
    (package / "__init__.py").write_text('raise RuntimeError("not run")\nfrom .impl import Lecture\n')
    (package / "impl.py").write_text('class Lecture:\n    """Re-exported lecture."""\n')
    assert static_description("tmp_plugin_pkg", "Lecture") == "Re-exported lecture."
    assert module_source("tmp_plugin_pkg.impl") == package / "impl.py"
    assert "tmp_plugin_pkg" not in sys.modules


def test_listing_a_plugin_whose_module_is_gone_says_broken():
    entry = discover([fake_ep("gone", "tmp_plugin_not_there.sub:Lecture")])["gone"]
    assert entry.description == ""
    assert "broken (module 'tmp_plugin_not_there.sub' not found)" in lecture_table({"gone": entry})


def test_every_built_in_lecture_has_a_static_description_equal_to_its_docstring():
    for entry in discover().values():
        static = entry.description
        assert static, f"{entry.value}: no class docstring found statically"
        assert static == entry.load().__doc__.strip().splitlines()[0]
