"""Work spread over threads or processes, and always wound down before the caller goes on.

Two pools serve every parallel stage but the training loader (core/data/loader.py):

- `threads(fn, tasks, jobs)`: for work that lets go of the GIL (h5py reads, numpy,
  torch, hashlib) — `stats` sums shards, `prepare --verify` hashes them. Threads cannot
  be killed, so on any way out (a task's error, the consumer's, Ctrl-C) the tasks not
  started are cancelled and the running ones are waited for: nothing runs in native
  code while the interpreter shuts down (which ends in an abort or a segfault).
- `processes(fn, tasks, jobs)`: joblib's loky processes, for work that holds the GIL
  (`prepare` decodes JPEGs). On any way out the generator is closed, and joblib stops
  its workers (killing them if they are busy; a worker writes under a temporary name,
  so what it leaves is removed by the next run).

Both yield results in the order they finish and re-raise a task's own exception in the
caller, once, unchanged.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from alexcli.core.signals import handling

R = TypeVar("R")


def threads(fn: Callable[..., R], tasks: Iterable[Sequence[Any]], jobs: int) -> Iterator[R]:
    """`fn(*task)` for every task on `jobs` threads (in this thread when `jobs` is 1), at
    most `2 × jobs` submitted ahead; results as they finish."""
    if jobs <= 1:
        yield from (fn(*task) for task in tasks)
        return
    pending: set[Future[R]] = set()
    todo = iter(tasks)
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="alexcli")
    try:
        for task in todo:
            pending.add(pool.submit(fn, *task))
            if len(pending) >= 2 * jobs:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def processes(fn: Callable[..., R], tasks: Iterable[Sequence[Any]], jobs: int) -> Iterator[R]:
    """`fn(*task)` for every task in `jobs` worker processes (joblib's loky; in this
    process when `jobs` is 1), one task a dispatch; results as they finish."""
    if jobs <= 1:
        yield from (fn(*task) for task in tasks)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=jobs, return_as="generator_unordered", batch_size=1)
    # Ctrl-C in a terminal reaches every process of the group; the workers are spawned
    # inside this call, so they start with SIGINT ignored (a worker importing modules
    # would print a traceback) and leave it to this process, which stops them.
    with handling(signal.SIGINT, signal.SIG_IGN):
        results = parallel(delayed(fn)(*task) for task in tasks)
    try:
        yield from results
    finally:
        results.close()  # joblib aborts what is still running
