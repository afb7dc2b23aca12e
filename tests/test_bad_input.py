"""Bad input to any command ends with one line naming the problem, exit code 2 and no traceback."""

import gzip
import json
import pickle

import numpy as np
import pytest
import torch
from conftest import write_tiny_mnist
from PIL import Image

from n2n.cli import main
from n2n.data import write_idx


class Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    assert (
        main(
            [
                "train-teacher",
                "--arch",
                "lenet5",
                "--width",
                "0.25",
                "--data",
                "digits",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def _bad_labels(d):
    write_tiny_mnist(d)
    write_idx(d / "train-labels-idx1-ubyte.gz", (np.arange(200) % 12).astype(np.uint8))  # 12 classes > 10
    return d


def _truncated(d):
    write_tiny_mnist(d)
    path = d / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    return d


def _bad_magic(d):
    write_tiny_mnist(d)
    (d / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x12\x34\x08\x01" + bytes(60)))
    return d


def _mismatch(d):
    write_tiny_mnist(d, n_train=200)
    write_idx(d / "train-labels-idx1-ubyte.gz", (np.arange(150) % 10).astype(np.uint8))
    return d


def _missing(d):
    write_tiny_mnist(d)
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    return d


def _yaml(text):
    def make(d):
        d.mkdir(parents=True)
        (d / "c.yaml").write_text(text)
        return d / "c.yaml"

    return make


def _evil_weights(d):
    d.mkdir(parents=True)
    torch.save({"w": torch.zeros(1), "x": Evil(d / "pwned")}, d / "evil.pt")
    return d / "evil.pt"


def _not_a_tensor_file(d):
    d.mkdir(parents=True)
    (d / "w.safetensors").write_bytes(b"garbage, not safetensors")
    return d / "w.safetensors"


def _a_file(d):
    d.mkdir(parents=True)
    (d / "f").write_text("x")
    return d / "f"


def _empty_dir(d):
    d.mkdir(parents=True)
    return d


def _evil_cifar(d):
    d.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (d / name).write_bytes(pickle.dumps({b"data": Evil(d / "pwned"), b"labels": [0]}))
    return d


def _garbage_svhn(d):
    d.mkdir(parents=True)
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (d / name).write_bytes(b"MATLAB? no" * 20)
    return d


def _one_class_folder(d):
    (d / "cats").mkdir(parents=True)
    Image.new("RGB", (9, 9)).save(d / "cats" / "a.png")
    return d


def _evil_npz(d):
    d.mkdir(parents=True)
    np.savez(d / "evil.npz", x=np.array([Evil(d / "pwned")], dtype=object), y=np.array([0]))
    return d / "evil.npz"


def _foreign_policy(d):
    d.mkdir(parents=True)
    (d / "policy_remove.json").write_text(
        json.dumps({"kind": "remove", "feature_dim": 13, "hidden": 30, "version": 1, "features": ["a"] * 13})
    )
    return d


# (id, argv template, expected message). {T}: a trained teacher, {X}: the path the setup function returns.
CASES = [
    ("unknown-arch", ["train-teacher", "--arch", "alexnet", "--out", "o"], None, "--arch must be one of"),
    (
        "mnist-without-dir",
        ["train-teacher", "--arch", "vgg11", "--data", "mnist", "--out", "o"],
        None,
        "needs --data-dir",
    ),
    (
        "data-dir-missing",
        ["train-teacher", "--arch", "vgg11", "--data", "mnist", "--data-dir", "/nonexistent", "--out", "o"],
        None,
        "not a directory",
    ),
    ("unknown-data", ["train-teacher", "--arch", "vgg11", "--data", "cifar", "--out", "o"], None, "unknown data set"),
    ("zero-epochs", ["train-teacher", "--arch", "vgg11", "--epochs", "0", "--out", "o"], None, "--epochs"),
    ("negative-width", ["train-teacher", "--arch", "vgg11", "--width", "-1", "--out", "o"], None, "--width"),
    (
        "labels-out-of-range",
        ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"],
        _bad_labels,
        "labels must be in [0, 10)",
    ),
    (
        "truncated-idx",
        ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"],
        _truncated,
        "truncated",
    ),
    (
        "bad-magic",
        ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"],
        _bad_magic,
        "not an IDX file",
    ),
    (
        "images-vs-labels",
        ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"],
        _mismatch,
        "200 images but 150 labels",
    ),
    (
        "missing-idx-file",
        ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"],
        _missing,
        "lacks t10k-images-idx3-ubyte",
    ),
    (
        "cifar-batches-missing",
        ["train-teacher", "--arch", "lenet5", "--data", "cifar10", "--data-dir", "{X}", "--out", "o"],
        _empty_dir,
        "lacks data_batch_1, data_batch_2",
    ),
    (
        "cifar-malicious-pickle",
        ["train-teacher", "--arch", "lenet5", "--data", "cifar10", "--data-dir", "{X}", "--out", "o"],
        _evil_cifar,
        "open is not allowed (only numpy arrays are)",
    ),
    (
        "svhn-not-matlab",
        ["train-teacher", "--arch", "lenet5", "--data", "svhn", "--data-dir", "{X}", "--out", "o"],
        _garbage_svhn,
        "as a MATLAB v5 file",
    ),
    (
        "caltech-wrong-layout",
        ["train-teacher", "--arch", "lenet5", "--data", "caltech256", "--data-dir", "{X}", "--out", "o"],
        _empty_dir,
        "class folders 001.ak47 ... 256.toad",
    ),
    (
        "imagefolder-one-class",
        ["train-teacher", "--arch", "lenet5", "--data", "imagefolder", "--data-dir", "{X}", "--out", "o"],
        _one_class_folder,
        "has 1 class folder(s)",
    ),
    (
        "image-size-too-small",
        ["train-teacher", "--arch", "lenet5", "--data", "imagefolder", "--image-size", "4", "--out", "o"],
        None,
        "--image-size must be an integer >= 8",
    ),
    (
        "image-size-for-cifar",
        ["train-teacher", "--arch", "lenet5", "--data", "cifar10", "--image-size", "32", "--out", "o"],
        None,
        "cifar10 does not take --image-size",
    ),
    (
        "npz-object-array",
        ["train-teacher", "--arch", "lenet5", "--data", "npz", "--data-dir", "{X}", "--out", "o"],
        _evil_npz,
        "Object arrays cannot be loaded",
    ),
    (
        "augment-choice",
        ["train-teacher", "--arch", "lenet5", "--augment", "rotate", "--out", "o"],
        None,
        "invalid choice: 'rotate'",
    ),
    (
        "recipe-paper-for-digits",
        ["train-teacher", "--arch", "lenet5", "--recipe", "paper", "--out", "o"],
        None,
        "--recipe paper has schedules for",
    ),
    (
        "teacher-device-unknown",
        ["train-teacher", "--arch", "lenet5", "--device", "tpu", "--out", "o"],
        None,
        "invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda', 'mps')",
    ),
    (
        "teacher-device-unavailable",
        ["train-teacher", "--arch", "lenet5", "--device", "mps", "--out", "o"],
        None,
        "no MPS device is available",
    ),
    (
        "max-train-zero",
        ["train-teacher", "--arch", "lenet5", "--max-train", "0", "--out", "o"],
        None,
        "max_train must be a positive",
    ),
    ("teacher-missing", ["compress", "--teacher", "nowhere", "--out", "o"], None, "neither a saved n2n model"),
    ("teacher-dir-without-spec", ["compress", "--teacher", "{X}", "--out", "o"], _empty_dir, "not a saved n2n model"),
    ("out-is-a-file", ["compress", "--teacher", "{T}", "--out", "{X}"], _a_file, "is a file; give a directory"),
    (
        "random-search-with-init-policy",
        ["compress", "--teacher", "{T}", "--out", "o", "--search", "random", "--init-policy", "{X}"],
        _empty_dir,
        "cannot be combined with --search random",
    ),
    (
        "workers-negative",
        ["compress", "--teacher", "{T}", "--out", "o", "--workers", "-1"],
        None,
        "--workers must be >= 0",
    ),
    ("device-unknown", ["compress", "--teacher", "{T}", "--out", "o", "--device", "tpu"], None, "invalid choice"),
    (
        "device-unavailable",
        ["compress", "--teacher", "{T}", "--out", "o", "--device", "mps"],
        None,
        "no MPS device is available",
    ),
    ("precision-unknown", ["compress", "--teacher", "{T}", "--out", "o", "--precision", "fp8"], None, "invalid choice"),
    (
        "ray-address-malformed",
        ["compress", "--teacher", "{T}", "--out", "o", "--ray-address", "head-node"],
        None,
        "--ray-address must be auto, HOST:PORT",
    ),
    ("no-teacher", ["compress", "--out", "o"], None, "needs --teacher and --out"),
    (
        "updates-zero",
        ["compress", "--teacher", "{T}", "--out", "o", "--updates", "0"],
        None,
        "--updates must be a positive integer",
    ),
    ("fraction-above-one", ["compress", "--teacher", "{T}", "--out", "o", "--fractions", "0.5,2"], None, "--fractions"),
    (
        "fractions-without-one",
        ["compress", "--teacher", "{T}", "--out", "o", "--fractions", "0.25,0.5"],
        None,
        "include 1.0",
    ),
    (
        "fractions-not-numbers",
        ["compress", "--teacher", "{T}", "--out", "o", "--fractions", "a,b"],
        None,
        "comma-separated numbers",
    ),
    ("stage-choice", ["compress", "--teacher", "{T}", "--out", "o", "--stages", "all"], None, "invalid choice"),
    ("updates-not-int", ["compress", "--teacher", "{T}", "--out", "o", "--updates", "many"], None, "invalid int value"),
    ("negative-lr", ["compress", "--teacher", "{T}", "--out", "o", "--lr", "-0.1"], None, "--lr must be > 0"),
    (
        "baseline-decay-one",
        ["compress", "--teacher", "{T}", "--out", "o", "--baseline-decay", "1"],
        None,
        "--baseline-decay must be in [0, 1)",
    ),
    (
        "risk-epsilon-above-one",
        ["compress", "--teacher", "{T}", "--out", "o", "--risk-epsilon", "1.5"],
        None,
        "--risk-epsilon must be in (0, 1]",
    ),
    (
        "min-accuracy-percent",
        ["compress", "--teacher", "{T}", "--out", "o", "--min-accuracy", "95"],
        None,
        "--min-accuracy must be a fraction",
    ),
    (
        "max-params-zero",
        ["compress", "--teacher", "{T}", "--out", "o", "--max-params", "0"],
        None,
        "--max-params must be a positive",
    ),
    (
        "target-params-zero",
        ["compress", "--teacher", "{T}", "--out", "o", "--target-params", "0"],
        None,
        "--target-params must be a positive",
    ),
    (
        "target-latency-negative",
        ["compress", "--teacher", "{T}", "--out", "o", "--target-latency-ms", "-1"],
        None,
        "--target-latency-ms must be > 0",
    ),
    (
        "latency-runtime-without-latency",
        ["compress", "--teacher", "{T}", "--out", "o", "--latency-runtime", "onnxruntime"],
        None,
        "--latency-runtime onnxruntime says where latency is measured, and nothing measures it",
    ),
    (
        "target-exponent-positive",
        ["compress", "--teacher", "{T}", "--out", "o", "--target-params", "9", "--target-exponent", "0.5"],
        None,
        "--target-exponent must be < 0",
    ),
    (
        "target-with-objective",
        ["compress", "--teacher", "{T}", "--out", "o", "--target-params", "900", "--objective", "flops"],
        None,
        "drop --objective",
    ),
    (
        "front-zero",
        ["compress", "--teacher", "{T}", "--out", "o", "--front", "0"],
        None,
        "--front must be an integer from 1 to 16",
    ),
    (
        "init-policy-missing",
        ["compress", "--teacher", "{T}", "--out", "o", "--init-policy", "{X}"],
        _empty_dir,
        "holds no trained policy",
    ),
    (
        "wrong-input-shape",
        ["compress", "--teacher", "{T}", "--out", "o", "--data", "mnist", "--data-dir", "{X}"],
        write_tiny_mnist,
        "pass the data set the teacher was trained on",
    ),
    (
        "config-missing",
        ["compress", "--teacher", "{T}", "--out", "o", "--config", "nowhere.yaml"],
        None,
        "--config nowhere.yaml",
    ),
    (
        "config-unknown-key",
        ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"],
        _yaml("updatez: 3\n"),
        "unknown setting 'updatez'",
    ),
    (
        "config-wrong-type",
        ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"],
        _yaml("updates: lots\n"),
        "updates must be int",
    ),
    (
        "config-not-yaml",
        ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"],
        _yaml("updates: [1,\n"),
        "not valid YAML",
    ),
    (
        "config-not-mapping",
        ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"],
        _yaml("- 1\n- 2\n"),
        "must map setting names",
    ),
    (
        "config-bad-value",
        ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"],
        _yaml("rollouts: -2\n"),
        "--rollouts must be a positive",
    ),
    (
        "zoo-teacher-without-weights",
        ["compress", "--teacher", "vgg11", "--out", "o"],
        None,
        "pass its trained weights with --weights",
    ),
    (
        "import-path-unknown-module",
        ["compress", "--teacher", "no_such_pkg_q:net", "--out", "o"],
        None,
        "cannot import 'no_such_pkg_q'",
    ),
    (
        "teacher-kwargs-not-json",
        ["compress", "--teacher", "vgg11", "--teacher-kwargs", "{width: 1}", "--out", "o"],
        None,
        "must be a JSON object",
    ),
    (
        "malicious-pickle",
        ["compress", "--teacher", "lenet5", "--weights", "{X}", "--out", "o"],
        _evil_weights,
        "--trust-pickle",
    ),
    (
        "weights-not-safetensors",
        ["compress", "--teacher", "lenet5", "--weights", "{X}", "--out", "o"],
        _not_a_tensor_file,
        "not a readable safetensors file",
    ),
    ("resume-not-a-run", ["compress", "--resume", "{X}"], _empty_dir, "not an n2n run directory"),
    ("resume-with-options", ["compress", "--resume", "{X}", "--updates", "3"], _empty_dir, "drop --updates"),
    ("inspect-without-shape", ["inspect", "--teacher", "vgg11"], None, "--input-shape C,H,W is needed"),
    (
        "inspect-bad-shape",
        ["inspect", "--teacher", "vgg11", "--input-shape", "3x32x32"],
        None,
        "--input-shape must be integers",
    ),
    (
        "inspect-shape-mismatch",
        ["inspect", "--teacher", "{T}", "--input-shape", "3,32,32"],
        None,
        "takes inputs of shape (1, 8, 8)",
    ),
    (
        "inspect-model-fails-on-shape",
        ["inspect", "--teacher", "no_such_pkg_q:net", "--input-shape", "1,8,8"],
        None,
        "cannot import",
    ),
    ("evaluate-missing", ["evaluate", "nowhere"], None, "not a saved n2n model"),
    (
        "evaluate-wrong-data",
        ["evaluate", "{T}", "--data", "mnist", "--data-dir", "{X}"],
        write_tiny_mnist,
        "takes inputs of shape",
    ),
    (
        "baseline-uniform-without-target",
        ["baseline", "uniform", "--teacher", "{T}", "--out", "o"],
        None,
        "needs --teacher and --target-params",
    ),
    (
        "baseline-uniform-impossible-target",
        ["baseline", "uniform", "--teacher", "{T}", "--target-params", "1", "--out", "o"],
        None,
        "no uniform keep-fraction brings the teacher",
    ),
    (
        "baseline-scratch-not-a-run",
        ["baseline", "scratch", "--run", "{X}", "--out", "o"],
        _empty_dir,
        "is not a finished n2n run",
    ),
    ("report-not-a-run", ["report", "{X}"], _empty_dir, "not an n2n run directory"),
    ("export-unknown-format", ["export", "{T}", "--format", "tflite"], None, "invalid choice"),
    ("export-missing", ["export", "nowhere", "--format", "onnx"], None, "not a saved n2n model"),
    ("export-atol-zero", ["export", "{T}", "--format", "torchscript", "--atol", "0"], None, "--atol must be > 0"),
    (
        "export-wrong-data",
        ["export", "{T}", "--format", "onnx", "--data", "mnist", "--data-dir", "{X}"],
        write_tiny_mnist,
        "pass the data set the model was trained on",
    ),
    ("evaluate-teacher-missing", ["evaluate", "{T}", "--teacher", "nowhere"], None, "not a saved n2n model"),
    (
        "objective-choice",
        ["compress", "--teacher", "{T}", "--out", "o", "--objective", "speed"],
        None,
        "invalid choice",
    ),
    (
        "max-flops-zero",
        ["compress", "--teacher", "{T}", "--out", "o", "--max-flops", "0"],
        None,
        "--max-flops must be a positive",
    ),
    (
        "max-latency-negative",
        ["compress", "--teacher", "{T}", "--out", "o", "--max-latency-ms", "-1"],
        None,
        "--max-latency-ms must be > 0",
    ),
    (
        "init-policy-other-features",
        ["compress", "--teacher", "{T}", "--out", "o", "--init-policy", "{X}"],
        _foreign_policy,
        "train the policy again",
    ),
    ("report-compare-not-a-run", ["report", "{T}", "{X}"], _empty_dir, "not an n2n run directory"),
    ("report-out-with-one-run", ["report", "{X}", "--out", "o"], _empty_dir, "--out is for comparing several runs"),
]


# ---------------------------------------------------------------- files someone hands over, and more bad values
def _saved_model(d, mutate=None, name="m"):
    """A saved lenet5 digits model in d/name, its spec.json changed by ``mutate(dict)`` (returns the directory)."""
    from n2n.models.io import ModelSpec, save_model
    from n2n.models.zoo import create_model

    kwargs = {"in_channels": 1, "num_classes": 10, "input_size": [8, 8], "width": 0.25}
    spec = ModelSpec({"source": "zoo", "name": "lenet5", "kwargs": kwargs}, (1, 8, 8), 10)
    out = save_model(create_model("lenet5", **kwargs), spec, d / name)
    if mutate is not None:
        data = json.loads((out / "spec.json").read_text())
        data = mutate(data)
        (out / "spec.json").write_text(data if isinstance(data, str) else json.dumps(data))
    return out


def _spec(mutate):
    return lambda d: _saved_model(d, mutate)


def _set(path, value):
    def mutate(data):
        target = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return data

    return mutate


def _evil_arch(d):
    """A spec whose architecture 'builder' is os.system: loading it must not run the command."""
    return {"source": "import", "target": "os:system", "kwargs": {"command": f"touch {d}/pwned"}}


def _evil_model(d):
    return _saved_model(d, lambda data: {**data, "arch": _evil_arch(d)})


def _evil_run(d, finished=True):
    """A run directory whose teacher (and student) name os.system as their builder."""
    run = d / "run"
    for name in ("teacher", "student"):
        _saved_model(run, lambda data: {**data, "arch": _evil_arch(d)}, name)
    (run / "run.json").write_text(
        json.dumps({"teacher": "x", "data": "digits", "data_dir": None, "max_train": None, "data_options": {}})
    )
    (run / "config.json").write_text("{}")
    (run / "events.jsonl").write_text(json.dumps({"event": "done", "wall_time_s": 1.0}) + "\n" if finished else "")
    return run


def _run_with(files, student=False):
    """A run directory (zoo teacher, and student when ``student``) whose files are overridden by ``files``."""

    def make(d):
        run = d / "run"
        for name in ("teacher", "student") if student else ("teacher",):
            _saved_model(run, None, name)
        (run / "run.json").write_text(
            json.dumps({"teacher": "t", "data": "digits", "data_dir": None, "max_train": None, "data_options": {}})
        )
        (run / "config.json").write_text("{}")
        (run / "events.jsonl").write_text("")
        for name, text in files.items():
            (run / name).write_bytes(text if isinstance(text, bytes) else text.encode())
        return run

    return make


def _corrupt_gzip(d):
    write_tiny_mnist(d)
    path = d / "train-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 40] = bytes(40)  # a damaged deflate stream, header intact
    path.write_bytes(bytes(data))
    return d


def _npz(x, y, **more):
    def make(d):
        d.mkdir(parents=True)
        np.savez(d / "data.npz", x=x, y=y, **more)
        return d / "data.npz"

    return make


def _policy(record, tensors=True, truncate=False):
    def make(d):
        from safetensors.torch import save_file

        from n2n.search.policies import RemovalPolicy
        from n2n.search.policy_io import policy_record

        d.mkdir(parents=True)
        policy = RemovalPolicy()
        full = {**policy_record(policy.config()), **record} if isinstance(record, dict) else record
        (d / "policy_remove.json").write_text(full if isinstance(full, str) else json.dumps(full))
        if tensors:
            save_file(policy.state_dict(), str(d / "policy_remove.safetensors"))
            if truncate:
                path = d / "policy_remove.safetensors"
                path.write_bytes(path.read_bytes()[:-200])
        return d

    return make


def _under_a_file(d):
    d.mkdir(parents=True)
    (d / "f").write_text("x")
    return d / "f" / "out"


def _untrained_teacher(d):  # random weights: about 10% on digits, with the normalization saved models record
    return _saved_model(d, _set(["normalization"], {"mean": [0.3], "std": [0.4]}))


def _latin1_yaml(d):
    d.mkdir(parents=True)
    (d / "c.yaml").write_bytes("updates: 3 # é\n".encode("latin-1"))
    return d / "c.yaml"


def _damaged_checkpoint(d):
    run = _run_with({"checkpoint.safetensors": b"\x00" * 64})(d)
    return run


C = ["compress", "--teacher", "{T}", "--out", "o"]
TT = ["train-teacher", "--arch", "lenet5", "--out", "o"]
NPZ = ["train-teacher", "--arch", "lenet5", "--data", "npz", "--data-dir", "{X}", "--out", "o"]
RGB = np.zeros((20, 8, 8, 3), np.uint8)
CASES += [
    # saved models and runs name code: refused without --trust-code, nothing runs
    ("untrusted-evaluate", ["evaluate", "{X}"], _evil_model, "('os:system'); pass --trust-code"),
    ("untrusted-export", ["export", "{X}", "--format", "onnx"], _evil_model, "pass --trust-code"),
    ("untrusted-inspect", ["inspect", "--teacher", "{X}"], _evil_model, "pass --trust-code"),
    ("untrusted-compress-teacher", ["compress", "--teacher", "{X}", "--out", "o"], _evil_model, "pass --trust-code"),
    ("untrusted-resume", ["compress", "--resume", "{X}"], lambda d: _evil_run(d, finished=False), "pass --trust-code"),
    ("untrusted-report", ["report", "{X}"], _evil_run, "pass --trust-code"),
    (
        "untrusted-baseline-scratch",
        ["baseline", "scratch", "--run", "{X}", "--out", "o"],
        _evil_run,
        "pass --trust-code",
    ),
    (
        "untrusted-baseline-uniform",
        ["baseline", "uniform", "--teacher", "{X}", "--target-params", "100", "--out", "o"],
        _evil_model,
        "pass --trust-code",
    ),
    (
        "untrusted-runpy",
        ["evaluate", "{X}"],
        _spec(_set(["arch"], {"source": "import", "target": "runpy:run_path", "kwargs": {"path_name": "x.py"}})),
        "'runpy:run_path'",
    ),
    # spec.json of the wrong shape
    ("spec-is-a-list", ["evaluate", "{X}"], _spec(lambda data: [data]), "is a JSON list"),
    ("spec-not-json", ["evaluate", "{X}"], _spec(lambda data: "{not json"), "not a readable JSON model spec"),
    (
        "spec-kwargs-unknown",
        ["evaluate", "{X}"],
        _spec(_set(["arch", "kwargs", "depth"], 3)),
        "takes no argument 'depth'",
    ),
    (
        "spec-kwargs-not-mapping",
        ["evaluate", "{X}"],
        _spec(_set(["arch", "kwargs"], "wide")),
        "arch.kwargs must be an object",
    ),
    (
        "spec-kwargs-wrong-type",
        ["evaluate", "{X}"],
        _spec(_set(["arch", "kwargs", "width"], "wide")),
        "width of zoo model",
    ),
    (
        "spec-kwargs-huge",
        ["evaluate", "{X}"],
        _spec(_set(["arch", "kwargs", "width"], 1000.0)),
        "must be a number in (0, 64]",
    ),
    ("spec-edits-string", ["evaluate", "{X}"], _spec(_set(["edits"], "features.0")), "edits must be an object"),
    (
        "spec-edits-keep-above-one",
        ["evaluate", "{X}"],
        _spec(_set(["edits"], {"removed": [], "keep": [["features.0", 3]]})),
        "fraction in (0, 1]",
    ),
    (
        "spec-edits-removed-numbers",
        ["evaluate", "{X}"],
        _spec(_set(["edits", "removed"], [1, 2])),
        "edits.removed must be a list",
    ),
    (
        "spec-arch-source",
        ["evaluate", "{X}"],
        _spec(_set(["arch", "source"], "pickle")),
        "arch.source must be 'zoo' or 'import'",
    ),
    (
        "spec-arch-unknown-zoo",
        ["evaluate", "{X}"],
        _spec(_set(["arch", "name"], "alexnet")),
        "is not a zoo architecture",
    ),
    ("spec-arch-not-object", ["evaluate", "{X}"], _spec(_set(["arch"], "lenet5")), "arch must be an object"),
    (
        "spec-input-shape-huge",
        ["evaluate", "{X}"],
        _spec(_set(["input_shape"], [3, 100000, 100000])),
        "values per sample",
    ),
    (
        "spec-input-shape-negative",
        ["evaluate", "{X}"],
        _spec(_set(["input_shape"], [1, -8, 8])),
        "input_shape must be a list",
    ),
    ("spec-num-classes", ["evaluate", "{X}"], _spec(_set(["num_classes"], -3)), "num_classes must be an integer"),
    (
        "spec-normalization-length",
        ["evaluate", "{X}"],
        _spec(_set(["normalization"], {"mean": [0, 0], "std": [1, 1]})),
        "normalization.mean must be 1 finite",
    ),
    (
        "spec-normalization-zero-std",
        ["evaluate", "{X}"],
        _spec(_set(["normalization"], {"mean": [0], "std": [0]})),
        "normalization.std must be positive",
    ),
    ("spec-version-string", ["evaluate", "{X}"], _spec(_set(["version"], "one")), "not a non-negative integer"),
    ("spec-version-newer", ["evaluate", "{X}"], _spec(_set(["version"], 99)), "upgrade n2n"),
    ("spec-protected", ["evaluate", "{X}"], _spec(_set(["protected"], "classifier")), "protected must be a list"),
    ("spec-meta", ["evaluate", "{X}"], _spec(_set(["meta"], [1])), "meta must be an object"),
    ("spec-format", ["evaluate", "{X}"], _spec(_set(["format"], "keras")), "is not an n2n model spec"),
    # run directories
    (
        "run-config-a-list",
        ["compress", "--resume", "{X}"],
        _run_with({"config.json": "[1, 2]"}),
        "must hold a JSON object",
    ),
    (
        "run-config-not-json",
        ["compress", "--resume", "{X}"],
        _run_with({"config.json": "{"}),
        "not a readable JSON settings file",
    ),
    (
        "run-json-unknown-data",
        ["compress", "--resume", "{X}"],
        _run_with({"run.json": '{"data": "imagenet"}'}),
        "data = 'imagenet' is not valid",
    ),
    ("run-json-a-number", ["compress", "--resume", "{X}"], _run_with({"run.json": "3"}), "must hold a JSON object"),
    (
        "run-tensorboard-outside",
        ["compress", "--resume", "{X}"],
        _run_with({"config.json": '{"tensorboard": "/tmp/elsewhere"}'}),
        "outside the run directory",
    ),
    (
        "run-config-bad-value",
        ["compress", "--resume", "{X}"],
        _run_with({"config.json": '{"updates": "many"}'}),
        "updates must be int",
    ),
    ("resume-nothing-to-resume", ["compress", "--resume", "{X}"], _run_with({}), "has no search to resume"),
    ("resume-damaged-checkpoint", ["compress", "--resume", "{X}"], _damaged_checkpoint, "cannot read the checkpoint"),
    ("resume-with-overwrite", ["compress", "--resume", "{X}", "--overwrite"], _empty_dir, "drop --overwrite"),
    (
        "report-bad-run-json",
        ["report", "{X}"],
        _run_with({"run.json": "[]", "events.jsonl": '{"event": "done", "wall_time_s": 1}\n'}, student=True),
        "must hold a JSON object",
    ),
    (
        "report-bad-config-json",
        ["report", "{X}"],
        _run_with(
            {"config.json": '{"seed": "zero"}', "events.jsonl": '{"event": "done", "wall_time_s": 1}\n'}, student=True
        ),
        "seed must be int",
    ),
    # data files
    (
        "idx-corrupt-gzip",
        ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"],
        _corrupt_gzip,
        "damaged or not gzip",
    ),
    ("npz-sparse-labels", NPZ, _npz(RGB, np.array(list(range(9)) * 2 + [20000, 0])), "have no training example"),
    ("npz-float-labels", NPZ, _npz(RGB, np.linspace(0, 1, 20)), "integer class labels"),
    ("npz-5d-images", NPZ, _npz(np.zeros((20, 1, 1, 8, 8)), np.arange(20) % 2), "(N, H, W) or (N, C, H, W)"),
    ("npz-one-class", NPZ, _npz(RGB, np.zeros(20, np.int64)), "a classifier needs 2 or more"),
    ("npz-nan-images", NPZ, _npz(np.full((20, 8, 8), np.nan, np.float32), np.arange(20) % 2), "NaN or infinite"),
    (
        "npz-not-a-zip",
        NPZ,
        lambda d: (d.mkdir(parents=True), (d / "x.npz").write_bytes(b"PK garbage"))[0] or d / "x.npz",
        "npz: cannot read",
    ),
    # settings files
    ("yaml-updates-null", C + ["--config", "{X}"], _yaml("updates: ~\n"), "updates needs a value"),
    ("yaml-lr-null", C + ["--config", "{X}"], _yaml("lr: ~\n"), "lr needs a value"),
    ("yaml-not-utf8", C + ["--config", "{X}"], _latin1_yaml, "is not UTF-8 text"),
    ("yaml-seed-negative", C + ["--config", "{X}"], _yaml("seed: -5\n"), "--seed must be an integer in [0, 2**32)"),
    ("yaml-updates-bool", C + ["--config", "{X}"], _yaml("updates: true\n"), "updates must be int"),
    ("yaml-updates-mapping", C + ["--config", "{X}"], _yaml("updates: {a: 1}\n"), "updates must be int"),
    ("yaml-lr-nan", C + ["--config", "{X}"], _yaml("lr: .nan\n"), "--lr must be a finite number"),
    (
        "yaml-fractions-words",
        C + ["--config", "{X}"],
        _yaml("fractions: [a, b]\n"),
        "fractions must be a list of float",
    ),
    # command-line values
    ("seed-negative", C + ["--seed", "-1"], None, "--seed must be an integer in [0, 2**32)"),
    ("seed-too-large", C + ["--seed", str(2**32)], None, "--seed must be an integer in [0, 2**32)"),
    ("teacher-seed-negative", TT + ["--seed", "-1"], None, "--seed must be an integer in [0, 2**32)"),
    ("entropy-coef-nan", C + ["--entropy-coef", "nan"], None, "--entropy-coef must be a finite number"),
    ("weight-decay-nan", C + ["--weight-decay", "nan"], None, "--weight-decay must be a finite number"),
    ("candidate-epochs-inf", C + ["--candidate-epochs", "inf"], None, "--candidate-epochs must be a finite number"),
    ("kd-weight-nan", C + ["--kd-weight", "nan"], None, "--kd-weight must be a finite number"),
    ("temperature-nan", C + ["--temperature", "nan"], None, "--temperature must be a finite number"),
    ("lr-inf", C + ["--lr", "inf"], None, "--lr must be a finite number"),
    ("max-step-scale-inf", C + ["--max-step-scale", "inf"], None, "--max-step-scale must be a finite number"),
    ("min-accuracy-nan", C + ["--min-accuracy", "nan"], None, "--min-accuracy must be a finite number"),
    ("max-latency-nan", C + ["--max-latency-ms", "nan"], None, "--max-latency-ms must be a finite number"),
    ("fractions-all-one", C + ["--fractions", "1,1,1"], None, "distinct values with at least one below 1.0"),
    ("fractions-only-one", C + ["--fractions", "1"], None, "distinct values with at least one below 1.0"),
    ("steps-zero", C + ["--steps", "0"], None, "--steps must be a positive integer"),
    ("batch-size-zero", C + ["--batch-size", "0"], None, "--batch-size must be a positive integer"),
    ("removal-hidden-huge", C + ["--removal-hidden", "200000"], None, "--removal-hidden must be at most 4096"),
    ("temperature-zero", C + ["--temperature", "0"], None, "--temperature must be > 0"),
    ("fix-matches-nothing", C + ["--fix", "nope*"], None, "--fix 'nope*' matches none of the teacher's layers"),
    (
        "inspect-fix-matches-nothing",
        ["inspect", "--teacher", "{T}", "--fix", "nope*"],
        None,
        "--fix 'nope*' matches none",
    ),
    ("teacher-at-chance", ["compress", "--teacher", "{X}", "--out", "o"], _untrained_teacher, "near chance"),
    (
        "teacher-kwargs-unknown-key",
        ["inspect", "--teacher", "vgg11", "--input-shape", "1,8,8", "--teacher-kwargs", '{"depth": 3}'],
        None,
        "takes no argument 'depth'",
    ),
    (
        "teacher-kwargs-wrong-type",
        ["inspect", "--teacher", "vgg11", "--input-shape", "1,8,8", "--teacher-kwargs", '{"width": "wide"}'],
        None,
        "width of zoo model",
    ),
    (
        "teacher-kwargs-a-list",
        ["inspect", "--teacher", "vgg11", "--input-shape", "1,8,8", "--teacher-kwargs", "[1]"],
        None,
        "must be a JSON object",
    ),
    (
        "teacher-kwargs-too-big",
        ["inspect", "--teacher", "vgg19", "--input-shape", "3,32,32", "--teacher-kwargs", '{"width": 60}'],
        None,
        "parameters (limit",
    ),
    (
        "init-policy-truncated",
        C + ["--init-policy", "{X}"],
        _policy({}, truncate=True),
        "is not a readable safetensors file",
    ),
    (
        "init-policy-huge-hidden",
        C + ["--init-policy", "{X}"],
        _policy({"hidden": 200000}),
        "hidden = 200000, outside [1, 4096]",
    ),
    ("init-policy-a-list", C + ["--init-policy", "{X}"], _policy([1, 2]), "must hold a JSON object (policy record)"),
    ("init-policy-not-json", C + ["--init-policy", "{X}"], _policy("{"), "not a readable JSON policy record"),
    (
        "init-policy-unknown-field",
        C + ["--init-policy", "{X}"],
        _policy({"activation": "tanh"}),
        "unknown field 'activation'",
    ),
    (
        "init-policy-layers-string",
        C + ["--init-policy", "{X}"],
        _policy({"num_layers": "two"}),
        "num_layers = 'two', not a int",
    ),
    (
        "init-policy-no-tensors",
        C + ["--init-policy", "{X}"],
        _policy({}, tensors=False),
        "is not a readable safetensors file",
    ),
    # where results go
    ("out-empty", ["compress", "--teacher", "{T}", "--out", ""], None, "--out is empty"),
    (
        "out-under-a-file",
        ["compress", "--teacher", "{T}", "--out", "{X}"],
        _under_a_file,
        "which is a file, not a directory",
    ),
    (
        "teacher-out-under-a-file",
        ["train-teacher", "--arch", "lenet5", "--out", "{X}"],
        _under_a_file,
        "which is a file",
    ),
    ("demo-out-under-a-file", ["demo", "--out", "{X}"], _under_a_file, "which is a file"),
    (
        "baseline-out-under-a-file",
        ["baseline", "uniform", "--teacher", "{T}", "--target-params", "100", "--out", "{X}"],
        _under_a_file,
        "which is a file",
    ),
    ("tensorboard-a-file", C + ["--tensorboard", "{X}"], _a_file, "--tensorboard"),
    (
        "teacher-out-holds-a-model",
        ["train-teacher", "--arch", "lenet5", "--out", "{T}"],
        None,
        "holds a saved model already",
    ),
    ("export-out-empty", ["export", "{T}", "--format", "onnx", "--out", ""], None, "must name the file to write"),
    (
        "export-out-a-directory",
        ["export", "{T}", "--format", "onnx", "--out", "{X}"],
        _empty_dir,
        "must name the file to write",
    ),
    (
        "export-out-under-a-file",
        ["export", "{T}", "--format", "onnx", "--out", "{X}"],
        _under_a_file,
        "is a file; give a directory",
    ),
    ("ray-address-nobody-there", C + ["--ray-address", "127.0.0.1:9"], None, "nothing answers there"),
    # --normalize
    (
        "normalize-unknown-name",
        TT + ["--normalize", "zscore"],
        None,
        "--normalize must be auto, data, none, imagenet or MEAN,STD",
    ),
    (
        "normalize-one-number",
        C + ["--normalize", "0.5"],
        None,
        "--normalize must be auto, data, none, imagenet or MEAN,STD",
    ),
    ("normalize-three-parts", C + ["--normalize", "0.5,0.25,0.1"], None, "--normalize must be auto, data, none"),
    (
        "normalize-not-numbers",
        ["evaluate", "{T}", "--normalize", "mean,std"],
        None,
        "--normalize must be auto, data, none",
    ),
    ("normalize-std-zero", C + ["--normalize", "0.5,0"], None, "--normalize 0.5,0: std must be positive"),
    ("normalize-std-negative", TT + ["--normalize", "0.5,-0.25"], None, "std must be positive"),
    ("normalize-nan", C + ["--normalize", "nan,1"], None, "mean and std must be finite numbers"),
    ("normalize-counts-differ", C + ["--normalize", "0.4/0.5,0.2"], None, "2 mean(s) but 1 std(s)"),
    (
        "normalize-channels-differ",
        C + ["--normalize", "0.5/0.5/0.5,0.2/0.2/0.2"],
        None,
        "gives 3 channel value(s) but digits has 1 channel(s)",
    ),
    (
        "normalize-imagenet-gray",
        ["evaluate", "{T}", "--normalize", "imagenet"],
        None,
        "--normalize imagenet is for 3-channel (RGB) inputs but digits has 1 channel(s)",
    ),
    ("normalize-imagenet-gray-teacher", TT + ["--normalize", "imagenet"], None, "is for 3-channel (RGB) inputs"),
    (
        "normalize-baseline-bad",
        ["baseline", "uniform", "--teacher", "{T}", "--target-params", "100", "--out", "o", "--normalize", "1,-1"],
        None,
        "std must be positive",
    ),
    ("normalize-with-resume", ["compress", "--resume", "{X}", "--normalize", "none"], _empty_dir, "drop --normalize"),
    (
        "export-normalize-without-data",
        ["export", "{X}", "--format", "onnx", "--normalize", "none"],
        lambda d: _saved_model(d),
        "--normalize sets the inputs of the check on --data",
    ),
    (
        "export-bake-nothing-recorded",
        ["export", "{X}", "--format", "onnx", "--bake-normalization"],
        lambda d: _saved_model(d),
        "records no normalization to bake",
    ),
    (
        "export-bake-data-without-data",
        ["export", "{X}", "--format", "onnx", "--bake-normalization", "--normalize", "data"],
        lambda d: _saved_model(d),
        "--normalize data uses the training split's statistics: it needs --data",
    ),
    (
        "export-bake-imagenet-gray",
        ["export", "{X}", "--format", "onnx", "--bake-normalization", "--normalize", "imagenet"],
        lambda d: _saved_model(d),
        "is for 3-channel (RGB) inputs",
    ),
]


@pytest.mark.parametrize("argv, setup, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_line_error(argv, setup, message, teacher, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    made = setup(tmp_path / "input") if setup else None
    argv = [a.replace("{T}", str(teacher)).replace("{X}", str(made)) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert err.count("\n") == 1, f"the error must be one line:\n{err}"
    assert "Traceback" not in err
    assert not (tmp_path / "input" / "pwned").exists()


def test_at_least_150_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 150


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="--arch must be one of"):
        main(["--debug", "train-teacher", "--arch", "alexnet", "--out", "o"])


def test_report_of_an_interrupted_run_is_a_progress_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [
        {"event": "start", "teacher_params": 1000, "teacher_val_accuracy": 0.9},
        {
            "event": "candidate",
            "stage": "remove",
            "update": 0,
            "rollout": 0,
            "edits": {"removed": ["a"], "keep": []},
            "params": 100,
            "flops": 10,
            "val_accuracy": 0.8,
            "reward": 0.7,
            "reason": "",
            "seconds": 1.0,
            "cached": False,
        },
        {
            "event": "candidate",
            "stage": "remove",
            "update": 0,
            "rollout": 1,
            "edits": {"removed": [], "keep": []},
            "params": 0,
            "flops": 0,
            "val_accuracy": 0.0,
            "reward": -1.0,
            "reason": "surgery: x",
            "seconds": 0.5,
            "cached": False,
        },
    ]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"event": "cand')  # cut short
    assert main(["report", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "incomplete" and report["evaluations"] == 2
    assert report["stages"]["remove"]["best"]["params"] == 100
    assert "10.0x" in (run / "report.md").read_text()
