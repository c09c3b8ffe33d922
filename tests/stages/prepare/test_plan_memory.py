"""prepare's plan of ILSVRC-2012's 1.28 M files is most of what its process holds: it is
kept as columns, about a hundred bytes a file beside the file's name, never a split's
worth of objects per file (docs/performance.md "At ImageNet's size")."""

import tracemalloc

from alexcli.config import PrepareConfig
from alexcli.core.data import sources
from alexcli.stages.prepare.source import plan_shards

CLASSES, PER_CLASS = 20, 150


def test_a_plan_costs_little_beyond_the_names(tmp_path):
    for c in range(CLASSES):
        folder = tmp_path / "train" / f"n{c:08d}"
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            (folder / f"n{c:08d}_{i:05d}.JPEG").touch()
    src = sources.find_source(tmp_path)
    n = CLASSES * PER_CLASS
    plan_shards(src, src.classes[:1], PrepareConfig())  # what it imports is not the plan
    tracemalloc.start()
    try:
        plans, _, _ = plan_shards(src, src.classes, PrepareConfig(shard_size=100))
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(len(p) for p in plans) == n
    names = sum(len(name) + 49 for p in plans for name in p.names)  # an ASCII str's size
    # A file's SourceFile, its (name, label) and (archive, offset, size) tuples took
    # ~300 bytes beside its name once planned, ~580 while planning.
    assert (kept - names) / n < 60
    assert (peak - names) / n < 160
