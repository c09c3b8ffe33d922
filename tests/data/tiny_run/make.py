"""Writes this folder's files with the alexcli of the commit that added them, the last
before the network's ReLU, LRN, pooling and dropout became modules and the training
loop was rewritten: tests/core/nn/test_files_before.py checks that every later alexcli
reads them and writes the same of them.

- `tiny.pt`: a checkpoint of `tests.tiny.TINY_MODEL` (small preset) after one SGD step,
  with its optimizer's momentum, the schedule and the RNG states, as `train` saves one.
- `expected.json`: what that alexcli made of it — the state dict's keys and shapes in
  order, the parameters' order (the optimizer's state is kept by position), logits and
  fc7 features on fixed inputs, the logits of freshly seeded variants of the network
  (one tower, LRN across the towers, a middle layer left out, tanh, no LRN), the
  probabilities of the deployable network on fixed uint8 crops, and what its
  safetensors, TorchScript, pt2 and ONNX exports hold.
- `summary_paper.json`, `summary_small.json`: `alexcli summary --json` of each preset, with
  the configuration it was of (a preset may change later; the summary of that config may not).

Run from the repository root, `PYTHONPATH=. python tests/data/tiny_run/make.py`, only
to record a deliberate change of those files, never to make the test pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from alexcli.config import PRESETS, to_dict
from alexcli.core.nn import export
from alexcli.core.nn.checkpoint import Checkpoint, load_checkpoint, rng_state, save_checkpoint
from alexcli.core.nn.model import build_model
from alexcli.core.nn.optim import LrSchedule, make_optimizer
from alexcli.stages.summary import run_summary
from tests.tiny import TINY_MODEL

HERE = Path(__file__).parent
SIZE = TINY_MODEL.crop  # the stored images' side: the centre view is the whole image
VARIANTS = {
    "one_tower": {"towers": 1},
    "lrn_across_towers": {"lrn_span": "all"},
    "without_conv3": {"omit": "conv3"},
    "without_conv5": {"omit": "conv5"},
    "tanh": {"activation": "tanh"},
    "without_lrn": {"lrn": False},
}


def inputs() -> tuple[torch.Tensor, np.ndarray]:
    """Float inputs (2, 3, crop, crop) and uint8 crops, from numpy's stable generator."""
    rng = np.random.default_rng(0)
    crop = TINY_MODEL.crop
    x = rng.normal(0.0, 1.0, (2, 3, crop, crop)).astype(np.float32)
    crops = rng.integers(0, 256, (2, 3, crop, crop), dtype=np.uint8)
    return torch.from_numpy(x), crops


def digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


def rows(t: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in t.detach().float().tolist()]


def make_checkpoint(path: Path) -> None:
    x, _ = inputs()
    torch.manual_seed(0)
    model = build_model(TINY_MODEL)
    optimizer = make_optimizer(model, 0.01, 0.9, 5e-4)
    loss = F.cross_entropy(model(x), torch.tensor([1, 5]))
    loss.backward()
    optimizer.step()
    rng = np.random.default_rng(1)
    save_checkpoint(
        path,
        Checkpoint(
            config=dataclasses.replace(PRESETS["small"], model=TINY_MODEL),
            classes=[{"name": f"n{i:08d}", "words": f"class {i}"} for i in range(7)],
            size=SIZE,
            mean=rng.uniform(60, 200, (SIZE, SIZE, 3)).astype(np.float32),
            eigval=np.array([3.0, 2.0, 1.0], np.float32),
            eigvec=np.eye(3, dtype=np.float32),
            weights=model.state_dict(),
            epoch=0,
            step=1,
            optimizer=optimizer.state_dict(),
            scheduler=LrSchedule(0.01).state_dict(),
            epoch_progress={
                "step": 1,
                "loss_sum": float(loss.detach()),
                "images": 2,
                "seconds": 0.1,
            },
            rank_rng=[rng_state(False)],
            threads=1,
        ),
    )


def exports(ck: Checkpoint, crops: np.ndarray, tmp: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    st = tmp / "tiny.safetensors"
    export.write(ck, st, "safetensors")
    from safetensors import safe_open

    with safe_open(str(st), framework="pt") as f:
        meta = {k: v for k, v in (f.metadata() or {}).items() if k not in ("alexcli", "source")}
        tensors = {k: [str(f.get_tensor(k).dtype), list(f.get_tensor(k).shape)] for k in f.keys()}  # noqa: SIM118
        hashes = {k: digest(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118
    out["safetensors"] = {"metadata": meta, "tensors": tensors, "sha256": hashes}

    ts = tmp / "tiny.ts"
    export.write(ck, ts, "torchscript")
    module = torch.jit.load(str(ts))
    out["torchscript"] = {
        "parameters": [n for n, _ in module.named_parameters()],
        "buffers": [n for n, _ in module.named_buffers()],
        "probabilities": rows(torch.from_numpy(export.reload(ts, "torchscript")(crops))),
    }

    pt2 = tmp / "tiny.pt2"
    export.write(ck, pt2, "pt2")
    with open(pt2, "rb") as f:
        program = torch.export.load(f)
    out["pt2"] = {
        "state_dict": list(program.state_dict),
        "probabilities": rows(torch.from_numpy(export.reload(pt2, "pt2")(crops))),
    }

    import onnx

    path = tmp / "tiny.onnx"
    export.write(ck, path, "onnx")
    proto = onnx.load(str(path))
    out["onnx"] = {
        "initializers": sorted(
            i.name for i in proto.graph.initializer if not i.name.startswith("val_")
        ),
        "ops": dict(sorted(Counter(n.op_type for n in proto.graph.node).items())),
        "probabilities": rows(torch.from_numpy(export.reload(path, "onnx")(crops))),
    }
    return out


def main() -> None:
    make_checkpoint(HERE / "tiny.pt")
    ck = load_checkpoint(HERE / "tiny.pt")
    model = ck.build_model()
    x, crops = inputs()
    with torch.no_grad():
        logits, features = model(x), model.features(x)
        probabilities = export.deployable(ck)(torch.from_numpy(crops))
    variants = {}
    for name, changes in VARIANTS.items():
        torch.manual_seed(0)
        variant = build_model(dataclasses.replace(TINY_MODEL, **changes)).eval()
        with torch.no_grad():
            variants[name] = rows(variant(x))
    expected: dict[str, object] = {
        "state_dict": [[k, list(v.shape)] for k, v in model.state_dict().items()],
        "parameters": [n for n, _ in model.named_parameters()],
        "logits": rows(logits),
        "features": rows(features),
        "variants": variants,
        "deployable": rows(probabilities),
    }
    with tempfile.TemporaryDirectory() as tmp:
        expected |= exports(ck, crops, Path(tmp))
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    for name in ("paper", "small"):
        cfg = dataclasses.replace(PRESETS[name], devices="cpu")
        summary = {"config": to_dict(cfg), "summary": run_summary(cfg).to_json()}
        (HERE / f"summary_{name}.json").write_text(
            json.dumps(summary, indent=1, sort_keys=True) + "\n"
        )


if __name__ == "__main__":
    main()
