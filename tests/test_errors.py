"""What ran out, said as such: errno values of exhausted resources become a
ResourceError whose hint says what to change; any other failure is left to its caller."""

from __future__ import annotations

import errno

import pytest

from alexcli.errors import ResourceError, resource_error


@pytest.mark.parametrize(
    ("error", "said", "advice"),
    [
        (OSError(errno.EMFILE, "Too many open files"), "too many open files", "ulimit -n"),
        (OSError(errno.ENFILE, "Too many open files in system"), "table of open files", "close"),
        (OSError(errno.ENOMEM, "Cannot allocate memory"), "out of memory", "fewer --workers"),
        (MemoryError(), "out of memory", "fewer --workers"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left", "free some space"),
        # h5py quotes the system's errno inside its own message
        (
            OSError(
                "Unable to open file (unable to open file: name = 'a.h5', errno = 24, "
                "error message = 'Too many open files')"
            ),
            "too many open files",
            "ulimit -n",
        ),
        (RuntimeError("[Errno 12] Cannot allocate memory"), "out of memory", "fewer --workers"),
    ],
)
def test_an_exhausted_resource_is_named_with_what_to_change(error, said, advice):
    e = resource_error(error, "data/train/00001.h5")
    assert isinstance(e, ResourceError)
    assert e.message.startswith("data/train/00001.h5: ") and said in e.message
    assert advice in e.hint and "prepare" not in e.hint


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOENT, "No such file"), OSError("truncated file"), ValueError("bad chunk")],
)
def test_other_failures_are_not_taken_for_a_resource(error):
    assert resource_error(error, "x") is None
