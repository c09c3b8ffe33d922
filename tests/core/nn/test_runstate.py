"""core/nn/runstate.py: when a mid-epoch checkpoint is due, and how often DDP ranks are
asked (the save itself, resume and metrics.jsonl: tests/stages/test_train.py)."""

from __future__ import annotations

import os
import signal

from alexcli.core.nn.distributed import Dist
from alexcli.core.nn.events import sigterm_requests_stop
from alexcli.core.nn.runstate import AGREE_EVERY, CheckpointPolicy


class _Ranks(Dist):
    """Rank 0 of `world`, its answers its own (one process); counts what it is asked."""

    def __init__(self, world: int) -> None:
        super().__init__(rank=0, world=world)
        self.asked = 0

    def agree(self, flag: bool) -> bool:
        self.asked += 1
        return flag


def _due_steps(policy: CheckpointPolicy, steps: int, per_epoch: int) -> list[int]:
    return [s for s in range(1, steps + 1) if policy.due(s, (s - 1) % per_epoch + 1)]


def test_a_checkpoint_every_n_steps_of_the_run_not_of_the_epoch():
    policy = CheckpointPolicy(every=7, minutes=60, dist=_Ranks(1))
    assert _due_steps(policy, 30, per_epoch=10) == [7, 14, 21, 28]
    assert _due_steps(CheckpointPolicy(every=0, minutes=60, dist=_Ranks(1)), 30, 10) == []


def test_a_checkpoint_when_the_minutes_since_the_last_save_have_passed():
    policy = CheckpointPolicy(every=0, minutes=1, dist=_Ranks(1))
    assert not policy.due(1, 1)
    policy.saved_at -= 61  # a minute and a second since the last save
    assert policy.due(2, 2)
    policy.saved()
    assert not policy.due(3, 3)


def test_sigterm_makes_a_checkpoint_due_at_the_next_step_and_asks_to_stop():
    policy = CheckpointPolicy(every=0, minutes=60, dist=_Ranks(1))
    with sigterm_requests_stop(policy):
        assert not policy.due(1, 1) and not policy.stopping()
        os.kill(os.getpid(), signal.SIGTERM)
        assert policy.due(2, 2) and policy.stopping()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_ddp_ranks_are_asked_every_agree_every_steps_and_at_counted_ones():
    """The clock and SIGTERM are rank 0's: asking the others costs a broadcast, so it
    happens every AGREE_EVERY steps of the epoch (and at each counted step) only."""
    ranks = _Ranks(2)
    policy = CheckpointPolicy(every=50, minutes=60, dist=ranks)
    policy.stop_requested = True  # due wherever it is asked
    due = _due_steps(policy, 100, per_epoch=30)
    in_epoch = [(s - 1) % 30 + 1 for s in due]
    assert all(i % AGREE_EVERY == 0 or s % 50 == 0 for s, i in zip(due, in_epoch, strict=True))
    assert due == [20, 50, 80, 100] and ranks.asked == len(due)
