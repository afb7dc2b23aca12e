"""The event log's records: one type per kind, written by one writer."""

import json
import math

from n2n.events import Candidate, Done, FinetuneStep, Stage, Update
from n2n.runlog import EventLog, read_events


def test_a_record_is_its_kind_then_its_fields_in_order_optional_ones_only_when_set():
    assert Stage("remove", 12, layers=10).to_dict() == {
        "event": "stage",
        "stage": "remove",
        "updates": 12,
        "layers": 10,
    }
    assert list(Done(3.5).to_dict()) == ["event", "wall_time_s"]
    assert Done(3.5, {"policy": 1.0}).to_dict()["seconds"] == {"policy": 1.0}
    update = Update("shrink", 0, 0.5, None, 0.4, -0.1, 2.0, [])
    assert update.to_dict()["reward_best"] is None  # a required field is kept even when None
    assert "base_probs" not in update.to_dict()
    c = Candidate("remove", 1, 2, [1, 0], {"removed": [], "keep": []}, 10, 20, 40, None, 0.9, 0.8, 0.7, "", 1.5, False)
    assert list(c.to_dict())[:4] == ["event", "stage", "update", "rollout"] and "base" not in c.to_dict()


def test_the_log_writes_each_record_once_and_tells_the_listener_the_same_dict(tmp_path):
    heard = []
    log = EventLog(tmp_path / "events.jsonl", heard.append)
    log(Stage("remove", 3, layers=4))
    log.tell(FinetuneStep(7))  # progress only: not written
    log(Done(float("nan")))  # JSON has no NaN: written as null
    log.close()
    assert [e["event"] for e in read_events(tmp_path / "events.jsonl")] == ["stage", "done"]
    assert heard[:2] == [Stage("remove", 3, layers=4).to_dict(), {"event": "finetune_step", "step": 7}]
    assert heard[2]["event"] == "done" and math.isnan(heard[2]["wall_time_s"])  # the listener gets the record as is
    assert json.loads((tmp_path / "events.jsonl").read_text().splitlines()[1]) == {"event": "done", "wall_time_s": None}
    assert log.count == 2
