"""LectureSaveConfig never overwrites, and never refuses, an earlier run's config copy."""

from __future__ import annotations

from types import SimpleNamespace

from callbacks.save_config import unused_name


def _trainer(root, rank_zero=True):
    return SimpleNamespace(
        is_global_zero=rank_zero, default_root_dir=str(root), strategy=SimpleNamespace(broadcast=lambda x: x)
    )


def test_the_first_free_name_is_taken_next_to_earlier_copies(tmp_path):
    assert unused_name(_trainer(tmp_path), "config.yaml") == "config.yaml"
    (tmp_path / "config.yaml").write_text("")
    (tmp_path / "config-1.yaml").write_text("")
    assert unused_name(_trainer(tmp_path), "config.yaml") == "config-2.yaml"


def test_other_ranks_take_rank_zeros_choice(tmp_path):
    (tmp_path / "config.yaml").write_text("")
    trainer = _trainer(tmp_path, rank_zero=False)
    trainer.strategy.broadcast = lambda name: "config-1.yaml"  # what rank zero chose
    assert unused_name(trainer, "config.yaml") == "config-1.yaml"
