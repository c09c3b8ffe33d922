"""core/data/transfer.py: batches onto the training device, the next one's copy issued
while the current one is used."""

from __future__ import annotations

import pytest
import torch

from alexcli.bench.step import made_up_batch
from alexcli.core.data.transfer import prefetched


def test_on_a_cpu_the_batches_pass_through_untouched():
    batches = [made_up_batch(4, 8, 10, 3, seed=s) for s in range(3)]
    assert [id(b) for b in prefetched(batches, torch.device("cpu"))] == [id(b) for b in batches]
    assert list(prefetched([], torch.device("cpu"))) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_each_batch_arrives_whole_and_is_copied_one_ahead():
    device = torch.device("cuda", 0)
    batches = [made_up_batch(64, 32, 40, 5, seed=s).pin_memory() for s in range(4)]
    handed = []

    def source():
        for b in batches:
            handed.append(b)
            yield b

    for i, moved in enumerate(prefetched(source(), device)):
        assert len(handed) == min(i + 2, len(batches))  # the next one already sent
        for got, want in zip(moved, batches[i], strict=True):
            assert got.device == device
            torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0)
