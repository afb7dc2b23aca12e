"""A torchvision and a timm network, trained by their owner's loop, through `n2n compress`, `evaluate` and `export`.

The data is scikit-learn's digits as a user would hand them over: 3x32x32 uint8 RGB images in a ``.npz`` with its
own test split. The network is trained here on pixels in [0, 1] (torchvision's ``ToTensor``), saved as
safetensors and named by its import path, so the run also checks that ``--normalize auto`` finds ``none``. Budgets
are tiny: the figures say nothing about quality, only that every step works on these networks.
"""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

try:
    import timm
    import torchvision
except Exception as err:  # noqa: BLE001 - torchvision beside another torch build fails with RuntimeError
    pytest.skip(f"needs torchvision and timm ({type(err).__name__}); run scripts/test-models", allow_module_level=True)

pytestmark = [pytest.mark.models, pytest.mark.slow]

N2N = [sys.executable, "-m", "n2n.cli"]
TINY = ["--updates", "2", "--rollouts", "3", "--steps", "8", "--finetune-epochs", "1", "--finetune-min-steps", "30"]


@pytest.fixture(scope="module")
def digits_rgb(tmp_path_factory):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16)[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    x, x_test, y, y_test = train_test_split(x, digits.target, test_size=0.2, random_state=0, stratify=digits.target)
    path = tmp_path_factory.mktemp("data") / "digits_rgb32.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    return path, x, y


def owners_training(model, x, y, epochs):
    """A plain loop on [0, 1] pixels: Adam, cross-entropy, batch 64."""
    torch.manual_seed(0)
    inputs, labels = torch.from_numpy(x).float() / 255, torch.from_numpy(y).long()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(labels)).split(64):
            loss = F.cross_entropy(model(inputs[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def n2n(*args):
    done = subprocess.run([*N2N, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.parametrize(
    "target, builder, epochs",
    [
        ("torchvision:resnet18", lambda: torchvision.models.resnet18(num_classes=10), 4),
        ("timm:mobilenetv3_small_100", lambda: timm.create_model("mobilenetv3_small_100", num_classes=10), 8),
    ],
)
def test_owner_trained_network_compresses_evaluates_and_exports(digits_rgb, tmp_path, target, builder, epochs):
    from safetensors.torch import save_file

    data, x, y = digits_rgb
    torch.set_num_threads(1)
    teacher = owners_training(builder(), x, y, epochs)
    weights = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(weights))
    run = tmp_path / "run"
    source = ["--data", "npz", "--data-dir", data]
    log = n2n(
        "compress",
        "--teacher",
        target,
        "--teacher-kwargs",
        '{"num_classes": 10}',
        "--weights",
        weights,
        *source,
        "--out",
        run,
        "--seed",
        0,
        "--workers",
        1,
        *TINY,
    )
    assert "normalization: none" in log  # the owner trained on [0, 1] pixels; auto must find that
    report = json.loads((run / "report.json").read_text())
    assert report["teacher"]["val_accuracy"] > 0.5  # the trained teacher is seen as trained, not fed other inputs
    assert report["student"]["params"] < report["teacher"]["params"]
    assert report["student"]["test_accuracy"] > 0.2  # above chance (0.1) after a tiny search
    spec = json.loads((run / "student" / "spec.json").read_text())
    assert spec["normalization"]["mean"] == [0.0, 0.0, 0.0] and spec["normalization"]["std"] == [1.0, 1.0, 1.0]

    # the saved student is the searched one: evaluate reloads it (import path: --trust-code) to the same accuracy
    out = n2n("evaluate", run / "student", *source, "--trust-code", "--no-latency")
    assert f"{report['student']['test_accuracy']:.2%}" in out, out

    onnx = tmp_path / "student.onnx"
    n2n("export", run / "student", "--format", "onnx", *source, "--trust-code", "--out", onnx)
    assert onnx.stat().st_size > 0
