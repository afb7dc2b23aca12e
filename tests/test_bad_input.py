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
    assert main(["train-teacher", "--arch", "lenet5", "--width", "0.25", "--data", "digits", "--epochs", "1",
                 "--out", str(out)]) == 0
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
    (d / "policy_remove.json").write_text(json.dumps({"kind": "remove", "feature_dim": 13, "hidden": 30, "version": 1,
                                                      "features": ["a"] * 13}))
    return d


# (id, argv template, expected message). {T}: a trained teacher, {X}: the path the setup function returns.
CASES = [
    ("unknown-arch", ["train-teacher", "--arch", "alexnet", "--out", "o"], None, "--arch must be one of"),
    ("mnist-without-dir", ["train-teacher", "--arch", "vgg11", "--data", "mnist", "--out", "o"], None, "needs --data-dir"),
    ("data-dir-missing", ["train-teacher", "--arch", "vgg11", "--data", "mnist", "--data-dir", "/nonexistent", "--out", "o"], None, "not a directory"),
    ("unknown-data", ["train-teacher", "--arch", "vgg11", "--data", "cifar", "--out", "o"], None, "unknown data set"),
    ("zero-epochs", ["train-teacher", "--arch", "vgg11", "--epochs", "0", "--out", "o"], None, "--epochs"),
    ("negative-width", ["train-teacher", "--arch", "vgg11", "--width", "-1", "--out", "o"], None, "--width"),
    ("labels-out-of-range", ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"], _bad_labels, "labels must be in [0, 10)"),
    ("truncated-idx", ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"], _truncated, "truncated"),
    ("bad-magic", ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"], _bad_magic, "not an IDX file"),
    ("images-vs-labels", ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"], _mismatch, "200 images but 150 labels"),
    ("missing-idx-file", ["train-teacher", "--arch", "lenet5", "--data", "mnist", "--data-dir", "{X}", "--out", "o"], _missing, "lacks t10k-images-idx3-ubyte"),
    ("cifar-batches-missing", ["train-teacher", "--arch", "lenet5", "--data", "cifar10", "--data-dir", "{X}", "--out", "o"], _empty_dir, "lacks data_batch_1, data_batch_2"),
    ("cifar-malicious-pickle", ["train-teacher", "--arch", "lenet5", "--data", "cifar10", "--data-dir", "{X}", "--out", "o"], _evil_cifar, "open is not allowed (only numpy arrays are)"),
    ("svhn-not-matlab", ["train-teacher", "--arch", "lenet5", "--data", "svhn", "--data-dir", "{X}", "--out", "o"], _garbage_svhn, "as a MATLAB v5 file"),
    ("caltech-wrong-layout", ["train-teacher", "--arch", "lenet5", "--data", "caltech256", "--data-dir", "{X}", "--out", "o"], _empty_dir, "class folders 001.ak47 ... 256.toad"),
    ("imagefolder-one-class", ["train-teacher", "--arch", "lenet5", "--data", "imagefolder", "--data-dir", "{X}", "--out", "o"], _one_class_folder, "has 1 class folder(s)"),
    ("image-size-too-small", ["train-teacher", "--arch", "lenet5", "--data", "imagefolder", "--image-size", "4", "--out", "o"], None, "--image-size must be an integer >= 8"),
    ("image-size-for-cifar", ["train-teacher", "--arch", "lenet5", "--data", "cifar10", "--image-size", "32", "--out", "o"], None, "cifar10 does not take --image-size"),
    ("npz-object-array", ["train-teacher", "--arch", "lenet5", "--data", "npz", "--data-dir", "{X}", "--out", "o"], _evil_npz, "Object arrays cannot be loaded"),
    ("augment-choice", ["train-teacher", "--arch", "lenet5", "--augment", "rotate", "--out", "o"], None, "invalid choice: 'rotate'"),
    ("recipe-paper-for-digits", ["train-teacher", "--arch", "lenet5", "--recipe", "paper", "--out", "o"], None, "--recipe paper has schedules for"),
    ("teacher-device-unknown", ["train-teacher", "--arch", "lenet5", "--device", "tpu", "--out", "o"], None, "--device must be one of auto, cpu, cuda, mps"),
    ("teacher-device-unavailable", ["train-teacher", "--arch", "lenet5", "--device", "mps", "--out", "o"], None, "no MPS device is available"),
    ("max-train-zero", ["train-teacher", "--arch", "lenet5", "--max-train", "0", "--out", "o"], None, "max_train must be a positive"),
    ("teacher-missing", ["compress", "--teacher", "nowhere", "--out", "o"], None, "neither a saved n2n model"),
    ("teacher-dir-without-spec", ["compress", "--teacher", "{X}", "--out", "o"], _empty_dir, "not a saved n2n model"),
    ("out-is-a-file", ["compress", "--teacher", "{T}", "--out", "{X}"], _a_file, "is a file; give a directory"),
    ("random-search-with-init-policy", ["compress", "--teacher", "{T}", "--out", "o", "--search", "random", "--init-policy", "{X}"], _empty_dir, "cannot be combined with --search random"),
    ("workers-negative", ["compress", "--teacher", "{T}", "--out", "o", "--workers", "-1"], None, "--workers must be >= 0"),
    ("device-unknown", ["compress", "--teacher", "{T}", "--out", "o", "--device", "tpu"], None, "invalid choice"),
    ("device-unavailable", ["compress", "--teacher", "{T}", "--out", "o", "--device", "mps"], None, "no MPS device is available"),
    ("precision-unknown", ["compress", "--teacher", "{T}", "--out", "o", "--precision", "fp8"], None, "invalid choice"),
    ("ray-address-malformed", ["compress", "--teacher", "{T}", "--out", "o", "--ray-address", "head-node"], None, "--ray-address must be auto, HOST:PORT"),
    ("no-teacher", ["compress", "--out", "o"], None, "needs --teacher and --out"),
    ("updates-zero", ["compress", "--teacher", "{T}", "--out", "o", "--updates", "0"], None, "--updates must be a positive integer"),
    ("fraction-above-one", ["compress", "--teacher", "{T}", "--out", "o", "--fractions", "0.5,2"], None, "--fractions"),
    ("fractions-without-one", ["compress", "--teacher", "{T}", "--out", "o", "--fractions", "0.25,0.5"], None, "include 1.0"),
    ("fractions-not-numbers", ["compress", "--teacher", "{T}", "--out", "o", "--fractions", "a,b"], None, "comma-separated numbers"),
    ("stage-choice", ["compress", "--teacher", "{T}", "--out", "o", "--stages", "all"], None, "invalid choice"),
    ("updates-not-int", ["compress", "--teacher", "{T}", "--out", "o", "--updates", "many"], None, "invalid int value"),
    ("negative-lr", ["compress", "--teacher", "{T}", "--out", "o", "--lr", "-0.1"], None, "--lr must be > 0"),
    ("baseline-decay-one", ["compress", "--teacher", "{T}", "--out", "o", "--baseline-decay", "1"], None, "--baseline-decay must be in [0, 1)"),
    ("risk-epsilon-above-one", ["compress", "--teacher", "{T}", "--out", "o", "--risk-epsilon", "1.5"], None, "--risk-epsilon must be in (0, 1]"),
    ("min-accuracy-percent", ["compress", "--teacher", "{T}", "--out", "o", "--min-accuracy", "95"], None, "--min-accuracy must be a fraction"),
    ("max-params-zero", ["compress", "--teacher", "{T}", "--out", "o", "--max-params", "0"], None, "--max-params must be a positive"),
    ("init-policy-missing", ["compress", "--teacher", "{T}", "--out", "o", "--init-policy", "{X}"], _empty_dir, "holds no trained policy"),
    ("wrong-input-shape", ["compress", "--teacher", "{T}", "--out", "o", "--data", "mnist", "--data-dir", "{X}"], write_tiny_mnist, "pass the data set the teacher was trained on"),
    ("config-missing", ["compress", "--teacher", "{T}", "--out", "o", "--config", "nowhere.yaml"], None, "--config nowhere.yaml"),
    ("config-unknown-key", ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"], _yaml("updatez: 3\n"), "unknown setting 'updatez'"),
    ("config-wrong-type", ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"], _yaml("updates: lots\n"), "updates must be int"),
    ("config-not-yaml", ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"], _yaml("updates: [1,\n"), "not valid YAML"),
    ("config-not-mapping", ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"], _yaml("- 1\n- 2\n"), "must map setting names"),
    ("config-bad-value", ["compress", "--teacher", "{T}", "--out", "o", "--config", "{X}"], _yaml("rollouts: -2\n"), "--rollouts must be a positive"),
    ("zoo-teacher-without-weights", ["compress", "--teacher", "vgg11", "--out", "o"], None, "pass its trained weights with --weights"),
    ("import-path-unknown-module", ["compress", "--teacher", "no_such_pkg_q:net", "--out", "o"], None, "cannot import 'no_such_pkg_q'"),
    ("teacher-kwargs-not-json", ["compress", "--teacher", "vgg11", "--teacher-kwargs", "{width: 1}", "--out", "o"], None, "must be a JSON object"),
    ("malicious-pickle", ["compress", "--teacher", "lenet5", "--weights", "{X}", "--out", "o"], _evil_weights, "--trust-pickle"),
    ("weights-not-safetensors", ["compress", "--teacher", "lenet5", "--weights", "{X}", "--out", "o"], _not_a_tensor_file, "not a readable safetensors file"),
    ("resume-not-a-run", ["compress", "--resume", "{X}"], _empty_dir, "not an n2n run directory"),
    ("resume-with-options", ["compress", "--resume", "{X}", "--updates", "3"], _empty_dir, "drop --updates"),
    ("inspect-without-shape", ["inspect", "--teacher", "vgg11"], None, "--input-shape C,H,W is needed"),
    ("inspect-bad-shape", ["inspect", "--teacher", "vgg11", "--input-shape", "3x32x32"], None, "--input-shape must be integers"),
    ("inspect-shape-mismatch", ["inspect", "--teacher", "{T}", "--input-shape", "3,32,32"], None, "takes inputs of shape (1, 8, 8)"),
    ("inspect-model-fails-on-shape", ["inspect", "--teacher", "no_such_pkg_q:net", "--input-shape", "1,8,8"], None, "cannot import"),
    ("evaluate-missing", ["evaluate", "nowhere"], None, "not a saved n2n model"),
    ("evaluate-wrong-data", ["evaluate", "{T}", "--data", "mnist", "--data-dir", "{X}"], write_tiny_mnist, "takes inputs of shape"),
    ("baseline-uniform-without-target", ["baseline", "uniform", "--teacher", "{T}", "--out", "o"], None, "needs --teacher and --target-params"),
    ("baseline-uniform-impossible-target", ["baseline", "uniform", "--teacher", "{T}", "--target-params", "1", "--out", "o"], None, "no uniform keep-fraction brings the teacher"),
    ("baseline-scratch-not-a-run", ["baseline", "scratch", "--run", "{X}", "--out", "o"], _empty_dir, "is not a finished n2n run"),
    ("report-not-a-run", ["report", "{X}"], _empty_dir, "not an n2n run directory"),
    ("export-unknown-format", ["export", "{T}", "--format", "tflite"], None, "invalid choice"),
    ("export-missing", ["export", "nowhere", "--format", "onnx"], None, "not a saved n2n model"),
    ("export-atol-zero", ["export", "{T}", "--format", "torchscript", "--atol", "0"], None, "--atol must be > 0"),
    ("export-wrong-data", ["export", "{T}", "--format", "onnx", "--data", "mnist", "--data-dir", "{X}"], write_tiny_mnist, "pass the data set the model was trained on"),
    ("evaluate-teacher-missing", ["evaluate", "{T}", "--teacher", "nowhere"], None, "not a saved n2n model"),
    ("objective-choice", ["compress", "--teacher", "{T}", "--out", "o", "--objective", "speed"], None, "invalid choice"),
    ("max-flops-zero", ["compress", "--teacher", "{T}", "--out", "o", "--max-flops", "0"], None, "--max-flops must be a positive"),
    ("max-latency-negative", ["compress", "--teacher", "{T}", "--out", "o", "--max-latency-ms", "-1"], None, "--max-latency-ms must be > 0"),
    ("init-policy-other-features", ["compress", "--teacher", "{T}", "--out", "o", "--init-policy", "{X}"], _foreign_policy, "train the policy again"),
    ("report-compare-not-a-run", ["report", "{T}", "{X}"], _empty_dir, "not an n2n run directory"),
    ("report-out-with-one-run", ["report", "{X}", "--out", "o"], _empty_dir, "--out is for comparing several runs"),
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


def test_at_least_thirty_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30


def test_debug_shows_the_traceback(capsys):
    with pytest.raises(Exception, match="--arch must be one of"):
        main(["--debug", "train-teacher", "--arch", "alexnet", "--out", "o"])


def test_report_of_an_interrupted_run_is_a_progress_report(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"event": "start", "teacher_params": 1000, "teacher_val_accuracy": 0.9},
             {"event": "candidate", "stage": "remove", "update": 0, "rollout": 0, "edits": {"removed": ["a"], "keep": []},
              "params": 100, "flops": 10, "val_accuracy": 0.8, "reward": 0.7, "reason": "", "seconds": 1.0, "cached": False},
             {"event": "candidate", "stage": "remove", "update": 0, "rollout": 1, "edits": {"removed": [], "keep": []},
              "params": 0, "flops": 0, "val_accuracy": 0.0, "reward": -1.0, "reason": "surgery: x", "seconds": 0.5, "cached": False}]
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"event": "cand')  # cut short
    assert main(["report", str(run)]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["status"] == "incomplete" and report["evaluations"] == 2
    assert report["stages"]["remove"]["best"]["params"] == 100
    assert "10.0x" in (run / "report.md").read_text()
