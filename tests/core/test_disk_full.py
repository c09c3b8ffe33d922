"""A write the system refuses half way (a full disk, a file-size limit): one OSError (or
one-line error) naming the file, nothing half-written left, the old file kept.

`ulimit -f` in a child shell stands in for a full disk: Python ignores SIGXFSZ, so a
write past the limit fails with EFBIG, as one on a full disk fails with ENOSPC.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SHARD = """
import sys
import numpy as np
from alexcli.core.data.shards import write_shard
images = np.random.default_rng(0).integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
write_shard(sys.argv[1], images, [0] * 20, [f"{i}.png" for i in range(20)], split="train")
"""

_CHECKPOINT = """
import sys
import torch
from alexcli.core.nn.checkpoint import save_checkpoint

class Payload:  # what save_checkpoint asks of a Checkpoint
    def to_payload(self):
        return {"weights": torch.zeros(100_000)}

save_checkpoint(sys.argv[1], Payload())
"""


def _limited(script: str, target: Path, kib: int) -> subprocess.CompletedProcess[str]:
    """`script` with `target` as its argument, no file it writes over `kib` KiB."""
    command = f'ulimit -f {kib}; exec "$0" -c "$1" "$2"'
    return subprocess.run(
        ["bash", "-c", command, sys.executable, script, str(target)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _last_line(r: subprocess.CompletedProcess[str]) -> str:
    return r.stderr.strip().splitlines()[-1]


def test_a_shard_that_outgrows_the_disk_is_one_oserror_naming_it(tmp_path):
    shard = tmp_path / "00000.h5"
    r = _limited(_SHARD, shard, 100)
    assert r.returncode == 1
    # not "RuntimeError: Can't decrement id ref count", raised by closing the file again
    assert _last_line(r) == f"OSError: [Errno 27] File too large: '{shard}'", r.stderr
    assert "During handling" not in r.stderr.split("The above exception")[-1]
    assert os.listdir(tmp_path) == []  # the temporary is gone


def test_a_checkpoint_that_outgrows_the_disk_is_one_error_and_the_old_one_stays(tmp_path):
    last = tmp_path / "last.pt"
    last.write_bytes(b"the previous checkpoint")
    r = _limited(_CHECKPOINT, last, 150)
    assert r.returncode == 1
    # not torch's "[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"
    assert _last_line(r) == f"OSError: [Errno 27] File too large: '{last}'", r.stderr
    assert last.read_bytes() == b"the previous checkpoint"
    assert os.listdir(tmp_path) == ["last.pt"]
