"""Does the search's proxy rank first the students that fine-tune best? (issue 22: where the 75K gap comes from)

A search scores each candidate by a short distillation (its proxy) and fine-tunes only the top few (the finalists).
Random search's 75K finalists score lower in that proxy than n2n's yet fine-tune better; if the proxy mis-ranks
such students, no finalist rule can repair it. This benchmark takes the finalists of finished runs (each run's
``report.json`` holds every finalist's edits and its validation accuracy after the final fine-tune, the figure
that chooses the student), scores each one again with several proxies, and reports per proxy how well it ranks the
fine-tuned validation accuracy:

  search    the run's own candidate training (its config.json: steps, equal-compute scaling, examples); it
            reproduces the proxy the search saw, a check that the set-up matches
  steps-x2  the same with twice the steps
  steps-x4  four times the steps
  bn        the search's proxy, then the batch norms' running statistics recomputed on 20 training batches
            (EagleEye's recalibration) before scoring
  bn-only   no distillation at all: the inherited weights, batch norms recalibrated so, scored (EagleEye's cheap
            score; a candidate would cost a few forward passes instead of a short training)

Runs of the same seed share their splits, so their finalists are pooled (n2n's and random search's together): per
seed and proxy, the Spearman correlation with the fine-tuned validation accuracy, and whether the proxy's top
finalist is the one that fine-tuned best. Test accuracy is never used.

Usage::

    python benchmarks/proxy_ranking.py --runs runs/frontier/n2n-75000-s0 runs/frontier/random-75000-s0 \\
        --runs runs/frontier/n2n-75000-s1 runs/frontier/random-75000-s1 --json benchmarks/results/proxy_ranking.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import spearmanr
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _n2n import commit, machine  # noqa: E402

from n2n.data import load_recorded  # noqa: E402
from n2n.models.io import load_model  # noqa: E402
from n2n.preprocess import match_teacher  # noqa: E402
from n2n.search.candidate import (  # noqa: E402
    EvalContext,
    build_student,
    candidate_seed,
    train_candidate,
)
from n2n.search.setup import eval_context  # noqa: E402
from n2n.settings_file import read_config  # noqa: E402
from n2n.surgery import Edits, analyze, count_macs  # noqa: E402
from n2n.train.evaluate import accuracy  # noqa: E402

PROXIES = ("search", "steps-x2", "steps-x4", "bn", "bn-only")
BN_BATCHES = 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--runs",
        nargs="+",
        action="append",
        required=True,
        metavar="RUN",
        help="finished n2n compress runs of one seed whose finalists are pooled (repeat for another seed)",
    )
    p.add_argument("--proxies", default=",".join(PROXIES), help=f"a subset of {','.join(PROXIES)}")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    args.proxies = args.proxies.split(",")
    unknown = [x for x in args.proxies if x not in PROXIES]
    if unknown:
        p.error(f"unknown proxy {unknown[0]!r}: choose from {', '.join(PROXIES)}")
    return args


def student(ctx: EvalContext, edits: Edits, steps_scale: int | None) -> nn.Module:
    """The student of ``edits`` as the search trains it (same seed; ``steps_scale`` times its steps), or with its
    inherited weights untrained when ``steps_scale`` is None."""
    torch.manual_seed(candidate_seed(ctx.settings.seed, edits))
    model = build_student(ctx, edits)
    if steps_scale is not None:
        settings = dataclasses.replace(ctx.settings, steps=ctx.settings.steps * steps_scale)
        train_candidate(dataclasses.replace(ctx, settings=settings), model, edits, count_macs(model, ctx.input_shape))
    return model


def recalibrated(ctx: EvalContext, model: nn.Module) -> nn.Module:
    """``model`` with its batch norms' running statistics recomputed from :data:`BN_BATCHES` training batches
    (training mode, no gradients, a cumulative average), in place."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    order = torch.randperm(len(ctx.x_train), generator=torch.Generator().manual_seed(ctx.settings.seed))
    size = ctx.settings.batch_size
    model.train()
    with torch.no_grad():
        for i in range(BN_BATCHES):
            model(ctx.x_train[order[i * size : (i + 1) * size]])
    return model.eval()


def scores(ctx: EvalContext, proxies: list[str], edits: Edits) -> dict[str, float]:
    """Each proxy's validation accuracy for ``edits``; ``bn`` recalibrates the student ``search`` trained."""
    s = ctx.settings

    def val(model: nn.Module) -> float:
        return accuracy(model, ctx.x_val, ctx.y_val, s.eval_batch_size, s.compute)

    out = {}
    if "search" in proxies or "bn" in proxies:
        trained = student(ctx, edits, 1)
        out["search"] = val(trained)
        out["bn"] = val(recalibrated(ctx, trained))
    for proxy, scale in (("steps-x2", 2), ("steps-x4", 4)):
        if proxy in proxies:
            out[proxy] = val(student(ctx, edits, scale))
    if "bn-only" in proxies:
        out["bn-only"] = val(recalibrated(ctx, student(ctx, edits, None)))
    return {proxy: out[proxy] for proxy in proxies}


def context(run: Path) -> EvalContext:
    """The candidate-evaluation context ``run``'s search had: its teacher (as saved in the run), data and settings."""
    cfg = read_config(run / "config.json")
    source = json.loads((run / "run.json").read_text())
    teacher, spec = load_model(run / "teacher")
    data = load_recorded(source, cfg.seed)  # split as the run split it
    _, data = match_teacher(spec, data)
    teacher = teacher.eval()
    return eval_context(teacher, analyze(teacher, data.input_shape, fix=cfg.fix), data, cfg)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    torch.set_num_threads(1)  # as the search trains candidates (--candidate-threads 1)
    started = time.perf_counter()
    groups = []
    for runs in args.runs:
        rows = []
        for run in map(Path, runs):
            report = json.loads((run / "report.json").read_text())
            if not report.get("finalists"):
                raise SystemExit(f"{run}/report.json lists no finalists: a run with a size target is needed")
            ctx = context(run)
            for f in report["finalists"]:
                edits = Edits.from_dict(f["edits"])
                row = {"run": str(run), "params": f["params"], "finetuned_val": f["val_accuracy"]}
                row["recorded_search"] = f["search_val_accuracy"]
                row.update(scores(ctx, args.proxies, edits))
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
                rows.append(row)
        best = max(rows, key=lambda r: r["finetuned_val"])
        summary = {}
        for proxy in [*args.proxies, "recorded_search"]:
            top = max(rows, key=lambda r: r[proxy])
            summary[proxy] = {
                "spearman": float(spearmanr([r[proxy] for r in rows], [r["finetuned_val"] for r in rows]).statistic),
                "top_is_best": top is best,
                "top": {"run": top["run"], "params": top["params"], "finetuned_val": top["finetuned_val"]},
            }
        groups.append({"runs": runs, "finalists": rows, "summary": summary})
    result = {
        "benchmark": "proxy_ranking",
        "command": " ".join(["python", "benchmarks/proxy_ranking.py", *sys.argv[1:]]),
        "commit": commit(),
        "machine": machine(),
        "bn_batches": BN_BATCHES,
        "wall_time_s": time.perf_counter() - started,
        "groups": groups,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print("\n| runs | proxy | Spearman with fine-tuned val | proxy's top finalist fine-tuned best |")
    print("|---|---|---:|---|")
    for g in groups:
        names = ", ".join(Path(r).name for r in g["runs"])
        for proxy, s in g["summary"].items():
            print(f"| {names} | {proxy} | {s['spearman']:.2f} | {'yes' if s['top_is_best'] else 'no'} |")
    return result


if __name__ == "__main__":
    main()
