"""`alexcli export RUN_DIR OUT`: the trained network as a file other tools load
(core/nn/export.py; docs/export.md), checked before the command says it is done.

The check reopens the file the way a user without alexcli would (safetensors through
`alexcli.load`, `torch.jit.load`, `torch.export.load`, onnxruntime) and compares its
probabilities with `alexcli predict --views 1`'s own path (`Classifier.classify`) on the
same random images: the exported graph must give predict's answer, not merely its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexcli.config import EvalConfig
from alexcli.errors import AlexcliError, UserError
from alexcli.stages.classifier import Classifier
from alexcli.stages.results import Result

TOLERANCE = 1e-4  # |Δ probability|: float32 through different kernels is ~1e-7


@dataclass(frozen=True)
class ExportReport(Result):
    checkpoint: Path
    out: Path
    format: str
    layout: str | None  # None for safetensors (weights, no graph)
    bytes: int
    input: str
    preprocess: str  # what to do to a picture first (predict's resize and centre crop)
    output: str
    opset: int | None  # ONNX only
    checked_with: str | None  # what reopened the file; None when that is not installed
    max_difference: float | None  # against predict --views 1 on the same images


def export_format(out: Path, fmt: str | None) -> str:
    """`--format`, else the one OUT's suffix names."""
    from alexcli.core.nn.export import FORMATS, SUFFIXES

    if fmt is not None:
        if fmt not in FORMATS:
            raise UserError(f"--format {fmt}: not one of {', '.join(FORMATS)}")
        return fmt
    if out.suffix.lower() in SUFFIXES:
        return SUFFIXES[out.suffix.lower()]
    raise UserError(
        f"{out}: which format? the suffix {out.suffix or '(none)'} names none",
        hint="give --format safetensors|torchscript|pt2|onnx, or name OUT "
        + ", ".join(f"*{s}" for s in SUFFIXES),
    )


def run_export(
    run: Path, out: Path, fmt: str | None = None, layout: str = "nchw", check: bool = True
) -> ExportReport:
    """Write RUN_DIR's network to `out` as `fmt` (safetensors, torchscript, pt2, onnx),
    taking uint8 crops in `layout` (nchw or nhwc) and giving probabilities; then reopen
    it and compare with predict's path unless `check` is False."""
    from alexcli.core.nn import export

    fmt = export_format(Path(out), fmt)
    if layout not in ("nchw", "nhwc"):
        raise UserError(f"--layout {layout}: not nchw or nhwc")
    if fmt == "safetensors" and layout != "nchw":
        raise UserError("--layout is for the graph formats; safetensors holds weights only")
    if Path(out).is_dir():
        raise UserError(f"{out} is a directory; OUT is the file to write")
    net = Classifier.load(Path(run), EvalConfig(devices="cpu"))
    ckpt = net.ckpt
    checked: dict[str, str | float | None] = {"with": None, "difference": None}

    def reopen(tmp: Path) -> None:  # before the file replaces OUT
        checked["with"], checked["difference"] = _check(net, tmp, Path(out), fmt, layout)

    export.write(ckpt, Path(out), fmt, layout, reopen if check else None)  # type: ignore[arg-type]
    meta = export.file_metadata(ckpt, layout)
    checked_with, difference = checked["with"], checked["difference"]
    return ExportReport(
        checkpoint=ckpt.source,
        out=Path(out),
        format=fmt,
        layout=None if fmt == "safetensors" else layout,
        bytes=Path(out).stat().st_size,
        input=meta["input"],
        preprocess=meta["preprocess"],
        output=meta["output"],
        opset=export.ONNX_OPSET if fmt == "onnx" else None,
        checked_with=None if checked_with is None else str(checked_with),
        max_difference=None if difference is None else float(difference),
    )


def _check(
    net: Classifier, path: Path, out: Path, fmt: str, layout: str
) -> tuple[str | None, float | None]:
    """Reopen `path` (the file about to become `out`) outside alexcli's own classes and
    compare with `net.classify`; refuse, in one line, a file that differs or will not open."""
    from alexcli.core.nn import export

    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None, None
        checked_with = f"onnxruntime {onnxruntime.__version__}"
    else:
        checked_with = {
            "safetensors": "safetensors → alexcli.load",
            "torchscript": "torch.jit.load",
            "pt2": "torch.export.load",
        }[fmt]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, net.size, net.size, 3), dtype=np.uint8)
    want = net.classify(images, views=1).numpy()
    c = (net.size - net.crop) // 2
    crops = np.ascontiguousarray(images[:, c : c + net.crop, c : c + net.crop])
    if layout == "nchw":
        crops = np.ascontiguousarray(crops.transpose(0, 3, 1, 2))
    try:
        got = export.reload(path, fmt)(crops)  # type: ignore[arg-type]
    except Exception as e:  # whatever the runtime raises: the file is not usable
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise AlexcliError(
            f"{out}: the exported file does not reopen with {checked_with} ({reason}); "
            "nothing written",
            hint="rerun with --debug and report it; --no-check writes it unchecked",
        ) from None
    difference = float(np.abs(got - want).max())
    if not difference <= TOLERANCE:
        raise AlexcliError(
            f"{out}: the exported network disagrees with predict by {difference:.2g} "
            f"(tolerance {TOLERANCE}); nothing written",
            hint="rerun with --debug and report it: this is a bug",
        )
    return checked_with, difference
