"""Does augmenting the final fine-tune make n2n's students more accurate? Side by side on the finalists of finished
``n2n compress`` runs, each fine-tuned from the teacher's inherited weights as ``compress`` does:

- ``none``: the batches as they are (the default for MNIST-like data);
- ``fixed``: batches augmented by ``--augment`` (random crops by default), the teacher's logits of the images as they
  are as targets: what ``compress --augment`` does;
- ``online``: the same augmented batches, the teacher's logits computed on each augmented batch (consistent targets,
  Beyer et al. 2022), at the price of a teacher pass per step: what ``compress --augment crop --finetune-targets
  online`` does.

Every figure is chosen on the validation split (best of about ten checks, as ``compress``); test accuracy is the
result. Prints one line per fine-tune and writes them, with the command, to ``--json``:

    python benchmarks/finetune_augment.py --run RUN_A --run RUN_B --finalists 0,1 --variants none,fixed,online
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _n2n import commit, machine  # noqa: E402

from n2n.data import Normalization, load_data  # noqa: E402
from n2n.models.io import load_model  # noqa: E402
from n2n.surgery import Edits  # noqa: E402
from n2n.surgery.edits import apply_edits  # noqa: E402
from n2n.train.evaluate import accuracy, predict_logits  # noqa: E402
from n2n.train.finetune import FinetuneSettings, finetune  # noqa: E402

VARIANTS = ("none", "fixed", "online")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", required=True, help="a finished compress run directory (repeatable)")
    p.add_argument("--finalists", default="0", help="which finalists of each run's report, comma-separated")
    p.add_argument("--variants", default="none,fixed", help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--augment", default="crop", help="the augmentation policy of fixed and online")
    p.add_argument("--seeds", default="0", help="fine-tune seeds, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, required=True)
    args = p.parse_args()
    variants = args.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    torch.set_num_threads(args.threads)
    rows = []
    for run in map(Path, args.run):
        report = json.loads((run / "report.json").read_text())
        source = json.loads((run / "run.json").read_text())
        teacher, spec = load_model(run / "teacher")
        teacher.eval()
        options = {k: v for k, v in (source.get("data_options") or {}).items() if k != "augment"}
        data = load_data(
            source["data"], source.get("data_dir"), seed=source["split_seed"], max_train=source.get("max_train"),
            options=options,
        )  # fmt: skip
        if spec.normalization:  # what the teacher was given, as compress does
            norm = spec.normalization
            data = data.normalized(Normalization(tuple(norm["mean"]), tuple(norm["std"])))
        z_train = predict_logits(teacher, data.train.x, 512)
        for index in map(int, args.finalists.split(",")):
            recorded = (report.get("finalists") or [{"edits": report["student"]["edits"]}])[index]["edits"]
            edits = Edits.make(recorded["removed"], dict(recorded["keep"]))
            for seed in map(int, args.seeds.split(",")):
                for variant in variants:
                    student = apply_edits(teacher, edits, data.train.x[:2], spec.protected)
                    t0 = time.perf_counter()
                    settings = FinetuneSettings(
                        seed=seed,
                        augment="none" if variant == "none" else args.augment,
                        targets="online" if variant == "online" else "fixed",
                    )
                    torch.manual_seed(seed)
                    student, val = finetune(student, data, z_train, settings, teacher=teacher)
                    row = {
                        "run": str(run),
                        "finalist": index,
                        "params": sum(q.numel() for q in student.parameters()),
                        "seed": seed,
                        "variant": variant,
                        "val_accuracy": val,
                        "test_accuracy": accuracy(student, data.test.x, data.test.y),
                        "seconds": time.perf_counter() - t0,
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    summary = summarise(rows, variants)
    for variant, figures in summary.items():
        print(f"{variant}: {json.dumps(figures)}")
    args.json.write_text(
        json.dumps(
            {
                "benchmark": "finetune_augment",
                "command": " ".join(["python", "benchmarks/finetune_augment.py", *sys.argv[1:]]),
                "commit": commit(),
                "machine": machine(),
                "rows": rows,
                "summary": summary,
            },
            indent=1,
        )
    )


def summarise(rows: list[dict], variants: list[str]) -> dict:
    """Per variant: mean test and validation accuracy, and the mean paired difference to ``none`` (same student and
    seed), with its standard error when there are several pairs."""
    base = {(r["run"], r["finalist"], r["seed"]): r for r in rows if r["variant"] == "none"}
    out = {}
    for variant in variants:
        group = [r for r in rows if r["variant"] == variant]
        diffs = [
            r["test_accuracy"] - base[r["run"], r["finalist"], r["seed"]]["test_accuracy"]
            for r in group
            if (r["run"], r["finalist"], r["seed"]) in base
        ]
        out[variant] = {
            "n": len(group),
            "mean_test": statistics.mean(r["test_accuracy"] for r in group),
            "mean_val": statistics.mean(r["val_accuracy"] for r in group),
            "mean_seconds": statistics.mean(r["seconds"] for r in group),
            "test_minus_none": statistics.mean(diffs) if diffs and variant != "none" else None,
            "stderr": statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 and variant != "none" else None,
        }
    return out


if __name__ == "__main__":
    main()
