"""The typed, validated settings of a compression search."""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from n2n.errors import ConfigError
from n2n.files import check_safetensors, check_writable_dir
from n2n.search.policies import PAPER_FRACTIONS
from n2n.search.reward import Constraints, Target
from n2n.train.compute import Compute, resolve_device, resolve_precision
from n2n.train.finetune import FinetuneSettings

STAGES = ("remove", "shrink")
MAX_FRONT = 16  # students fine-tuned at the end of a search: each costs a full fine-tune
MAX_HIDDEN = 4096  # LSTM hidden units: far above the paper's 30 and 50, far below what exhausts memory

#: ``--protocol paper``: the search settings of Ashok et al. (2018), section 4 and appendix.
PAPER_PROTOCOL = {
    "reinit": True,  # the original re-initialised every student
    "candidate_epochs": 5.0,  # 5 epochs of distillation per candidate ...
    "candidate_examples": 10**9,  # ... over the whole training split
    "distill": "mse",
    "lr": 5e-4,
    "weight_decay": 5e-4,
    "rollouts": 5,
    "updates": 100,
    "max_step_scale": 1.0,  # every candidate gets the same epochs
    "removal_hidden": 30,
    "removal_lr": 0.003,
    "shrink_hidden": 50,
    "shrink_lr": 0.01,
    "advantage": "ema",  # R - b with a moving-average b (eq. 2)
    "max_draws": 1,  # exactly 5 rollouts per update, seen or not
    "shrink_bases": 1,  # stage 2 shrinks the best stage-1 network
    "fractions": PAPER_FRACTIONS,
}

#: the search schedule a setting left unset takes: without a size target (the reward trades accuracy against
#: compression) and with one (every candidate is scored at the target's size, so candidates differ less and the
#: search gains more from twice the updates of 3x cheaper candidates, redrawing students it has seen; measured on
#: MNIST in docs/benchmarks.md, "24 updates of cheaper candidates")
SCHEDULES = {
    "untargeted": {"updates": 12, "steps": 60, "max_draws": 1},
    "targeted": {"updates": 24, "steps": 20, "max_draws": 4},
}


def _opt(default: Any, help: str, **extra: Any) -> Any:  # noqa: A002 - mirrors argparse's vocabulary
    return field(default=default, metadata={"help": help, **extra})


