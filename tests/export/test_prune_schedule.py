"""The token stage's pick schedule (``scores.pick_schedule``), which both forms read: its invariants
stated independently of how it is built, so a schedule bug cannot hide behind reference = graph."""
from __future__ import annotations

import pytest

from mmg_export.prune import MMGConfig
from mmg_export.prune.scores import SUBSTEP_CHAIN, pick_schedule


@pytest.mark.parametrize("frames", [1, 3, 8, 32])
@pytest.mark.parametrize("rounds,substeps,reach", [(2, 3, 2), (2, 1, 2), (1, 4, 1), (3, 2, 0), (2, 8, 4)])
def test_every_frame_reaches_its_budget_in_rising_shares(frames, rounds, substeps, reach):
    config = MMGConfig(rounds=rounds, substeps=substeps, chain_steps=reach, stride=max(1, 2 * reach))
    schedule = pick_schedule(frames, config)
    assert {step.parts for step in schedule} == {rounds * substeps}
    for t in range(frames):
        shares = [step.share for step in schedule if step.group == t % config.stride]
        assert shares == list(range(1, rounds * substeps + 1))  # one more part at every step of its group
    empty_groups = max(0, config.stride - frames)
    assert len(schedule) == rounds * (min(config.stride, frames) * substeps + empty_groups)


@pytest.mark.parametrize("frames", [3, 32])
def test_each_update_covers_what_was_kept_since_the_last(frames):
    config = MMGConfig(substeps=3)
    schedule = pick_schedule(frames, config)
    assert schedule[0].chain_steps is None and all(step.chain_steps is not None for step in schedule[1:])
    for before, step in zip(schedule, schedule[1:]):
        kept_since = set(range(frames)[before.group::config.stride])
        assert kept_since <= set(range(frames)[step.changed])
        first_of_group = step.group != before.group
        expected = config.chain_steps if first_of_group else min(SUBSTEP_CHAIN, config.chain_steps)
        assert step.chain_steps == expected
