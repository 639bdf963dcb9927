"""claim_output_folder: rank zero creates the hand-in folder before sharing its name, so no other rank can take it
first (the race that once left rank zero failing and rank one waiting at the writer's barrier)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from callbacks.output_folder import claim_output_folder
from datamodules.errors import OutputFolderError


class _Strategy:
    """broadcast() as one rank sees it: rank zero's value is recorded (with whether its folder existed by then);
    other ranks receive the value given."""

    def __init__(self, root, received=None):
        self.root, self.received, self.sent = root, received, []

    def broadcast(self, obj):
        if self.received is not None:
            return self.received
        self.sent.append((obj, (self.root / obj[0]).is_dir() if obj[0] else False))
        return obj


def _trainer(root, rank_zero, received=None):
    return SimpleNamespace(default_root_dir=str(root), is_global_zero=rank_zero, strategy=_Strategy(root, received))


def test_rank_zero_creates_the_first_free_folder_before_sharing_its_name(tmp_path):
    (tmp_path / "generated").mkdir()
    (tmp_path / "generated-1.tgz").write_bytes(b"")  # an archive alone also takes the name
    trainer = _trainer(tmp_path, rank_zero=True)
    folder = claim_output_folder(trainer, "generated")
    assert folder == tmp_path / "generated-2" and folder.is_dir()
    assert trainer.strategy.sent == [(("generated-2", None), True)]  # it existed when the name was broadcast


def test_other_ranks_take_the_shared_name_and_create_it_only_where_missing(tmp_path):
    (tmp_path / "adversarial-3").mkdir()  # rank zero's, on a shared file system
    assert claim_output_folder(_trainer(tmp_path, False, ("adversarial-3", None)), "adversarial") == (
        tmp_path / "adversarial-3"
    )
    elsewhere = tmp_path / "node2"  # a node without the shared file system
    assert claim_output_folder(_trainer(elsewhere, False, ("adversarial-3", None)), "adversarial").is_dir()


def test_a_failure_on_rank_zero_is_raised_on_every_rank_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    trainer = _trainer(blocker, rank_zero=True)
    with pytest.raises(OutputFolderError, match=r"cannot create .*generated \(trainer.default_root_dir\)") as zero:
        claim_output_folder(trainer, "generated")
    shared = trainer.strategy.sent[0][0]
    assert shared[1] is not None  # the error text travels with the name
    with pytest.raises(OutputFolderError) as other:
        claim_output_folder(_trainer(blocker, False, shared), "generated")
    assert str(other.value) == str(zero.value) and "\n" not in str(zero.value)
