"""The pure pieces of the user lifecycle: all-or-nothing data rewrites, tombstones, placing
new users in populations, P_u rows removed from a saved TAP-PER model, guests' P_u, and
compressed contexts dropped by owner."""

import json
import shutil

import pytest
import torch

from components.lamp.splits import PopulationConfig, PrepareConfig, prepare_task
from components.lifecycle.datafiles import DataTransaction, ForgottenUsers, remove_users


@pytest.fixture
def task_dirs(tmp_path, synth_root):
    raw = tmp_path / "raw"
    shutil.copytree(synth_root / "LaMP-2", raw)
    prepared = tmp_path / "data" / "prepared" / "LaMP-2"
    prepare_task("LaMP-2", raw, prepared, PrepareConfig(5, PopulationConfig(k=3)))
    return raw, prepared


def _snapshot(*dirs):
    return {str(p): p.read_bytes() for d in dirs for p in sorted(d.rglob("*")) if p.is_file()}


def test_remove_users_takes_every_record_and_nothing_else(task_dirs):
    from components.lamp.io import read_golds, read_questions

    raw, prepared = task_dirs
    user = read_questions(raw / "train_questions.json")[0].user_id
    before = read_questions(raw / "train_questions.json")
    with DataTransaction() as tx:
        removal = remove_users([raw, prepared], {user}, tx)
    after = read_questions(raw / "train_questions.json")
    assert [q.id for q in after] == [q.id for q in before if q.user_id != user]
    assert removal.question_ids and not removal.question_ids & set(read_golds(raw / "train_outputs.json"))
    assert not removal.question_ids & set(json.loads((raw / "relevance.json").read_text()))
    pops = json.loads((prepared / "populations.json").read_text())
    assert user not in pops["populations"] and sum(pops["sizes"].values()) == len(pops["populations"])
    blob = b"".join(_snapshot(raw, prepared).values())
    assert f'"{user}"'.encode() not in blob
    assert removal.texts and not any(t.encode() in blob for t in removal.texts)


def test_a_failure_while_staging_changes_nothing(task_dirs, monkeypatch):
    raw, prepared = task_dirs
    before = _snapshot(raw, prepared)
    calls = {"n": 0}
    real = DataTransaction.stage_json

    def flaky(self, path, obj):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        real(self, path, obj)

    monkeypatch.setattr(DataTransaction, "stage_json", flaky)
    with pytest.raises(OSError, match="disk full"), DataTransaction() as tx:
        remove_users([raw, prepared], {"u000001"}, tx)
    assert _snapshot(raw, prepared) == before                 # no file changed, no temporary left


def test_forgotten_users_stay_out_of_a_new_acquisition(tmp_path, synth_root):
    raw = tmp_path / "raw"
    shutil.copytree(synth_root / "LaMP-2", raw)
    forgotten = ForgottenUsers(tmp_path / "forgotten.json")
    with DataTransaction() as tx:
        forgotten.stage_add(["u000001"], tx)
    text = (tmp_path / "forgotten.json").read_text()
    assert "u000001" not in text                              # only a salted hash is kept
    again = ForgottenUsers(tmp_path / "forgotten.json")
    assert "u000001" in again and "u000002" not in again
    with DataTransaction() as tx:
        removal = remove_users([raw], again, tx)
    assert removal.records > 0 and '"u000001"' not in (raw / "train_questions.json").read_text()


def test_a_new_user_lands_in_the_population_of_similar_users(task_dirs):
    from components.lamp.users import UserData

    _, prepared = task_dirs
    data = UserData.load("LaMP-2", prepared.parents[1])
    users = sorted(data.populations)[:20]
    placed = [data.index.assign(" ".join(p.fields["description"] for p in data.profile(u)))
              == data.populations[u] for u in users]
    assert sum(placed) >= 0.8 * len(placed)                  # a member's own history finds its cohort
    assert data.population_of(users[0], []) == data.populations[users[0]]


def test_removing_a_p_u_row_from_a_saved_model_keeps_every_other_row(tmp_path, tiny):
    from components.methods.tap_per.method import TapPerMethod, remove_users_from_dir
    from components.methods.tap_per.model import TapPerConfig, TapPerPrefix

    import copy

    from components.backbone.lora import add_lora
    from components.backbone.model import Backbone

    prefix = TapPerPrefix(tiny.hidden_size, 3, TapPerConfig(prefix_length=2, bridge_rank=0))
    model = add_lora(copy.deepcopy(tiny.model), r=2, alpha=4, roles="qkv")     # the session's tiny stays bare
    bridged = Backbone(model, tiny.tokenizer, name="t")
    method = TapPerMethod(bridged, prefix, {"a": 0, "b": 1, "c": 2})
    method.save(tmp_path / "m")
    rows = prefix.user_prefix.weight.detach().clone()
    assert remove_users_from_dir(tmp_path / "m", {"b", "zz"}) == ["b"]
    meta = json.loads((tmp_path / "m" / "users.json").read_text())
    assert meta["users"] == {"a": 0, "c": 1}
    from safetensors.torch import load_file

    table = load_file(str(tmp_path / "m" / "prefix.safetensors"))["user_prefix.weight"]
    assert torch.equal(table, rows[[0, 2]])


def test_a_guest_gets_the_population_mean_p_u():
    from components.methods.tap_per.model import TapPerConfig, TapPerPrefix

    prefix = TapPerPrefix(8, 3, TapPerConfig(prefix_length=2, use_record_prefix=False))
    z = torch.zeros(2, 8), torch.zeros(2, 1, 8), torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1, dtype=torch.bool)
    out = prefix(torch.tensor([1, -1]), *z)
    assert torch.allclose(out[0].flatten(), prefix.user_prefix.weight[1])
    assert torch.allclose(out[1].flatten(), prefix.user_prefix.weight.mean(0))


def test_compressed_contexts_are_dropped_by_owner(tmp_path):
    from components.methods.attn_gs.method import ContextCache

    cache = ContextCache(tmp_path, "ns")
    cache.put_many({"k1": "ctx one", "k2": "ctx two"}, {"k1": "alice", "k2": "bob"})
    cache.put_many({"k3": "ctx three"}, {"k3": "alice"})
    assert ContextCache(tmp_path, "ns").remove({"alice"}) == 2
    reloaded = ContextCache(tmp_path, "ns")
    assert reloaded.contexts == {"k2": "ctx two"} and reloaded.owners == {"k2": "bob"}
    assert "ctx one" not in "".join(p.read_text() for p in (tmp_path / "ns").glob("*"))
