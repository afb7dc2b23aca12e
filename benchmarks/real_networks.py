"""Real networks, trained by their owner's own loop, then one default ``n2n compress`` each (issue 21, item 5).

What a user with a torchvision or timm classifier does: the data as a ``.npz`` file of 3x32x32 RGB images, the
network built by its library with 10 classes and trained from scratch by a plain PyTorch loop on pixels in [0, 1]
(torchvision's ``ToTensor`` convention, no standardisation: n2n's ``--normalize auto`` has to find that out), its
weights saved as safetensors, and then::

    n2n compress --teacher torchvision:resnet18 --teacher-kwargs '{"num_classes": 10}' --weights W.safetensors \\
        --data npz --data-dir data.npz --out RUN

at default settings. Each row records the owner's test accuracy, what n2n measured for the teacher, the normalization
it chose, and the student's parameters, test accuracy and latency (batch 1 and 64, PyTorch eager and onnxruntime,
one thread, from the report) with the wall time of the compress.

Needs torchvision and timm, so it runs in ``.venv-models`` (``scripts/test-models`` makes it)::

    .venv-models/bin/python benchmarks/real_networks.py --data digits --runs runs/real \\
        --json benchmarks/results/real_networks_digits.json

``--data digits`` is scikit-learn's 8x8 digits upsampled to 32x32 (1,437 training and 360 test images, seconds per
epoch); ``--data mnist --data-dir ../shared/data/mnist`` pads MNIST to 32x32 (``--max-train`` caps the training
images). ``--quick`` shrinks every budget to a smoke test.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _n2n import N2N, commit, machine, run_quietly  # noqa: E402

MODELS = "torchvision:resnet18,torchvision:mobilenet_v2,timm:mobilenetv3_small_100"
QUICK = ["--updates", "2", "--rollouts", "3", "--steps", "5", "--finetune-epochs", "1", "--finetune-min-steps", "20"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=MODELS, help="import paths, comma-separated")
    p.add_argument("--data", choices=("digits", "mnist"), default="digits")
    p.add_argument("--data-dir", help="MNIST's IDX files (for --data mnist)")
    p.add_argument("--max-train", type=int, help="use at most this many training images (a stratified subset)")
    p.add_argument("--epochs", type=int, default=30, help="the owner's training epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", required=True, help="directory for the data, the teachers and the n2n runs")
    p.add_argument("--json", required=True, help="where to write every figure")
    p.add_argument("--n2n-args", default="", help="extra options for every `n2n compress` (recorded)")
    p.add_argument("--quick", action="store_true", help="smoke-test budgets (figures mean nothing)")
    p.add_argument("--reuse", action="store_true", help="keep teachers and runs already finished in --runs")
    return p.parse_args(argv)


def rgb32(x: np.ndarray, scale: float) -> np.ndarray:
    """Grey images (N, H, W) of values 0..scale -> uint8 RGB (N, 3, 32, 32): bilinear resize up, or zero padding."""
    t = torch.from_numpy(x.astype(np.float32) / scale)[:, None]
    if t.shape[-1] < 32:
        t = F.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)
    else:
        pad = (32 - t.shape[-1]) // 2
        t = F.pad(t, (pad, 32 - t.shape[-1] - pad, pad, 32 - t.shape[-2] - pad))
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1).numpy().copy()


def write_data(args: argparse.Namespace, path: Path) -> dict[str, np.ndarray]:
    """The data set as the user has it: 3x32x32 uint8 images in a .npz with its own test split."""
    if args.data == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        images = digits.images.astype(np.float32)
        x, x_test, y, y_test = train_test_split(
            images, digits.target, test_size=0.2, random_state=0, stratify=digits.target
        )
        scale = 16.0
    else:
        from n2n.data.idx import read_idx_dataset

        x, y, x_test, y_test, _, scale = read_idx_dataset("mnist", Path(args.data_dir))
        x, x_test = x.reshape(-1, *x.shape[-2:]), x_test.reshape(-1, *x_test.shape[-2:])
    if args.max_train and args.max_train < len(y):
        from sklearn.model_selection import train_test_split

        x, _, y, _ = train_test_split(x, y, train_size=args.max_train, random_state=0, stratify=y)
    arrays = {
        "x": rgb32(x, scale),
        "y": y.astype(np.int64),
        "x_test": rgb32(x_test, scale),
        "y_test": y_test.astype(np.int64),
    }
    np.savez(path, **arrays)
    return arrays


def build(target: str) -> torch.nn.Module:
    library, name = target.split(":")
    if library == "torchvision":
        import torchvision

        return torchvision.models.get_model(name, num_classes=10)
    import timm

    return timm.create_model(name, num_classes=10)


def owners_loop(model: torch.nn.Module, arrays: dict[str, np.ndarray], epochs: int, seed: int) -> float:
    """The owner's training: Adam, one-cycle to 3e-3, batch 128, cross-entropy on [0, 1] pixels with random shifts
    of up to 2 pixels; returns the test accuracy."""
    torch.manual_seed(seed)
    x = torch.from_numpy(arrays["x"]).float() / 255
    y = torch.from_numpy(arrays["y"])
    steps = epochs * -(-len(y) // 128)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(128):
            batch = F.pad(x[idx], (2, 2, 2, 2))
            i, j = torch.randint(0, 5, (2,)).tolist()
            loss = F.cross_entropy(model(batch[:, :, i : i + 32, j : j + 32]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    x_test = torch.from_numpy(arrays["x_test"]).float() / 255
    with torch.no_grad():
        predicted = torch.cat([model(b).argmax(1) for b in x_test.split(256)])
    return (predicted == torch.from_numpy(arrays["y_test"])).float().mean().item()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.data == "mnist" and not args.data_dir:
        raise SystemExit("--data mnist needs --data-dir (the IDX files)")
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data_file = runs / f"{args.data}-rgb32.npz"
    arrays = write_data(args, data_file)
    rows: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for target in args.models.split(","):
        slug = target.replace(":", "-")
        weights = runs / f"{slug}.safetensors"
        owner_file = runs / f"{slug}.owner.json"
        if args.reuse and weights.is_file() and owner_file.is_file():
            owner = json.loads(owner_file.read_text())
        else:
            from safetensors.torch import save_file

            model = build(target)
            t0 = time.perf_counter()
            accuracy = owners_loop(model, arrays, 1 if args.quick else args.epochs, args.seed)
            owner = {"test_accuracy": accuracy, "seconds": time.perf_counter() - t0, "epochs": args.epochs}
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
            owner_file.write_text(json.dumps(owner))
        print(f"{target}: the owner's loop gives {owner['test_accuracy']:.2%} test accuracy", flush=True)
        run = runs / slug
        cmd = [
            *N2N,
            "compress",
            "--teacher",
            target,
            "--teacher-kwargs",
            '{"num_classes": 10}',
            "--weights",
            str(weights),
            "--data",
            "npz",
            "--data-dir",
            str(data_file),
            "--out",
            str(run),
            "--overwrite",
            "--seed",
            str(args.seed),
            *args.n2n_args.split(),
            *(QUICK if args.quick else []),
        ]
        done = args.reuse and (run / "report.json").is_file()
        seconds = None if done else run_quietly(cmd)
        report = json.loads((run / "report.json").read_text())
        spec = json.loads((run / "student" / "spec.json").read_text())
        cost = report.get("cost", {})
        rows.append(
            {
                "model": target,
                "owner": owner,
                "normalization": spec.get("normalization"),
                "teacher": report["teacher"],
                "student": {k: v for k, v in report["student"].items() if k != "edits"},
                "edits": report["student"].get("edits"),
                "compression": report["compression"],
                "flops_reduction": report.get("flops_reduction"),
                "latency_ms": {who: cost.get(who, {}).get("latency_ms") for who in ("teacher", "student")},
                "evaluations": report.get("evaluations"),
                "seconds": report.get("wall_time_s") if seconds is None else seconds,
                "command": " ".join(["n2n", *cmd[len(N2N) :]]),
            }
        )
        result = write(args, rows)
    print_table(result)
    return result


def write(args: argparse.Namespace, rows: list[dict[str, Any]]) -> dict[str, Any]:
    result = {
        "benchmark": "real_networks",
        "command": " ".join(["python", "benchmarks/real_networks.py", *sys.argv[1:]]),
        "commit": commit(),
        "data": args.data,
        "quick": args.quick,
        "machine": machine(),
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def _b1(latency: dict[str, Any], runtime: str) -> str:
    """Teacher -> student batch-1 latency under ``runtime``, or "-" where the report has none."""
    try:
        return f"{latency['teacher'][runtime]['1']:.2f} -> {latency['student'][runtime]['1']:.2f}"
    except (KeyError, TypeError):
        return "-"


def print_table(result: dict[str, Any]) -> None:
    print(
        "\n| model | teacher params | teacher test | student params | student test | compression | "
        "torch b1 ms teacher -> student | onnxruntime b1 ms | compress wall |"
    )
    print("|---|---:|---:|---:|---:|---:|---|---|---:|")
    for r in result["rows"]:
        ms = {runtime: _b1(r["latency_ms"], runtime) for runtime in ("torch", "onnxruntime")}
        print(
            f"| {r['model']} | {r['teacher']['params']:,} | {r['teacher']['test_accuracy']:.2%} | "
            f"{r['student']['params']:,} | {r['student']['test_accuracy']:.2%} | {r['compression']:.1f}x | "
            f"{ms['torch']} | {ms['onnxruntime']} | {r['seconds'] / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
