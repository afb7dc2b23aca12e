"""Candidates as Ray tasks on a real two-node cluster on localhost: the serial results, both nodes used, retries."""

import functools
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from n2n.cli import main
from n2n.errors import ConfigError, N2NError
from n2n.runlog import read_events
from n2n.search.ray_eval import check_address, task_options
from n2n.settings import CompressConfig
from n2n.surgery import Edits

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("cluster", "threads", "device", "cpus", "gpus"),
    [
        ({"CPU": 4.0}, 1, "cpu", 1, 0),
        ({"CPU": 4.0}, 2, "cuda", 2, 0),  # no GPU in the cluster: none asked for
        ({"CPU": 4.0, "GPU": 2.0}, 1, "cpu", 1, 0),  # candidates on the CPU do not hold a GPU
        ({"CPU": 4.0, "GPU": 2.0}, 3, "cuda", 3, 1),
    ],
)
def test_task_options(cluster, threads, device, cpus, gpus):
    assert task_options(cluster, threads, device) == {
        "num_cpus": cpus,
        "num_gpus": gpus,
        "max_retries": 1,
        "retry_exceptions": True,
        "scheduling_strategy": "SPREAD",
    }
    with_env = task_options(cluster, threads, device, huge_pages="1")
    assert with_env.pop("runtime_env") == {"env_vars": {"THP_MEM_ALLOC_ENABLE": "1"}}
    assert with_env == task_options(cluster, threads, device)


@pytest.mark.parametrize(
    ("address", "ok"),
    [
        ("auto", True),
        ("10.0.0.1:6379", True),
        ("head.local:6379", True),
        ("ray://10.0.0.1:10001", True),
        ("10.0.0.1", False),
        ("", False),
        ("http://x:1", False),
        ("auto:1 ; rm", False),
    ],
)
def test_check_address(address, ok):
    if ok:
        check_address(address)
    else:
        with pytest.raises(ConfigError, match="--ray-address must be auto, HOST:PORT"):
            check_address(address)


def test_ray_address_without_ray_tells_how_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` now fails as if not installed
    with pytest.raises(ConfigError, match=r"^--ray-address needs Ray: pip install 'n2n\[ray\]'$"):
        CompressConfig(ray_address="auto").validate()


needs_ray = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None,
    reason="ray is not installed (pip install 'n2n[ray]'): no two-node cluster to test on",
)


@pytest.fixture(scope="module")
def cluster():
    from n2n.search.ray_local import RAY_ENV, LocalRayCluster

    tests = str(Path(__file__).parent)  # so that Ray workers can import the stand-in tasks of _worker_tasks
    with pytest.MonkeyPatch.context() as mp:
        for key, value in RAY_ENV.items():
            mp.setenv(key, value)
        with LocalRayCluster(
            nodes=2, cpus=1, env={"PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")])}
        ) as c:
            yield c


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    assert (
        main(
            [
                "train-teacher",
                "--arch",
                "vgg11",
                "--width",
                "0.125",
                "--data",
                "digits",
                "--epochs",
                "6",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


@needs_ray
def test_search_on_two_nodes_gives_the_serial_results(cluster, teacher_dir, tmp_path, monkeypatch):
    from n2n.search.ray_eval import RayEvaluator

    nodes = []
    close = RayEvaluator.close
    monkeypatch.setattr(RayEvaluator, "close", lambda self: (nodes.append(dict(self.nodes)), close(self))[1])
    tiny = [
        "--stages",
        "remove",
        "--updates",
        "2",
        "--rollouts",
        "3",
        "--steps",
        "8",
        "--finetune-epochs",
        "0",
        "--candidate-examples",
        "128",
        "--seed",
        "5",
    ]
    runs = {}
    for name, where in (("serial", ["--workers", "1"]), ("ray", ["--ray-address", cluster.address])):
        out = tmp_path / name
        assert (
            main(["compress", "--teacher", str(teacher_dir), "--data", "digits", "--out", str(out), *tiny, *where]) == 0
        )
        runs[name] = [
            {k: v for k, v in e.items() if k != "seconds"}
            for e in read_events(out / "events.jsonl")
            if e["event"] == "candidate"
        ]
    assert len(runs["ray"]) == 6 and runs["ray"] == runs["serial"]
    assert (tmp_path / "ray" / "student" / "model.safetensors").read_bytes() == (
        tmp_path / "serial" / "student" / "model.safetensors"
    ).read_bytes()
    assert len(nodes) == 1 and len(nodes[0]) == 2  # tasks ran on both nodes
    assert sum(nodes[0].values()) == sum(not e["cached"] for e in runs["ray"])


def _context():
    from n2n.search.candidate import CandidateSettings, EvalContext

    return EvalContext(
        teacher=torch.nn.Linear(4, 2),
        input_shape=(4,),
        protected=(),
        x_train=torch.zeros(4, 4),
        z_train=torch.zeros(4, 2),
        x_val=torch.zeros(4, 4),
        y_val=torch.zeros(4, dtype=torch.long),
        teacher_params=10,
        teacher_val_accuracy=1.0,
        settings=CandidateSettings(steps=1, batch_size=2, lr=0.1, weight_decay=0.0),
    )


@needs_ray
def test_a_lost_task_is_retried_once_then_counts_as_invalid(cluster, tmp_path):
    from _worker_tasks import die_in_ray

    from n2n.search.ray_eval import RayEvaluator

    evaluator = RayEvaluator(_context(), cluster.address, task=functools.partial(die_in_ray, str(tmp_path)))
    try:
        # nothing has ever worked: the search stops with a hint rather than scoring every candidate -1
        with pytest.raises(N2NError, match="every node needs n2n installed"):
            evaluator.evaluate([Edits.make(removed=["always"])])
        batch = [Edits.make(removed=["once"]), Edits.make(keep={"a": 0.5}), Edits.make(removed=["always"])]
        results = evaluator.evaluate(batch)
        assert [r.edits for r in results] == batch  # in order
        assert results[0].valid and results[1].valid  # the first survived its worker's death on the retry
        assert not results[2].valid and results[2].reward == -1.0
        assert results[2].reason.startswith("Ray task failed twice: WorkerCrashedError")
    finally:
        evaluator.close()


@needs_ray
def test_tasks_run_with_the_search_process_huge_page_setting(cluster, monkeypatch):
    """Ray does not hand the driver's environment to its workers: the setting goes with each task."""
    from _worker_tasks import huge_pages_in_ray

    from n2n.search.ray_eval import RayEvaluator

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    evaluator = RayEvaluator(_context(), cluster.address, task=huge_pages_in_ray)
    try:
        results = evaluator.evaluate([Edits.make(keep={"a": 0.5}), Edits.make(keep={"b": 0.5})])
        assert [r.reason for r in results] == ["1", "1"]
    finally:
        evaluator.close()