@dataclass(frozen=True)
class CompressConfig:
    """Settings of ``n2n compress``. Every field is also a command-line option (underscores become dashes)."""

    # -- search: what is searched, how long, from where
    stages: Literal["remove", "shrink", "both"] = _opt(
        "both",
        "stages to run: remove (stage 1), shrink (stage 2) or both",
        group="search",
    )
    protocol: Literal["n2n", "paper"] = _opt(
        "n2n",
        "n2n: inherited weights, short distillation (our CPU default); paper: the paper's search settings (students "
        "re-initialised, 5 epochs of MSE distillation per candidate, Adam lr 5e-4, 100 updates, removal lr 0.003); "
        "options given explicitly override the preset",
        group="search",
    )
    search: Literal["rl", "random"] = _opt(
        "rl",
        "rl: the N2N policies learn from rewards; random: uniform random actions with the same "
        "budget (the baseline a learned search must beat)",
        group="search",
    )
    updates: int = _opt(None, "policy updates per stage", group="search")
    rollouts: int = _opt(5, "candidate students sampled per policy update", group="search")
    seed: int = _opt(0, "seed for everything random (sampling, training, data order)", group="search")
    init_policy: str | None = _opt(
        None,
        "run directory of an earlier search whose trained policies start this one "
        "(they work on any teacher: policies read per-layer features)",
        group="search",
    )

    # -- policy: the two policies and their policy-gradient step
    removal_lr: float = _opt(0.01, "Adam learning rate of the removal policy", group="policy")
    shrink_lr: float = _opt(0.01, "Adam learning rate of the shrink policy", group="policy")
    removal_hidden: int = _opt(30, "hidden units of the removal policy's bidirectional LSTM (2 layers)", group="policy")
    shrink_hidden: int = _opt(50, "hidden units of the shrink policy's LSTM (2 layers)", group="policy")
    advantage: Literal["batch", "ema", "risk"] = _opt(
        "ema",
        "policy-gradient advantage: ema (R minus a moving-average baseline, the paper), batch ((R - batch mean) / "
        "batch std) or risk (only samples in the top --risk-epsilon of the stage so far push, Petersen et al. 2021)",
        group="policy",
    )
    baseline_decay: float = _opt(0.8, "decay of the exponential moving average reward baseline b", group="policy")
    risk_epsilon: float = _opt(
        0.2, "with --advantage risk: the top fraction of rewards that trains the policy", group="policy"
    )
    entropy_coef: float = _opt(0.0, "entropy bonus weight in the policy loss", group="policy")
    max_draws: int = _opt(
        None,
        "draw up to this many times --rollouts students per update to find --rollouts new ones: a student evaluated "
        "before costs nothing (its cached reward still trains the policy); 1 draws exactly --rollouts (the paper)",
        group="policy",
    )
    shrink_bases: int = _opt(
        1,
        "stage 2 shrinks the best K stage-1 students, not only the best: each rollout first picks which one to shrink "
        "(a learned choice; random search picks uniformly), so a student that ranked second after removal but "
        "shrinks better is not lost; 1 shrinks the best only (the paper)",
        group="policy",
    )
    fractions: tuple[float, ...] = _opt(
        PAPER_FRACTIONS, "keep-fractions the shrink policy chooses from", group="policy"
    )

    # -- candidates: how each candidate student is trained and scored
    steps: int = _opt(
        None,
        "distillation steps (mini-batches) per candidate as costly as the teacher (see --max-step-scale)",
        group="candidates",
    )
    max_step_scale: float = _opt(
        4.0,
        "equal compute per candidate: a student with k times fewer FLOPs than the teacher trains min(k, this) "
        "times --steps, so small students are not under-trained and ranked too low (1: every candidate trains "
        "--steps)",
        group="candidates",
    )
    candidate_epochs: float | None = _opt(
        None,
        "train each candidate for this many epochs over its examples instead of --steps mini-batches",
        group="candidates",
    )
    candidate_examples: int = _opt(
        10000, "training examples candidates are distilled on (a seeded subset)", group="candidates"
    )
    batch_size: int = _opt(128, "mini-batch size for candidate training and the fine-tune", group="candidates")
    lr: float = _opt(1e-3, "Adam learning rate of candidate training", group="candidates")
    weight_decay: float = _opt(5e-4, "Adam weight decay of candidate training", group="candidates")
    distill: Literal["mse", "kl"] = _opt(
        "mse", "distillation loss: mse (paper) or kl (temperature-scaled)", group="candidates"
    )
    temperature: float = _opt(4.0, "temperature of the kl distillation loss", group="candidates")
    reinit: bool = _opt(
        False,
        "re-initialise candidates randomly instead of inheriting the teacher's weights (paper)",
        group="candidates",
    )

    # -- size: the size you want, and the students you get
    target_params: int | None = _opt(
        None,
        "the size you want: the result is the most accurate student with at most this many parameters (compression "
        "pays only until the target is met; see --target-exponent)",
        group="size",
    )
    target_flops: int | None = _opt(
        None, "as --target-params, for FLOPs (2 x multiply-accumulates) per input", group="size"
    )
    target_latency_ms: float | None = _opt(
        None,
        "as --target-params, for batch-1 latency in ms (in --latency-runtime, measured per candidate; removals and "
        "widths are scaled to it as a model fitted on the teacher and on the candidates measured so far predicts)",
        group="size",
    )
    target_exponent: float = _opt(
        -0.07,
        "with a --target-*: the reward of a student over its target is accuracy x (cost / target) ** this (MnasNet's "
        "soft form; more negative pushes harder to the target)",
        group="size",
    )
    removal_share: float = _opt(
        0.5,
        "with a --target-* and --removal-scoring partway: the removal stage aims at teacher x (target / teacher) ** "
        "this, this share of the compression in log scale, and leaves the rest to the shrink stage; 1: the removal "
        "stage aims at the target itself",
        group="size",
    )
    removal_scoring: Literal["partway", "narrowed"] = _opt(
        "narrowed",
        "with a --target-* and both stages: how the removal stage scores a removal. partway: as it is, against the "
        "nearer target of --removal-share; narrowed: first narrowed uniformly (one keep-fraction for all its layers) "
        "until it meets the target, so that removals are compared at the size asked for; the shrink stage then sets "
        "each layer's width",
        group="size",
    )
    shrink_scoring: Literal["sampled", "fitted"] = _opt(
        "fitted",
        "with a --target-*: how the shrink stage scores a width choice. fitted: with every keep-fraction scaled by one "
        "common factor, the largest with which the student meets the target, so that width profiles are compared at "
        "the size asked for (the policy sets each layer's share, the target the overall width; about 9 surgeries per "
        "candidate, in the main process); sampled: as sampled. Without a target the choice is scored as sampled",
        group="size",
    )
    finalists: int = _opt(
        3,
        "with a --target-*: fine-tune this many of the search's best students under the target and keep the one "
        "most accurate on the validation split after fine-tuning (the search's short distillation ranks students "
        "that close in accuracy by noise); each costs one fine-tune; 1: the search's best",
        group="size",
    )
    widen: bool = _opt(
        False,
        "with a --target-*: also fine-tune the search's best student widened to the target (every keep-fraction "
        "scaled up by one factor, the largest that still meets it) as one more finalist; the validation split "
        "decides; costs one candidate and one fine-tune",
        group="size",
    )
    front: int = _opt(
        3,
        "students fine-tuned and saved in students/: the chosen one and up to this many minus one more of the "
        "search's accuracy-size front, at distinct sizes, so you can pick a point without a second search (1: only "
        "the chosen student)",
        group="size",
    )

    # -- constraints: limits every student must meet, and what counts as cost
    max_params: int | None = _opt(None, "constraint: student parameters at most this", group="constraints")
    max_flops: int | None = _opt(
        None, "constraint: student FLOPs (2 x multiply-accumulates) per input at most this", group="constraints"
    )
    max_latency_ms: float | None = _opt(
        None,
        "constraint: student latency (batch 1, in --latency-runtime, measured per candidate) at most this many ms",
        group="constraints",
    )
    latency_runtime: Literal["torch", "onnxruntime"] = _opt(
        "torch",
        "where a latency target, constraint or objective is measured, one thread, batch 1: torch (PyTorch eager) or "
        "onnxruntime (the student's ONNX export, as `n2n export` writes it; needs `pip install 'n2n[export]'`; a "
        "student that cannot be exported is an invalid candidate). Eager PyTorch pays a fixed cost per layer call, "
        "so removing layers saves most there; onnxruntime's cost follows the multiply-accumulates more",
        group="constraints",
    )
    min_accuracy: float | None = _opt(
        None, "constraint: student validation accuracy at least this (fraction)", group="constraints"
    )
    constraint_mode: Literal["hard", "soft"] = _opt(
        "hard",
        "hard: R=-1 when violated; soft: the paper's annealed penalty",
        group="constraints",
    )
    objective: Literal["params", "flops", "latency"] = _opt(
        "params",
        "what the reward's compression C = 1 - cost_student / cost_teacher measures: params (the paper), flops, or "
        "latency (batch 1, in --latency-runtime, measured once per candidate architecture; noisy, so a latency run is "
        "not bit-reproducible)",
        group="constraints",
    )
    fix: tuple[str, ...] = _opt((), "glob patterns of layer names held out of both stages", group="constraints")
    max_linear_inputs: int = _opt(
        50000, "reject students with a linear layer taking more inputs (paper: 50,000)", group="constraints"
    )

    # -- fine-tune: the final training of the chosen students
    finetune_epochs: int = _opt(5, "epochs of the final fine-tune (CE + kd_weight * distillation)", group="fine-tune")
    finetune_lr: float = _opt(
        3e-3, "peak Adam learning rate of the final fine-tune (see --finetune-schedule)", group="fine-tune"
    )
    finetune_schedule: Literal["onecycle", "cosine"] = _opt(
        "onecycle",
        "learning-rate schedule of the fine-tune: onecycle (warm-up to --finetune-lr over 30%% of the steps, then "
        "cosine annealing; PyTorch's OneCycleLR) or cosine (from --finetune-lr down to 0)",
        group="fine-tune",
    )
    finetune_distill: Literal["kl", "mse"] = _opt(
        "kl",
        "distillation term of the fine-tune: kl (Hinton's, at --temperature) or mse (on logits, as candidates)",
        group="fine-tune",
    )
    kd_weight: float = _opt(1.0, "lambda: weight of the distillation term in the final fine-tune", group="fine-tune")
    finetune_targets: Literal["fixed", "online"] = _opt(
        "fixed",
        "distillation targets of a fine-tune whose batches are augmented (--augment or the data set's policy): fixed "
        "(the teacher's logits of each image as it is, computed once) or online (the teacher's logits of each "
        "augmented batch: consistent with what the student sees, one teacher forward pass per step); without "
        "augmentation the two are the same",
        group="fine-tune",
    )
    finetune_min_steps: int = _opt(
        1000,
        "the fine-tune runs at least this many steps (when --finetune-epochs > 0), "
        "so small data sets get enough training",
        group="fine-tune",
    )

    # -- compute: where candidates run (results depend only on --candidate-threads)
    workers: int = _opt(
        0,
        "candidates evaluated in parallel by worker processes (0: as many as CPUs / "
        "--candidate-threads; 1: serial in this process)",
        group="compute",
    )
    candidate_threads: int = _opt(
        1,
        "threads each candidate trains with; results depend on it (not on --workers), so keep it fixed to compare runs",
        group="compute",
    )
    ray_address: str | None = _opt(
        None,
        "evaluate candidates as tasks on an existing Ray cluster: the head node's HOST:PORT, or auto for the "
        "cluster started on this machine with `ray start --head` (needs pip install 'n2n[ray]'; --workers is unused)",
        group="compute",
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = _opt(
        "auto",
        "where students train and are evaluated: auto (cuda if available, else mps, else cpu), cpu, cuda, mps",
        group="compute",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _opt(
        "auto",
        "autocast mixed precision of student training: auto (bf16 or fp16 on CUDA; fp32 on CPU, where bf16 is "
        "slower without AVX512-BF16/AMX), fp32, bf16, fp16",
        group="compute",
    )
    channels_last: bool = _opt(
        True,
        "channels-last (NHWC) memory format for students (faster convolutions on CPU and GPU)",
        group="compute",
    )
    eval_batch_size: int | None = _opt(
        None,
        "batch size for teacher logits and scoring students (default: 128 on CPUs, where batches whose activations "
        "fit in cache are faster; 1024 on GPUs)",
        group="compute",
    )

    # -- output: what is written besides the run directory
    tensorboard: str | None = _opt(
        None,
        "TensorBoard log directory: the search's scalars (reward/mean, reward/best, policy/entropy, candidate/val_acc, "
        "candidate/params) are written there as it runs (needs `pip install 'n2n[tensorboard]'`)",
        group="output",
    )

    @property
    def measures_latency(self) -> bool:
        """Whether candidates' latency is measured (the latency objective, constraint or target needs it)."""
        return self.objective == "latency" or self.max_latency_ms is not None or self.target_latency_ms is not None

    def constraints(self) -> Constraints:
        """The limits a student must meet (``--max-*``, ``--min-accuracy``) and how they act on the reward."""
        return Constraints(
            self.max_params, self.min_accuracy, self.constraint_mode, self.max_flops, self.max_latency_ms
        )

    def limits_table(self, params: float, acc: float, macs: float, latency_ms: float | None) -> list[dict]:
        """Each constraint and target set, with its limit, the student's value and whether it held (for reports); a
        latency measured elsewhere than in PyTorch eager says where."""
        rows = self.constraints().table(params, acc, macs, latency_ms) + self.target().table(params, macs, latency_ms)
        if self.latency_runtime != "torch":
            for row in rows:
                if row["option"].endswith("-latency-ms"):
                    row["option"] += f" ({self.latency_runtime})"
        return rows

    def finetune_settings(self) -> FinetuneSettings:
        """How the chosen student (and the front) is fine-tuned."""
        return FinetuneSettings(
            epochs=self.finetune_epochs,
            min_steps=self.finetune_min_steps,
            lr=self.finetune_lr,
            schedule=self.finetune_schedule,
            distill=self.finetune_distill,
            temperature=self.temperature,
            kd_weight=self.kd_weight,
            targets=self.finetune_targets,
            batch_size=self.batch_size,
            eval_batch_size=self.eval_batch_size,
            seed=self.seed,
        )

    def target(self) -> Target:
        """The size targets (``--target-*``); ``Target().set`` is False when none is given."""
        return Target(self.target_params, self.target_flops, self.target_latency_ms, self.target_exponent)

    def stage_list(self) -> list[str]:
        return list(STAGES) if self.stages == "both" else [self.stages]

    def compute(self) -> Compute:
        """The concrete device, precision and memory format these settings ask for (raises ConfigError when the
        device is not available)."""
        device = resolve_device(self.device)
        return Compute(device, resolve_precision(self.precision, device), self.channels_last)

    def __post_init__(self) -> None:
        schedule = SCHEDULES["targeted" if self.target().set else "untargeted"]
        for name, value in schedule.items():
            if getattr(self, name) is None:  # unset: the schedule of a run with or without a target
                object.__setattr__(self, name, value)
        self._check()

    def _check(self) -> None:
        """Every check of the values alone (no files, devices or network), run whenever settings are made, so
        that invalid settings cannot exist; raises ConfigError naming the option and what is allowed."""
        for f in fields(self):
            choices = setting_choices(f.name)
            if choices and getattr(self, f.name) not in choices:
                raise ConfigError(
                    f"--{_flag(f.name)} must be one of {', '.join(choices)}; got {getattr(self, f.name)!r}"
                )
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{_flag(f.name)} must be a finite number; got {value}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be an integer in [0, 2**32); got {self.seed}")
        if self.workers < 0:
            raise ConfigError(f"--workers must be >= 0 (0: automatic); got {self.workers}")
        if self.ray_address is not None:
            from n2n.search.ray_eval import check_address

            check_address(self.ray_address)
        positive = (
            "candidate_threads",
            "updates",
            "rollouts",
            "max_draws",
            "shrink_bases",
            "steps",
            "batch_size",
            "candidate_examples",
            "removal_hidden",
            "shrink_hidden",
            "eval_batch_size",
            "max_linear_inputs",
        )
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be a positive integer; got {getattr(self, name)}")
        if not self.max_step_scale >= 1:
            raise ConfigError(f"--max-step-scale must be >= 1 (1: no scaling); got {self.max_step_scale}")
        for name in ("lr", "removal_lr", "shrink_lr", "finetune_lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"--{_flag(name)} must be > 0; got {getattr(self, name)}")
        for name in ("weight_decay", "entropy_coef", "kd_weight", "finetune_epochs", "finetune_min_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{_flag(name)} must be >= 0; got {getattr(self, name)}")
        if not 0 <= self.baseline_decay < 1:
            raise ConfigError(f"--baseline-decay must be in [0, 1); got {self.baseline_decay}")
        if not 0 < self.risk_epsilon <= 1:
            raise ConfigError(f"--risk-epsilon must be in (0, 1]; got {self.risk_epsilon}")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions) or 1.0 not in self.fractions:
            raise ConfigError(f"--fractions must be values in (0, 1] that include 1.0; got {self.fractions}")
        if len(set(self.fractions)) != len(self.fractions) or len(self.fractions) < 2:
            raise ConfigError(
                f"--fractions must be distinct values with at least one below 1.0 to shrink to; got {self.fractions}"
            )
        for name in ("removal_hidden", "shrink_hidden"):
            if getattr(self, name) > MAX_HIDDEN:
                raise ConfigError(f"--{_flag(name)} must be at most {MAX_HIDDEN}; got {getattr(self, name)}")
        if self.max_params is not None and self.max_params < 1:
            raise ConfigError(f"--max-params must be a positive integer; got {self.max_params}")
        if self.max_flops is not None and self.max_flops < 1:
            raise ConfigError(f"--max-flops must be a positive integer; got {self.max_flops}")
        for name in ("target_params", "target_flops"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"--{_flag(name)} must be a positive integer; got {getattr(self, name)}")
        if self.target_latency_ms is not None and not self.target_latency_ms > 0:
            raise ConfigError(f"--target-latency-ms must be > 0; got {self.target_latency_ms}")
        if not self.target_exponent < 0:
            raise ConfigError(
                f"--target-exponent must be < 0 (a cost over the target lowers the reward); got {self.target_exponent}"
            )
        if self.target().set and self.objective != "params":
            raise ConfigError(
                f"--objective {self.objective} and a --target-* both say what to compress: with a target the reward "
                "is accuracy under the target, so drop --objective (use --target-flops or --target-latency-ms)"
            )
        if not 0 < self.removal_share <= 1:
            raise ConfigError(f"--removal-share must be in (0, 1]; got {self.removal_share}")
        if not 1 <= self.front <= MAX_FRONT:
            raise ConfigError(f"--front must be an integer from 1 to {MAX_FRONT}; got {self.front}")
        if not 1 <= self.finalists <= MAX_FRONT:
            raise ConfigError(f"--finalists must be an integer from 1 to {MAX_FRONT}; got {self.finalists}")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            raise ConfigError(f"--max-latency-ms must be > 0; got {self.max_latency_ms}")
        if self.latency_runtime != "torch" and not self.measures_latency:
            raise ConfigError(
                f"--latency-runtime {self.latency_runtime} says where latency is measured, and nothing measures it: "
                "add --target-latency-ms, --max-latency-ms or --objective latency (or drop --latency-runtime)"
            )
        if self.min_accuracy is not None and not 0 < self.min_accuracy <= 1:
            raise ConfigError(f"--min-accuracy must be a fraction in (0, 1]; got {self.min_accuracy}")
        if self.candidate_epochs is not None and not self.candidate_epochs > 0:
            raise ConfigError(f"--candidate-epochs must be > 0; got {self.candidate_epochs}")
        if self.init_policy is not None and self.search == "random":
            raise ConfigError("--init-policy starts a learned search; it cannot be combined with --search random")

    def validate(self) -> CompressConfig:
        """The checks that need the outside world, run once at the edge (the command line, `compress`): the device
        is there, the Ray cluster answers, the TensorBoard directory is writable and the package installed (onnx
        and onnxruntime for --latency-runtime onnxruntime), the policies of --init-policy are readable. Returns these
        settings; raises ConfigError."""
        self.compute()
        if self.ray_address is not None:
            from n2n.search.ray_eval import import_ray, probe_address

            import_ray()
            probe_address(self.ray_address)
        if self.tensorboard is not None:
            check_writable_dir(self.tensorboard, "--tensorboard")
        if self.tensorboard is not None and importlib.util.find_spec("tensorboard") is None:
            raise ConfigError(
                "--tensorboard needs the tensorboard package: pip install 'n2n[tensorboard]' (or drop --tensorboard)"
            )
        from n2n.measure import onnxruntime_available

        if self.latency_runtime == "onnxruntime" and self.measures_latency and not onnxruntime_available():
            raise ConfigError(
                "--latency-runtime onnxruntime times each candidate's ONNX export, and onnx or onnxruntime is not "
                "installed: `pip install 'n2n[export]'` (or drop --latency-runtime to time PyTorch eager)"
            )
        if self.init_policy is not None:
            found = [n for n in ("policy_remove.json", "policy_shrink.json") if (Path(self.init_policy) / n).is_file()]
            if not found:
                raise ConfigError(
                    f"--init-policy {self.init_policy!r} holds no trained policy (policy_remove.json or "
                    "policy_shrink.json): pass the run directory of an earlier `n2n compress`"
                )
            from n2n.search.policy_io import read_policy_record

            for name in found:
                path = Path(self.init_policy) / name
                read_policy_record(path, name[len("policy_") : -len(".json")])
                check_safetensors(path.with_suffix(".safetensors"), "--init-policy")
        return self

    @classmethod
    def preset(cls, protocol: str, **overrides: Any) -> CompressConfig:
        """The settings of ``protocol`` ("n2n" or "paper") with ``overrides`` on top."""
        base = dict(PAPER_PROTOCOL) if protocol == "paper" else {}
        return cls(**{**base, "protocol": protocol, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: the groups of settings, in the order `n2n compress --help` and the README show them
GROUPS = ("search", "policy", "candidates", "size", "constraints", "fine-tune", "compute", "output")


def settings_by_group() -> dict[str, list[str]]:
    """Each group's settings, in declaration order."""
    grouped: dict[str, list[str]] = {group: [] for group in GROUPS}
    for f in fields(CompressConfig):
        grouped[f.metadata["group"]].append(f.name)
    return grouped


def setting_choices(name: str) -> tuple[str, ...] | None:
    """The values setting ``name`` allows, from its ``Literal`` type (None for a setting without choices)."""
    hint = _hints()[name]
    return get_args(hint) if get_origin(hint) is Literal else None


@functools.cache
def _hints() -> dict[str, Any]:
    return get_type_hints(CompressConfig)


def _flag(name: str) -> str:
    return name.replace("_", "-")
