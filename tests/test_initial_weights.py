"""Moving code must not move the random draws: every committed lecture config, seeded, builds the same initial
weights as it did before the house was rearranged (construction order decides which draw each tensor gets).

``tests/fixtures/initial_weights.json`` holds, per config, every tensor of the model's initial ``state_dict`` in
order, as its shape and the SHA-1 (first 16 hex digits) of its bytes, recorded from the code before the move with
torch 2.13.0 on CPU. Tensor names may change (a network moved into a spec); shapes, order and values may not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.helpers import CONFIGS, run_cli_parse_only

FIXTURE = Path(__file__).parent / "fixtures" / "initial_weights.json"
RECORDED = json.loads(FIXTURE.read_text())


def fingerprint(state_dict) -> list[list]:
    return [
        [list(t.shape), hashlib.sha1(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]]
        for t in state_dict.values()
    ]


@pytest.mark.parametrize("config", sorted(RECORDED))
def test_seeded_initial_weights_are_those_recorded_before_the_move(config):
    cli = run_cli_parse_only("--config", str(CONFIGS / f"{config}.yaml"))
    got = fingerprint(cli.model.state_dict())
    want = RECORDED[config]
    assert [g[0] for g in got] == [w[0] for w in want], f"{config}: tensor shapes or order changed"
    changed = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not changed, f"{config}: tensors {changed} of {list(cli.model.state_dict())} draw other initial values"
