"""Raw pixels against JPEG records at quality 75, 90 and 95, on real photographs, in one
sitting: where docs/performance.md's "Encodings" table comes from.

    .venv/bin/python benchmarks/encodings.py PHOTOS OUT [--gather] [--copies 31] [--rounds 3]

PHOTOS is a folder of photographs. This machine reaches package registries only, so
`--gather` fills it from packages that ship photographs (docs/performance.md names them):
the wheels of scikit-image, scikit-learn and matplotlib (`pip download --no-deps`, read as
zip files, never installed: scikit-image would pull plain pillow over pillow-simd) and
Debian's `opencv-doc` (`apt-get download`, unpacked with `dpkg -x`): 33 colour photographs
of ImageNet's kind (animals, people, food, objects, buildings, scenes).

Each photo is linked `--copies` times into one class of an image-folder SOURCE, which
`alexcli prepare --size 256 --jobs 1` then shards once per encoding, the encodings
alternated over `--rounds` (medians reported). Measured for each encoding:
- bytes per image (the shard files ÷ images, and the records alone), and full
  ILSVRC-2012's projected size (1,331,167 images);
- prepare's images/s, one process (its extra cost for encoding);
- one loader worker's images/s: `CropDataset.fill` of training batches (224 crops of 256,
  reflections) in this process, as a worker runs it; and a bare decode of the records;
- fidelity: PSNR and mean |difference| of the decoded images against the raw ones, and
  the largest difference of their mean image (what `stats` subtracts);
and once, the paper step's appetite on this CPU (the tuned fp32 step, batch 128).
Everything is a ratio within this run; absolute figures depend on the machine's load.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

ILSVRC_2012_IMAGES = 1_281_167 + 50_000
H100_IMAGES_PER_S = 20_000
ENCODINGS = {
    "raw": ("raw", 90),
    "jpeg75": ("jpeg", 75),
    "jpeg90": ("jpeg", 90),
    "jpeg95": ("jpeg", 95),
}

WHEELS = {
    "scikit-image==0.26.0": [
        f"skimage/data/{n}"
        for n in ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png", "rocket.jpg")
    ],
    "scikit-learn==1.9.1": [
        "sklearn/datasets/images/china.jpg",
        "sklearn/datasets/images/flower.jpg",
    ],
    "matplotlib==3.11.2": ["matplotlib/mpl-data/sample_data/grace_hopper.jpg"],
}
OPENCV_DOC = "usr/share/doc/opencv-doc"
OPENCV = [
    f"{OPENCV_DOC}/examples/data/{n}"
    for n in (
        "aero1.jpg",
        "aero3.jpg",
        "aloeL.jpg",
        "apple.jpg",
        "baboon.jpg",
        "board.jpg",
        "building.jpg",
        "butterfly.jpg",
        "chicky_512.png",
        "ela_original.jpg",
        "fruits.jpg",
        "graf1.png",
        "home.jpg",
        "leuvenA.jpg",
        "licenseplate_motion.jpg",
        "messi5.jpg",
        "orange.jpg",
        "rubberwhale1.png",
        "smarties.png",
        "squirrel_cls.jpg",
    )
] + [
    f"{OPENCV_DOC}/opencv4/html/{n}"
    for n in (
        "230501201_1.jpg",
        "HDRtoneMapping_memorialSample.jpg",
        "corridor_fld.jpg",
        "plant.jpg",
        "yolo.jpg",
    )
]


def gather(photos: Path) -> None:
    """The 33 photographs out of the packages that ship them, without installing any."""
    photos.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        where = Path(scratch)
        for spec, members in WHEELS.items():
            subprocess.run(["pip", "download", "--no-deps", "-q", "-d", scratch, spec], check=True)
            wheel = next(where.glob(spec.split("==")[0].replace("-", "_") + "-*.whl"))
            with zipfile.ZipFile(wheel) as z:
                for member in members:
                    (photos / Path(member).name).write_bytes(z.read(member))
        subprocess.run(["apt-get", "download", "opencv-doc"], cwd=scratch, check=True)
        deb = next(where.glob("opencv-doc_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(where / "x")], check=True)
        for member in OPENCV:
            shutil.copy(where / "x" / member, photos / Path(member).name)


def make_source(photos: Path, root: Path, copies: int) -> int:
    """An image-folder SOURCE: every photo linked `copies` times into one class."""
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    folder = root / "train" / "photos"
    folder.mkdir(parents=True)
    for k in range(copies):
        for p in files:
            (folder / f"{k:03d}_{p.name}").symlink_to(p.resolve())
    return len(files)


def prepare(source: Path, out: Path, encoding: str, quality: int) -> float:
    """prepare's images per second of CPU time, one process (`--jobs 1`: in this one)."""
    from alexcli.config import PrepareConfig
    from alexcli.stages.prepare import run_prepare

    config = PrepareConfig(size=256, encoding=encoding, quality=quality, jobs=1)  # type: ignore[arg-type]
    start = time.process_time()
    result = run_prepare(source, out, config, force=True)
    return sum(result.images.values()) / (time.process_time() - start)


