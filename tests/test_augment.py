import json

import pytest
import torch
import torch.nn.functional as F

from n2n.data import augment_batch, list_policies
from n2n.data.augment import random_crop, random_flip


def windows(x, padding):
    """Every H x W window of ``x`` zero-padded by ``padding``: {(dy, dx): (N, C, H, W)}."""
    padded = F.pad(x, (padding,) * 4)
    h, w = x.shape[2:]
    return {
        (dy, dx): padded[:, :, dy : dy + h, dx : dx + w]
        for dy in range(2 * padding + 1)
        for dx in range(2 * padding + 1)
    }


def batch(n=32):
    return torch.arange(n * 2 * 6 * 5, dtype=torch.float32).reshape(n, 2, 6, 5) + 1  # no zeros: padding is visible


def test_policies():
    assert list_policies() == ["crop", "crop_flip", "none"]


def test_none_is_the_identity_and_draws_nothing():
    x, gen = batch(), torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert augment_batch(x, "none", gen) is x
    assert torch.equal(gen.get_state(), state)


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = batch()
    out = random_crop(x, torch.Generator().manual_seed(0), padding=2)
    assert out.shape == x.shape
    offsets = set()
    for i in range(len(x)):
        found = [o for o, win in windows(x, 2).items() if torch.equal(out[i], win[i])]
        assert found, f"image {i} is not a window of its padded original"
        offsets.add(found[0])
    assert len(offsets) >= 10  # offsets vary across the batch (25 possible)
    assert (out == 0).any()  # some crops reach into the padding


def test_crop_with_zero_padding_is_identity_and_exact_offsets():
    x = batch(4)
    assert torch.equal(random_crop(x, torch.Generator().manual_seed(3), padding=0), x)
    one = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    seen = {tuple(random_crop(one, torch.Generator().manual_seed(s), padding=1).flatten().tolist()) for s in range(60)}
    assert (0.0, 0.0, 0.0, 1.0) in seen and (4.0, 0.0, 0.0, 0.0) in seen and (1.0, 2.0, 3.0, 4.0) in seen
    assert len(seen) == 9  # exactly the 3 x 3 offsets


def test_flip_mirrors_about_half_the_images():
    x = batch(64)
    out = random_flip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


@pytest.mark.parametrize("policy", ["crop", "crop_flip"])
def test_policies_are_seeded(policy):
    x = batch()
    a = augment_batch(x, policy, torch.Generator().manual_seed(1))
    b = augment_batch(x, policy, torch.Generator().manual_seed(1))
    c = augment_batch(x, policy, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_crop_flip_gives_windows_of_the_image_or_its_mirror():
    x = batch()
    out = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    plain, mirrored = windows(x, 4), windows(x.flip(3), 4)
    for i in range(len(x)):
        assert any(torch.equal(out[i], w[i]) for w in (*plain.values(), *mirrored.values()))


def probed_training(x, soft, steps):
    """Distil a linear probe on ``x`` with crops for ``steps`` batches of 8: the inputs it saw and the targets its
    loss was given, step by step."""
    from torch import nn

    from n2n.train.fit import train_student

    seen, targets = [], []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(2 * 6 * 5, 3)

        def forward(self, inputs):
            seen.append(inputs.detach().clone())
            return self.linear(inputs.flatten(1))

    def loss(out, target):
        if out.requires_grad:  # not the divergence guard's reference loss on zeros
            targets.append(target.clone())
        return (out - target).pow(2).mean()

    train_student(
        Probe(), x, soft, steps=steps, batch_size=8, lr=1e-3, weight_decay=0.0,
        generator=torch.Generator().manual_seed(0), loss_fn=loss, augment="crop",
    )  # fmt: skip
    return seen, targets


def test_a_fine_tune_trains_on_augmented_inputs_and_the_targets_of_the_originals():
    x, soft = batch(16), torch.randn(16, 3)
    seen, targets = probed_training(x, soft, steps=3)
    # the same draws in the same order: a pass's order first, then each batch's crops as the batch is drawn
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(16, generator=gen)
    first, second = order[:8], order[8:]
    assert torch.equal(seen[0], random_crop(x[first], gen)) and torch.equal(targets[0], soft[first])
    assert torch.equal(seen[1], random_crop(x[second], gen)) and torch.equal(targets[1], soft[second])
    assert not torch.equal(seen[0], x[first])  # a crop of 8 images that moves none is a 1 in 81**8 draw


def test_online_targets_are_the_teachers_logits_of_each_augmented_batch():
    from torch import nn

    from n2n.train.fit import teacher_targets

    torch.manual_seed(0)
    x = batch(16)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 5, 3)).eval()
    seen, targets = probed_training(x, teacher_targets(teacher), steps=2)
    assert len(seen) == len(targets) == 2
    for inputs, target in zip(seen, targets, strict=True):
        with torch.no_grad():
            assert torch.allclose(target, teacher(inputs))  # the logits of the crop the student saw
        assert not target.requires_grad
    with torch.no_grad():  # not those of the original images
        first = torch.randperm(16, generator=torch.Generator().manual_seed(0))[:8]
        assert not torch.allclose(targets[0], teacher(x[first]))


