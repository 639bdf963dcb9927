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
    load_all,
    resolve,
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


def test_plugin_raising_on_import_names_plugin_and_distribution(plugin_dir):
    (plugin_dir / "tmp_plugin_broken.py").write_text("raise RuntimeError('boom at import')\n")
    entries = discover([fake_ep("broken", "tmp_plugin_broken:Lecture", "broken-dist")])
    with pytest.raises(PluginLoadError, match=r"'broken'.*'broken-dist'.*boom at import") as info:
        load_all(entries)
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
    entries = discover([fake_ep("nope", "tmp_plugin_notlecture:Lecture")])
    with pytest.raises(PluginLoadError, match=r"not a subclass of lecture_modules.LectureModule"):
        load_all(entries)


def test_missing_attribute_names_the_entry_point(plugin_dir):
    (plugin_dir / "tmp_plugin_noattr.py").write_text("X = 1\n")
    with pytest.raises(PluginLoadError, match="has no attribute 'Lecture'"):
        load_all(discover([fake_ep("noattr", "tmp_plugin_noattr:Lecture")]))


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