def fill_rate(data: Path, seconds: float) -> float:
    """One worker's images per second of its own CPU time (so the machine's other load
    does not enter): what a worker with a core to itself delivers."""
    from alexcli.bench.data import fill_rate as rate
    from alexcli.stages.datadir import open_data_dir

    shards = open_data_dir(data).shard_set("train")
    got = rate(shards, size=256, crop=224, batch_size=128, seconds=seconds, clock=time.process_time)
    return got.per_s


def decode_rate(data: Path, seconds: float) -> float:
    """Records decoded one after another by a bare `Image.open(...).load()`, from memory,
    per second of this process's CPU time."""
    from alexcli.stages.datadir import open_data_dir

    shards = open_data_dir(data).shard_set("train")
    records = []
    for path in shards.paths:
        with h5py.File(path) as f:
            offsets, data_ = f["offsets"][:], f["jpeg"][:].tobytes()
        records += [data_[a:b] for a, b in itertools.pairwise(offsets)]
    done, start = 0, time.process_time()
    while time.process_time() - start < seconds:
        for record in records[:64]:
            with Image.open(io.BytesIO(record)) as img:
                img.load()
        done += 64
    return done / (time.process_time() - start)


def distinct_images(data: Path, photos: int) -> np.ndarray:
    """The first `photos` training images in path order (one of each photo)."""
    from alexcli.stages.datadir import open_data_dir

    shards = open_data_dir(data).shard_set("train")
    by_path = {shards.source(i): i for i in range(len(shards))}
    first = sorted(p for p in by_path if Path(p).name.startswith("000_"))[:photos]
    return np.stack([shards.image(by_path[p]) for p in first])


def fidelity(raw: np.ndarray, other: np.ndarray) -> dict[str, float]:
    diff = raw.astype(np.float64) - other
    mse = (diff**2).mean(axis=(1, 2, 3))
    psnr = 10 * np.log10(255**2 / np.maximum(mse, 1e-12))
    return {
        "psnr_db": float(np.median(psnr)),
        "mean_abs_diff": float(np.abs(diff).mean()),
        "mean_image_max_diff": float(np.abs(diff.mean(axis=0)).max()),
    }


