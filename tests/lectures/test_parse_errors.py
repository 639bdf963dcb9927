"""jsonargparse's many-line error trees become one line naming the config key (lecture_modules/parse_errors.py).

The messages below are the ones jsonargparse 4.5x writes; ``tests/test_bad_inputs.py`` runs the same mistakes end to
end, so a change of jsonargparse's wording shows up there too.
"""

from __future__ import annotations

import pytest

from lecture_modules.parse_errors import check_config_files, one_line, setting_names

UNKNOWN_OPTION = """Parser key "model":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lecture_modules.base.LectureModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'lecture_modules.classification.Classification':
        Option 'nte' is not accepted
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='nte', val='1')"""

REQUIRED = """Parser key "data":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.datamodule.LightningDataModule'>, <class 'NoneType'>]
  Errors:
    - Parser key "source":
        Does not validate against any of the Union subtypes
        Subtypes: [<class 'datamodules.sources.ImageSource'>, <class 'NoneType'>]
        Errors:
          - the following arguments are required: root
          - Expected a <class 'NoneType'>
        Given value type: <class 'jsonargparse._namespace.Namespace'>
        Given value: Namespace(class_path='datamodules.sources.IDXSource', init_args=Namespace(root=None))
    - Expected a <class 'NoneType'>"""

WRONG_TYPE = """Parser key "data":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'lightning.pytorch.core.datamodule.LightningDataModule'>, <class 'NoneType'>]
  Errors:
    - Parser key "batch_size":
        Expected a <class 'int'>. Got value: abc
    - Expected a <class 'NoneType'>
  Given value type: <class 'jsonargparse._util.NestedArg'>
  Given value: NestedArg(key='batch_size', val='abc')"""

TRAINER_TYPE = """Parser key "trainer.max_epochs":
  Does not validate against any of the Union subtypes
  Subtypes: [<class 'int'>, <class 'NoneType'>]
  Errors:
    - Expected a <class 'int'>
    - Expected a <class 'NoneType'>
  Given value type: <class 'str'>
  Given value: x"""

MISSPELT_CLASS = """Parser key "model":

  - Expected a path but lecture_modules.classification.Clasification either not accessible or invalid
  - Does not validate against any of the Union subtypes
  Subtypes: [<class 'lecture_modules.base.LectureModule'>, <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'lecture_modules.classification.Clasification':
        module 'lecture_modules.classification' has no attribute 'Clasification'
    - Expected a <class 'NoneType'>
  Given value type: <class 'str'>
  Given value: lecture_modules.classification.Clasification"""


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            UNKNOWN_OPTION,
            "unknown setting model.init_args.nte of lecture_modules.classification.Classification; "
            "did you mean model.init_args.net?",
        ),
        (REQUIRED, "data.init_args.source.init_args.root is required (no default)"),
        (WRONG_TYPE, "data.init_args.batch_size: expected int, got 'abc'"),
        (TRAINER_TYPE, "trainer.max_epochs: expected int, got 'x'"),
        (
            MISSPELT_CLASS,
            "model: no class lecture_modules.classification.Clasification; "
            "did you mean lecture_modules.classification.Classification?",
        ),
        ("unrecognized arguments: --trainer.max_epohcs 2", "unknown setting trainer.max_epohcs; did you mean "),
    ],
    ids=["unknown-option", "required", "wrong-type", "trainer-type", "misspelt-class", "unknown-trainer-option"],
)
def test_an_error_tree_becomes_one_line_with_the_config_key(message, expected):
    line = one_line(message)
    assert "\n" not in line
    assert line.startswith(expected), line


def test_setting_names_follow_the_class_hierarchy_and_network_spec_fields():
    names = setting_names("lecture_modules.domain_adaptation.mcd.MCD")
    assert {"num_k", "optimizer", "num_classes", "net", "net.conv_channels", "embedding"} <= set(names)


def test_config_files_are_read_first_naming_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_epochs: 1\n  callbacks: [a\n")
    assert check_config_files(["fit", "--config", str(tmp_path / "ok.yaml")]).endswith("not found (given to --config)")
    line = check_config_files(["fit", f"--config={bad}"])
    assert str(bad) in line and "YAML syntax error at line 4" in line and "line 3, column 14" in line
    assert check_config_files(["fit", "-c", str(tmp_path)]).endswith("is a folder, not a file (given to --config)")
