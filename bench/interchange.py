"""Interchange benchmark: what the field's tools see of a store, and how fast it goes out and comes in.

In one run, on one store of ``--n`` pairs of 128 x 128 (speckled label-following images, 4 classes):

- the xarray view (``xarray.open_zarr`` repr) and the folder tree of ``synthgen convert --to nnunet``;
- convert throughput (samples/s) to nnU-Net (NIfTI), plain NIfTI and PNG, medians of ``--repeats``;
- ``StoreDataset`` (map-style, one random read per item) through torch's DataLoader with 0 and 2
  workers, against the streaming loader (``StoreStream``, sequential blocks) in the same run; each
  loader is warmed by one pass first (worker start-up is not throughput), then timed over ``--repeats``;
- a MONAI training loop of a few steps on ``StoreDataset`` batches (MONAI's UNet and DiceCELoss).

    python bench/interchange.py --n 2048 --out bench/results/interchange.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model
from store import make_pairs

from synthgen.schemas import CAMUS
from synthgen.schemas.store_layout import Intensity, MetaField, StoreAttrs, StoreLayout
from synthgen.storage import ConvertConfig, StoreDataset, convert_store
from synthgen.storage.loader import LoaderConfig, StoreStream, make_loader
from synthgen.storage.store import StoreWriter, use_fast_codecs

SIZE = 128
PATIENTS_PER_SAMPLE = 4  # four frames per patient, as CAMUS


def write_store(url: str, n: int) -> None:
    images, labels = make_pairs(n, SIZE)
    meta = (MetaField("patient", "int32"),)
    layout = StoreLayout(n=n, image_shape=(SIZE, SIZE), shard_size=256, meta=meta)
    attrs = StoreAttrs(layout, CAMUS, Intensity.for_dtype("uint8"), spacing=(0.3, 0.3))
    writer = StoreWriter.create(url, attrs)
    patients = np.arange(n, dtype=np.int32) // PATIENTS_PER_SAMPLE + 1
    for k in range(layout.num_shards):
        a, b = layout.shard_bounds(k)
        writer.write_shard(k, images[a:b], labels[a:b], {"patient": patients[a:b]})
    writer.mark_complete(range(layout.num_shards))


def tree(folder: Path, shown: int = 3) -> list[str]:
    """The folder as ``tree`` draws it, with the first ``shown`` files of each subfolder."""
    lines = [folder.name + "/"]
    for sub in sorted(folder.iterdir()):
        if sub.is_dir():
            files = sorted(sub.iterdir())
            lines.append(f"  {sub.name}/  ({len(files)} files)")
            lines += [f"    {f.name}" for f in files[:shown]] + (["    ..."] if len(files) > shown else [])
        else:
            lines.append(f"  {sub.name}")
    return lines


def time_convert(url: str, root: Path, to: str, n: int, repeats: int, split: bool) -> dict:
    rates = []
    for r in range(repeats):
        out = root / f"{to}{r}"
        start = time.perf_counter()
        convert_store(ConvertConfig(url, str(out), to, split=split), progress=False)
        rates.append(n / (time.perf_counter() - start))
    return {"samples_per_s": statistics.median(rates), "runs": rates}


def time_loader(loader, n: int) -> float:
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch["image"])
    assert seen == n, (seen, n)
    return n / (time.perf_counter() - start)


def dataset_rates(url: str, n: int, batch: int, repeats: int) -> dict:
    from torch.utils.data import DataLoader

    out = {}
    for workers in (0, 2):
        context = {"multiprocessing_context": "spawn", "persistent_workers": True} if workers else {}
        loader = DataLoader(StoreDataset(url), batch_size=batch, shuffle=True, num_workers=workers, **context)
        time_loader(loader, n)  # warm: worker start-up and first reads are not throughput
        rates = [time_loader(loader, n) for _ in range(repeats)]
        out[f"StoreDataset, {workers} workers"] = {"samples_per_s": statistics.median(rates), "runs": rates}
        stream = StoreStream(url, LoaderConfig(batch_size=batch))
        extra = {"persistent_workers": True} if workers else {}
        loader = make_loader(stream, num_workers=workers, **extra)
        time_loader(loader, n)  # warm, as above
        rates = [time_loader(loader, n) for _ in range(repeats)]
        out[f"StoreStream, {workers} workers"] = {"samples_per_s": statistics.median(rates), "runs": rates}
    return out


def monai_loop(url: str, steps: int) -> dict:
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet
    from monai.transforms import Compose, RandFlipd
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    data = StoreDataset(
        url, transform=Compose([RandFlipd(keys=["image", "label"], prob=0.5, spatial_axis=1)])
    )
    net = UNet(spatial_dims=2, in_channels=1, out_channels=4, channels=(8, 16, 32), strides=(2, 2))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    losses, start = [], time.perf_counter()
    for step, batch in enumerate(DataLoader(data, batch_size=16, shuffle=True)):
        if step == steps:
            break
        opt.zero_grad()
        loss = loss_fn(net(batch["image"]), batch["label"])
        loss.backward()
        opt.step()
        losses.append(round(float(loss), 4))
    return {"steps": len(losses), "losses": losses, "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--monai-steps", type=int, default=20)
    parser.add_argument("--out", default="bench/results/interchange.json")
    args = parser.parse_args()
    use_fast_codecs()
    torch.set_num_threads(1)
    import xarray as xr

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        url = str(root / "echo.zarr")
        write_store(url, args.n)
        xarray_repr = repr(xr.open_zarr(url, consolidated=False))
        convert = {
            to: time_convert(url, root, to, args.n, args.repeats, split=to == "nnunet")
            for to in ("nnunet", "nifti", "png")
        }
        result = {
            "cpu": cpu_model(),
            "n": args.n,
            "image_size": [SIZE, SIZE],
            "xarray_open_zarr": xarray_repr.splitlines(),
            "nnunet_tree": tree(root / "nnunet0"),
            "convert": convert,
            "loaders": dataset_rates(url, args.n, args.batch_size, args.repeats),
            "monai_loop": monai_loop(url, args.monai_steps),
        }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(result["xarray_open_zarr"] + result["nnunet_tree"]))
    for what, figures in {**result["convert"], **result["loaders"]}.items():
        print(f"{what}: {figures['samples_per_s']:,.0f} samples/s")
    print(f"MONAI loop: {result['monai_loop']}")


if __name__ == "__main__":
    main()