def step_appetite(seconds: float) -> float:
    """Images/s of the paper step as `train` runs it on this CPU (tuned, fp32, batch 128)."""
    import torch

    from alexcli.bench.step import StepBench, StepSetup
    from alexcli.config import preset

    cfg = preset("paper")
    bench = StepBench(
        cfg.model,
        batch_size=128,
        devices=[torch.device("cpu")],
        setup=StepSetup.tuned(threads=torch.get_num_threads()),
        lr=cfg.lr,
        input_scale=cfg.input_scale,
    )
    return bench.rate(seconds).per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--gather", action="store_true", help="fill PHOTOS from the packages")
    parser.add_argument("--copies", type=int, default=31)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.gather:
        gather(args.photos)
    work = Path(tempfile.mkdtemp(prefix="encodings-"))
    try:
        photos = make_source(args.photos, work / "src", args.copies)
        prep: dict[str, list[float]] = {k: [] for k in ENCODINGS}
        fill: dict[str, list[float]] = {k: [] for k in ENCODINGS}
        decode: dict[str, list[float]] = {k: [] for k in ENCODINGS if k != "raw"}
        for r in range(args.rounds):  # alternated, so drift on a shared machine hits all
            order = list(ENCODINGS)[r % len(ENCODINGS) :] + list(ENCODINGS)[: r % len(ENCODINGS)]
            for name in order:
                encoding, quality = ENCODINGS[name]
                prep[name].append(prepare(work / "src", work / name, encoding, quality))
                fill[name].append(fill_rate(work / name, args.seconds))
                if name in decode:
                    decode[name].append(decode_rate(work / name, args.seconds))
            print(
                f"round {r + 1}: " + ", ".join(f"{k} {fill[k][-1]:,.0f}/s" for k in fill),
                flush=True,
            )
        appetite = step_appetite(2 * args.seconds)
        raw_images = distinct_images(work / "raw", photos)
        report: dict[str, dict[str, float]] = {}
        for name in ENCODINGS:
            manifest = json.loads((work / name / "manifest.json").read_text())
            images = sum(s["images"] for s in manifest["splits"].values())
            per_image = manifest["bytes"] / images
            from alexcli.stages.datadir import open_data_dir

            index = open_data_dir(work / name).shard_set("train").index()
            record = float(index.lengths.mean()) if index.lengths.any() else 256 * 256 * 3.0
            report[name] = {
                "bytes_per_image": per_image,
                "record_bytes": record,
                "ilsvrc2012_gb": per_image * ILSVRC_2012_IMAGES / 1e9,
                "prepare_images_per_s": statistics.median(prep[name]),
                "worker_images_per_s": statistics.median(fill[name]),
                "decode_only_images_per_s": statistics.median(decode.get(name, [0.0])),
                **fidelity(raw_images, distinct_images(work / name, photos)),
            }
        raw = report["raw"]
        for row in report.values():
            row["bytes_vs_raw"] = row["bytes_per_image"] / raw["bytes_per_image"]
            row["prepare_vs_raw"] = row["prepare_images_per_s"] / raw["prepare_images_per_s"]
            row["worker_vs_raw"] = row["worker_images_per_s"] / raw["worker_images_per_s"]
            row["worker_vs_step"] = row["worker_images_per_s"] / appetite
            row["workers_for_h100"] = H100_IMAGES_PER_S / row["worker_images_per_s"]
        result = {
            "photos": photos,
            "images": photos * args.copies,
            "rounds": args.rounds,
            "paper_step_images_per_s": appetite,
            "encodings": report,
        }
        args.out.write_text(json.dumps(result, indent=1))
        print(f"paper step (fp32, batch 128, this CPU): {appetite:.1f} images/s")
        print(
            "| encoding | bytes/image | ÷ raw | ILSVRC-2012 | PSNR | prepare ÷ raw "
            "| worker images/s | ÷ raw | ÷ step | workers for 20k/s | mean-image Δ max |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for name, r in report.items():
            print(
                f"| {name} | {r['bytes_per_image']:,.0f} | {r['bytes_vs_raw']:.3f} "
                f"| {r['ilsvrc2012_gb']:.0f} GB | {r['psnr_db']:.1f} dB "
                f"| {r['prepare_vs_raw']:.2f} | {r['worker_images_per_s']:,.0f} "
                f"| {r['worker_vs_raw']:.3f} | {r['worker_vs_step']:.0f} "
                f"| {r['workers_for_h100']:.1f} | {r['mean_image_max_diff']:.2f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