def test_finetune_targets_need_what_they_distil_from():
    from n2n.train.finetune import FinetuneSettings, finetune

    assert FinetuneSettings(augment="crop", targets="online").online
    assert not FinetuneSettings(augment="none", targets="online").online  # nothing to be consistent with
    assert not FinetuneSettings(augment="crop", targets="fixed").online
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(60, 3))
    with pytest.raises(ValueError, match="needs the teacher"):  # refused before any data is read
        finetune(student, None, torch.zeros(8, 3), FinetuneSettings(augment="crop", targets="online"))
    with pytest.raises(ValueError, match="logits"):
        finetune(student, None, None, FinetuneSettings(augment="crop"))


def test_compress_fine_tunes_with_the_data_sets_augmentation(tmp_path, monkeypatch):
    """The final fine-tune (here a uniform baseline's, the same code) uses --augment, and the data set's own policy
    when it is not given; without augmentation it draws nothing more than before."""
    import importlib

    from n2n.cli import main

    module = importlib.import_module("n2n.compress")  # the name n2n.compress is the function
    used = []
    tune = module.finetune
    monkeypatch.setattr(module, "finetune", lambda *a, **k: used.append(a[3].augment) or tune(*a, **k))
    logits = []
    real_logits = module.training_logits
    monkeypatch.setattr(module, "training_logits", lambda *a: logits.append(1) or real_logits(*a))
    common = ["--data", "digits", "--seed", "0", "--max-train", "300", "--epochs", "1", "--arch", "vgg11"]
    assert main(["train-teacher", *common, "--width", "0.125", "--out", str(tmp_path / "t")]) == 0
    tiny = ["--data", "digits", "--max-train", "300", "--target-params", "3000", "--finetune-epochs", "1",
            "--finetune-min-steps", "2", "--workers", "1", "--teacher", str(tmp_path / "t")]  # fmt: skip
    for i, extra in enumerate(([], ["--augment", "crop"])):
        assert main(["baseline", "uniform", *tiny, *extra, "--out", str(tmp_path / f"u{i}")]) == 0
    assert used == ["none", "crop"] and len(logits) == 2
    online = ["--augment", "crop", "--finetune-targets", "online"]  # the teacher per batch: no logits up front
    assert main(["baseline", "uniform", *tiny, *online, "--out", str(tmp_path / "u2")]) == 0
    assert used[-1] == "crop" and len(logits) == 2
    run = json.loads((tmp_path / "u1" / "run.json").read_text())
    assert run["data_options"]["augment"] == "crop"  # what a resume or a report reloads the data with
