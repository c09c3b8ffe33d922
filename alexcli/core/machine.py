"""What this process may use of the machine: its cores, OpenMP's idle threads, and
the heap of the CPU training step and of inference. No paper section: runtime settings
(docs/performance.md "The training step" and "Inference" have the measurements).

`cpu_cores()` is the one count of cores every default (`--jobs`, `--workers`, compute
threads) starts from: the cores this process may run on (its CPU affinity, as a
scheduler such as SLURM or `taskset` sets it), not the machine's.

glibc's malloc serves every block above its mmap threshold (128 KiB to 32 MiB) with
a fresh mapping and unmaps it when freed, so each SGD step maps its activations,
gradients and bf16 weight copies anew and takes a page fault for every 4 KiB page
it first touches. `keep_freed_memory()` turns mapping and trimming off for its
duration (`mallopt`), so the heap grows over the first steps to what a step needs
and is reused from then on; on leaving, the defaults come back and the unused heap
is returned. Elsewhere (not glibc: macOS, musl) it does nothing. Values computed are
unchanged.

`sleeping_openmp_threads()` has OpenMP's idle threads sleep rather than spin in the
inference commands (eval, predict, neighbors): set before torch loads, as OpenMP reads
it then.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536


def cpu_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# OpenMP's idle threads sleep at once instead of spinning: what eval, predict and
# neighbors run with unless the environment says otherwise.
OPENMP_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


def sleeping_openmp_threads() -> bool:
    """Set `OPENMP_POLICY` unless the environment already chose a wait policy. Beside
    other busy processes a spinning OpenMP thread holds the core its team waits for:
    a two-thread forward pass of the paper's network ran 3–10× slower than with the
    threads asleep (docs/performance.md "Inference"). OpenMP reads the variable when
    torch loads it, so this works only before torch is imported; says whether it did."""
    key, value = OPENMP_POLICY
    if key in os.environ or "torch" in sys.modules:
        return False
    os.environ[key] = value
    return True


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, as servers do (the
    soft 1,024 of most Linux installs is a default, not a policy); return the soft limit
    now in force. A limit that cannot be read or raised is left as it is."""
    try:
        import resource
    except ImportError:  # not on Unix
        return -1
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Linux refuses "unlimited" for open files; its own ceiling is 2^20 by default.
        want = min(hard, 1 << 20) if hard != resource.RLIM_INFINITY else 1 << 20
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    except (OSError, ValueError):
        return -1
    return int(soft)


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """The CPU's model name and feature flags, from /proc/cpuinfo ("" and none elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    lines = info.splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    flags = next(
        (set(ln.split(":", 1)[1].split()) for ln in lines if ln.startswith("flags")), set()
    )
    return model or platform.machine(), flags


def native_bf16() -> bool | None:
    """Whether this CPU computes bf16 itself (AVX512_BF16 or AMX); None when unknown. Without
    it torch emulates bf16 and `--amp bf16` runs slower than fp32."""
    _, flags = cpu_model_and_flags()
    if not flags:
        return None
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_kept: list[bool] = []  # what each open keep_freed_memory yielded, outermost first


@contextlib.contextmanager
def keep_freed_memory(enabled: bool = True) -> Iterator[bool]:
    """Inside: freed blocks stay in the heap for reuse. Yields whether it took effect.
    Nested inside another, it leaves the heap to the outer one (so `predict` can keep
    it across batches that `Classifier.classify` each keeps on its own)."""
    libc = _glibc() if enabled else None
    if libc is None:
        yield False
        return
    if _kept:
        _kept.append(_kept[0])
        try:
            yield _kept[0]
        finally:
            _kept.pop()
        return
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    _kept.append(ok)
    try:
        yield ok
    finally:
        _kept.clear()
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)
