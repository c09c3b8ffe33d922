"""core/machine.py: OpenMP's wait policy is set only before torch loads and never over
the user's, and a kept heap nests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from alexcli.core.machine import keep_freed_memory

CHECK = """
import os, sys
{before}
from alexcli.core.machine import sleeping_openmp_threads
print(sleeping_openmp_threads(), os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.parametrize(
    "before,env,want",
    [
        ("", {}, "True PASSIVE"),  # a fresh process: set
        ("", {"OMP_WAIT_POLICY": "ACTIVE"}, "False ACTIVE"),  # the user's choice stays
        ("import torch", {}, "False None"),  # too late: OpenMP has read it
    ],
)
def test_openmp_threads_sleep_only_where_it_can_take_effect(before, env, want):
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(before=before)],
        env=environ | env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == want.split()


def test_a_nested_kept_heap_leaves_it_to_the_outer_one():
    with keep_freed_memory() as outer:
        with keep_freed_memory() as inner:
            assert inner == outer
        with keep_freed_memory() as again:  # the outer one is still in force
            assert again == outer
    with keep_freed_memory(enabled=False) as off:
        assert off is False
