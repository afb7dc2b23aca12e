"""What choosing the student after its fine-tune gains (``--finalists``), measured on a finished run.

A search with a target hands the fine-tune the student its short distillation ranked first. This script takes a
finished ``n2n compress --target-*`` run directory, fine-tunes its ``--k`` best students under the target exactly as
``n2n compress`` does (same settings, seed and teacher logits), and reports each one's search accuracy, validation
and test accuracy after the fine-tune: the search's pick is the first, ``--finalists K`` would keep the most
accurate on validation. No search is run again.

Usage::

    python benchmarks/finalists.py --run runs/mnist-75k --data mnist --data-dir ../shared/data/mnist --k 3 \\
        --json benchmarks/results/finalists_mnist.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from n2n.compress import finalist_rank, finetune_student
from n2n.data import load_data
from n2n.models.io import load_model
from n2n.preprocess import match_teacher
from n2n.runlog import read_events
from n2n.search.candidate import CandidateResult
from n2n.search.front import top_students
from n2n.search.setup import eval_context, training_logits
from n2n.settings_file import read_config
from n2n.surgery import Edits, analyze


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a finished n2n compress run directory (with a --target-*)")
    p.add_argument("--data", required=True)
    p.add_argument("--data-dir")
    p.add_argument("--k", type=int, default=3, help="finalists to fine-tune")
    p.add_argument(
        "--teacher",
        help="another saved teacher of the same architecture to apply the students' edits to and distil from "
        "(default: the run's own): what a stronger teacher would give the same architectures, without a search",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        help="fine-tune this many epochs instead of the run's setting (what a longer distillation gives the same "
        "students)",
    )
    p.add_argument("--json", required=True, help="where to write the figures")
    return p.parse_args(argv)


def searched(run: Path) -> list[CandidateResult]:
    """Every valid student the run's search evaluated, from its event log (first evaluation of each)."""
    seen: dict[str, CandidateResult] = {}
    for e in read_events(run / "events.jsonl"):
        if e.get("event") != "candidate" or e["reason"] or e["cached"]:
            continue
        edits = Edits.from_dict(e["edits"])
        figures = (e["params"], e["macs"], e["val_accuracy"], e["paper_reward"], "", 0.0, e["latency_ms"])
        seen.setdefault(edits.key(), CandidateResult(edits, *figures))
    return list(seen.values())


def pair_agreement(rows: list[dict[str, Any]], key: str, lower_is_better: bool = False) -> float | None:
    """The share of finalist pairs with different test accuracy that ``key`` orders the same way (a tie: half)."""
    sign = -1.0 if lower_is_better else 1.0
    scores = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            if a["test_accuracy"] == b["test_accuracy"]:
                continue
            by_key = sign * (a[key] - b[key])
            by_test = a["test_accuracy"] - b["test_accuracy"]
            scores.append(0.5 if by_key == 0 else float(by_key * by_test > 0))
    return sum(scores) / len(scores) if scores else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    run = Path(args.run)
    cfg = read_config(run / "config.json").validate()
    if args.finetune_epochs is not None:
        cfg = replace(cfg, finetune_epochs=args.finetune_epochs)
    target = cfg.target()
    if not target.set:
        raise SystemExit(f"{run} was searched without a --target-*: finalists are chosen among students under one")
    teacher, spec = load_model(Path(args.teacher) if args.teacher else run / "teacher")
    teacher.eval()
    split = json.loads((run / "run.json").read_text()).get("split_seed", cfg.seed)  # the run's validation split
    spec, data = match_teacher(spec, load_data(args.data, args.data_dir, seed=split))
    analysis = analyze(teacher, data.input_shape, fix=cfg.fix)
    ctx = eval_context(teacher, analysis, data, cfg)

    def under(r: CandidateResult) -> bool:  # the run's constraints and targets (compress's `_meets`)
        return not cfg.constraints().violated(r.params, r.val_accuracy, r.macs, r.latency_ms) and target.met(
            r.params, r.macs, r.latency_ms
        )

    finalists = top_students(searched(run), under, lambda r: r.val_accuracy, args.k)
    z_train = training_logits(ctx, data, cfg)
    rows = []
    for rank, r in enumerate(finalists):
        t0 = time.perf_counter()
        _, final = finetune_student(ctx, data, cfg, r.edits, lambda event: None, None, {}, z_train)
        rows.append(
            {
                "rank": rank,
                "params": final["params"],
                "search_val_accuracy": r.val_accuracy,
                "val_accuracy": final["val_accuracy"],
                "val_loss": final["val_loss"],
                "test_accuracy": final["test_accuracy"],
                "seconds": time.perf_counter() - t0,
                "edits": r.edits.to_dict(),
            }
        )
        print(
            f"#{rank} {final['params']:>8,} params: search {r.val_accuracy:.2%}, val {final['val_accuracy']:.2%}, "
            f"loss {final['val_loss']:.4f}, test {final['test_accuracy']:.2%}",
            flush=True,
        )
    chosen = max(rows, key=lambda row: finalist_rank(row, row["rank"]))  # what --finalists K keeps
    by_loss = min(rows, key=lambda row: (row["val_loss"], row["rank"]))
    result = {
        "benchmark": "finalists",
        "command": " ".join(["python", "benchmarks/finalists.py", *sys.argv[1:]]),
        "run": str(run),
        "teacher": str(args.teacher or run / "teacher"),
        "finetune_epochs": cfg.finetune_epochs,
        "target": {"params": target.params, "flops": target.flops, "latency_ms": target.latency_ms},
        "finalists": rows,
        "search_pick_test_accuracy": rows[0]["test_accuracy"],
        "finalists_pick": chosen["rank"],
        "finalists_pick_test_accuracy": chosen["test_accuracy"],
        "val_loss_pick": by_loss["rank"],
        "val_loss_pick_test_accuracy": by_loss["test_accuracy"],
        # how often each validation figure orders two finalists as their test accuracy does (ties count half)
        "pairs_ordered_by": {
            "search_val_accuracy": pair_agreement(rows, "search_val_accuracy"),
            "val_accuracy": pair_agreement(rows, "val_accuracy"),
            "val_loss": pair_agreement(rows, "val_loss", lower_is_better=True),
        },
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"search's pick: test {rows[0]['test_accuracy']:.2%}; best of {len(rows)} on validation (#{chosen['rank']}): "
        f"test {chosen['test_accuracy']:.2%}; lowest validation loss (#{by_loss['rank']}): "
        f"test {by_loss['test_accuracy']:.2%}"
    )
    return result


if __name__ == "__main__":
    main()
