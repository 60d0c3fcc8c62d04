"""TAP-PER on tiny decoder-only and encoder-decoder backbones."""

import copy

import pytest

import torch

from components.lamp.history import history_examples
from components.lamp.io import read_questions
from components.lamp.tasks import get_task
from components.methods.tap_per.model import TapPerConfig, TapPerPrefix
from components.backbone.model import prefix_loss
from components.methods.tap_per.train import (TapPerTrainConfig, record_features,
                                              train_population)


def _examples(synth_root, n=12, n_questions=6):
    spec = get_task("LaMP-2")
    qs = read_questions(synth_root / "LaMP-2" / "train_questions.json", spec)[:n_questions]
    return spec, list(history_examples(spec, qs))[:n]


def _trained_from_saved(tiny, spec, ex, tmp_path):
    """A population model trained on a backbone saved to and loaded from tmp_path/base."""
    from components.backbone.model import load_backbone, save_backbone

    save_backbone(tiny, tmp_path / "base")
    users = sorted({q.user_key for q, _ in ex})
    bridged, prefix, index, _ = train_population(
        load_backbone(tmp_path / "base"), spec, ex, users, TapPerConfig(prefix_length=2),
        TapPerTrainConfig(batch_size=4, lr=1e-2))
    return bridged, prefix, index


def test_record_features_shapes_and_dates(tiny, synth_root):
    spec, ex = _examples(synth_root)
    z_q, z_h, days, order, mask = record_features(tiny, [q for q, _ in ex[:3]], max_records=4)
    assert z_q.shape == (3, tiny.hidden_size) and z_h.shape == (3, 4, tiny.hidden_size)
    assert mask.any(1).all() and (days >= 0).all()
    valid = order[mask]
    assert valid.min() == 1                                   # the newest record has order gap 1


def test_prefix_is_masked_in_the_loss(tiny):
    if tiny.is_encoder_decoder:
        return  # the encoder input carries no labels at all
    torch.manual_seed(0)
    prefix = torch.randn(1, 3, tiny.hidden_size, requires_grad=True)
    loss = prefix_loss(tiny, prefix, ["description: guku"], ["comedy"])
    dev = tiny.device
    emb = tiny.model.get_input_embeddings()
    bos, prompt = [tiny.tokenizer.bos_token_id], tiny.tokenize("description: guku")
    answer = torch.tensor(tiny.tokenize("comedy") + [tiny.tokenizer.eos_token_id], device=dev)
    # <bos> | prefix | prompt | answer: the prefix goes after BOS, as in generation
    embeds = torch.cat([emb(torch.tensor([bos], device=dev)), prefix.to(dev),
                        emb(torch.tensor([prompt + answer.tolist()], device=dev))], 1)
    logits = tiny.model(inputs_embeds=embeds).logits[0]
    start = 1 + 3 + len(prompt)                              # first answer position
    manual = torch.nn.functional.cross_entropy(logits[start - 1: start - 1 + len(answer)], answer)
    assert torch.allclose(loss, manual, atol=1e-5)
    loss.backward()
    assert prefix.grad.abs().sum() > 0


def test_gradients_reach_exactly_the_trainable_parts(tiny, synth_root):
    spec, ex = _examples(synth_root, n=4)
    backbone = copy.deepcopy(tiny)
    frozen = {n: p.detach().clone() for n, p in backbone.model.named_parameters()}
    users = sorted({q.user_key for q, _ in ex} | {"nobody"})
    cfg = TapPerConfig(prefix_length=2)
    prefix = TapPerPrefix(backbone.hidden_size, len(users), cfg)
    before = {n: p.detach().clone() for n, p in prefix.named_parameters()}
    bridged, prefix, index, losses = train_population(
        backbone, spec, ex, users, cfg, TapPerTrainConfig(batch_size=4, lr=1e-2), prefix=prefix)
    assert len(losses) == 1 and losses[0] > 0
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
            for n, p in bridged.model.named_parameters() if "lora_" not in n}
    assert all(torch.equal(base[n], frozen[n]) for n in frozen)          # backbone untouched
    lora = [p for n, p in bridged.model.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)                  # bridge trained
    table = prefix.user_prefix.weight.detach()
    assert torch.equal(table[index["nobody"]], before["user_prefix.weight"][index["nobody"]])
    for row in {index[q.user_key] for q, _ in ex}:                        # P_u of trained users moved
        assert not torch.equal(table[row], before["user_prefix.weight"][row])
    for name in ("relevance.0.weight", "project.weight", "lambda_t", "lambda_o"):
        assert not torch.equal(dict(prefix.named_parameters())[name].detach(), before[name]), name


def test_save_reload_gives_identical_outputs(tiny, synth_root, tmp_path):
    from components.backbone.model import load_backbone
    from components.methods.tap_per.method import TapPerMethod, UnknownUserError

    spec, ex = _examples(synth_root, n=8)
    bridged, prefix, index = _trained_from_saved(tiny, spec, ex, tmp_path)
    method = TapPerMethod(bridged, prefix, index)
    qs = [q for q, _ in ex[:4]]
    before = method.predict(None, spec, qs)
    method.save(tmp_path / "pop")
    assert sorted(p.name for p in (tmp_path / "pop").iterdir()) == ["bridge", "prefix.safetensors", "users.json"]
    again = TapPerMethod.load(tmp_path / "pop", load_backbone(tmp_path / "base"))
    assert [p.output for p in again.predict(None, spec, qs)] == [p.output for p in before]
    assert all(p.context_tokens == 2 for p in before)
    stranger = qs[0].__class__(id="x", input=qs[0].input, profile=[], user_id="u999999")
    with pytest.raises(UnknownUserError, match="not in this population"):
        again.predict(None, spec, [stranger])


def test_online_update_touches_only_that_user(tiny, synth_root, tmp_path):
    from components.backbone.model import load_backbone, save_backbone
    from components.methods.tap_per.method import TapPerMethod, fit_user

    spec, ex = _examples(synth_root, n=2000, n_questions=30)
    by_user = {}
    for q, g in ex:
        by_user.setdefault(q.user_key, []).append((q, g))
    ex = [pair for pairs in by_user.values() for pair in pairs[:3]]
    save_backbone(tiny, tmp_path / "base")
    users = sorted(by_user)
    assert len(users) >= 3
    bridged, prefix, index, _ = train_population(
        load_backbone(tmp_path / "base"), spec, ex, users, TapPerConfig(prefix_length=2),
        TapPerTrainConfig(batch_size=4, lr=1e-2))
    method = TapPerMethod(bridged, prefix, index)
    others = [q for q, _ in ex if q.user_key != users[0]][:4]
    before = [p.output for p in method.predict(None, spec, others)]
    table_before = prefix.user_prefix.weight.detach().clone()
    newcomer = [(q.__class__(id=q.id, input=q.input, profile=q.profile, user_id="newcomer", date=q.date), g)
                for q, g in ex[:4]]
    report = fit_user(method, spec, "newcomer", newcomer, epochs=2)
    assert report["row"] == len(users) and report["seconds"] < 30
    table = method.prefix.user_prefix.weight.detach()
    assert torch.equal(table[: len(users)], table_before)                  # nobody else moved
    assert not torch.allclose(table[-1], table_before.mean(0))             # the newcomer's row was fitted
    assert [p.output for p in method.predict(None, spec, others)] == before


def test_standardisation_is_fitted_on_the_training_data_and_saved(tiny, synth_root, tmp_path):
    from safetensors.torch import load_file, save_file

    from components.backbone.model import load_backbone
    from components.methods.tap_per.method import TapPerMethod

    spec, ex = _examples(synth_root, n=8)
    bridged, prefix, index = _trained_from_saved(tiny, spec, ex, tmp_path)
    z_q, z_h, _, _, mask = record_features(bridged, [q for q, _ in ex], 16)
    assert torch.allclose(prefix.q_mean, z_q.mean(0), atol=1e-5)             # every example sampled (8 < 1024)
    assert torch.allclose(prefix.h_mean, z_h[mask].mean(0), atol=1e-5)
    assert torch.allclose(((z_h[mask] - prefix.h_mean) / prefix.h_scale).std(0), torch.ones(tiny.hidden_size),
                          atol=1e-3)
    TapPerMethod(bridged, prefix, index).save(tmp_path / "pop")
    state = load_file(str(tmp_path / "pop" / "prefix.safetensors"))
    assert torch.equal(state["h_scale"], prefix.h_scale)
    # a model saved before standardisation existed loads with identity statistics
    save_file({k: v for k, v in state.items() if not k.startswith(("q_", "h_"))},
              str(tmp_path / "pop" / "prefix.safetensors"))
    old = TapPerMethod.load(tmp_path / "pop", load_backbone(tmp_path / "base"))
    assert torch.equal(old.prefix.h_mean, torch.zeros(tiny.hidden_size))
    assert torch.equal(old.prefix.q_scale, torch.ones(tiny.hidden_size))
    save_file({**state, "stray": torch.zeros(1)}, str(tmp_path / "pop" / "prefix.safetensors"))
    with pytest.raises(ValueError, match="unexpected \\['stray'\\]"):
        TapPerMethod.load(tmp_path / "pop", load_backbone(tmp_path / "base"))


def test_standardisation_off_keeps_the_reference_features(tiny, synth_root):
    spec, ex = _examples(synth_root, n=4)
    users = sorted({q.user_key for q, _ in ex})
    _, prefix, _, _ = train_population(copy.deepcopy(tiny), spec, ex, users,
                                       TapPerConfig(prefix_length=2, standardise=False),
                                       TapPerTrainConfig(batch_size=4))
    assert torch.equal(prefix.q_mean, torch.zeros(tiny.hidden_size))
    assert torch.equal(prefix.h_scale, torch.ones(tiny.hidden_size))


def test_field_pooling_weighs_each_field_equally(tiny, synth_root):
    from components.methods.tap_per.train import mean_input_embedding, record_embeddings

    _, ex = _examples(synth_root, n=2)
    item = ex[1][0].profile[0]
    by_field = mean_input_embedding(tiny, [v for _, v in sorted(item.fields.items())])
    assert torch.allclose(record_embeddings(tiny, [item], "fields")[0], by_field.mean(0))
    tokens = record_embeddings(tiny, [item], "tokens")[0]
    assert not torch.allclose(tokens, by_field.mean(0))     # a one-word tag weighs less among all tokens
    with pytest.raises(ValueError, match="record_pooling"):
        record_embeddings(tiny, [item], "max")


def test_attention_supervision_is_minus_log_of_the_mass_on_records_with_the_gold_output(tiny, synth_root):
    from components.methods.tap_per.train import attention_loss

    spec, ex = _examples(synth_root, n=12)
    batch = [(q, g) for q, g in ex if any(p.fields.get("tag") == g for p in q.profile)][:3]
    assert batch
    prefix = TapPerPrefix(tiny.hidden_size, 1, TapPerConfig(prefix_length=2))
    feats = record_features(tiny, [q for q, _ in batch], 16)
    alpha = prefix.attention(*feats)
    target = torch.tensor([[float(p.fields["tag"] == g) for p in q.profile[-16:]] + [0.0] * (16 - len(q.profile[-16:]))
                           for q, g in batch])
    expected = -torch.log((alpha * target).sum(1)).mean()
    loss = attention_loss(prefix, spec, batch, feats, 16)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert prefix.relevance[0].weight.grad.abs().sum() > 0 and prefix.project.weight.grad is None


def test_text_keys_leave_the_past_output_out_of_the_relevance(tiny, synth_root):
    from components.methods.tap_per.train import features, mean_input_embedding

    spec, ex = _examples(synth_root, n=4)
    qs = [q for q, _ in ex[1:3]]
    z_q, z_h, days, order, mask, z_k = features(tiny, spec, qs, 16, TapPerConfig(record_keys="text"))
    item = qs[0].profile[-16:][0]
    assert torch.allclose(z_k[0, 0], mean_input_embedding(tiny, [item.fields["description"]])[0])
    assert len(features(tiny, spec, qs, 16, TapPerConfig())) == 5        # the reference: the record itself
    prefix = TapPerPrefix(tiny.hidden_size, 1, TapPerConfig(prefix_length=2, record_keys="text"))
    prefix.fit_standardisation(z_q, z_h, mask, z_k)
    assert torch.allclose(prefix.k_mean, z_k[mask].mean(0), atol=1e-6)
    # the relevance reads the keys: the same values with other keys give other weights
    assert not torch.allclose(prefix.attention(z_q, z_h, days, order, mask, z_k),
                              prefix.attention(z_q, z_h, days, order, mask))
    rows = torch.zeros(len(qs), dtype=torch.long)
    assert prefix(rows, z_q, z_h, days, order, mask, z_k).shape == (len(qs), 2, tiny.hidden_size)


def test_bad_dates_and_empty_histories_fall_back_cleanly(tiny, caplog):
    import logging

    from components.lamp.records import ProfileItem, Question
    from components.methods.tap_per import train as tap_train

    tap_train._WARNED.clear()
    items = [ProfileItem("a", {"description": "guku film", "tag": "comedy"}),                 # no date
             ProfileItem("b", {"description": "nimasa film", "tag": "classic"}, date="2030-01-01"),  # future
             ProfileItem("c", {"description": "guku story", "tag": "comedy"}, date="2020-01-01")]
    asked = Question(id="q", input="description: guku", profile=items, user_id="u1", date="2021-01-01")
    empty = Question(id="e", input="description: guku", profile=[], user_id="u2", date="2021-01-01")
    with caplog.at_level(logging.WARNING, logger="components.methods.tap_per.train"):
        z_q, z_h, days, order, mask = tap_train.record_features(tiny, [asked, empty], max_records=4)
    assert days[0, :3].tolist() == [0.0, 0.0, 366.0] and order[0, :3].tolist() == [3.0, 2.0, 1.0]
    assert "1 records (or their questions) without a date" in caplog.text
    assert "1 records dated after their question" in caplog.text
    assert not mask[1].any()
    prefix = TapPerPrefix(tiny.hidden_size, 2, TapPerConfig(prefix_length=2))
    p = prefix(torch.tensor([0, 1]), z_q, z_h, days, order, mask)
    assert torch.isfinite(p).all()                       # no history: P_q is the projection's bias, no NaN
    assert torch.allclose(p[1], prefix.user_prefix.weight[1].view(2, -1) + prefix.project.bias.view(2, -1))


class _Killed(Exception):
    pass


def test_a_killed_training_resumes_to_the_same_weights(tiny, synth_root, tmp_path):
    from components.storage.checkpoints import Checkpoints

    spec, ex = _examples(synth_root, n=12)
    users = sorted({q.user_key for q, _ in ex})
    cfg, tcfg = TapPerConfig(prefix_length=2), TapPerTrainConfig(batch_size=4, lr=1e-2, epochs=2)   # 6 steps
    _, whole, _, losses = train_population(copy.deepcopy(tiny), spec, ex, users, cfg, tcfg)

    class DiesAtStep4(Checkpoints):
        def save(self, step, state):
            super().save(step, state)
            if step == 4:                       # mid-way through the second epoch
                raise _Killed

    path = tmp_path / "tap-per.pt"
    with pytest.raises(_Killed):
        train_population(copy.deepcopy(tiny), spec, ex, users, cfg, tcfg, checkpoints=DiesAtStep4(path, 2))
    assert path.exists()
    _, resumed, _, resumed_losses = train_population(copy.deepcopy(tiny), spec, ex, users, cfg, tcfg,
                                                     checkpoints=Checkpoints(path, 2))
    assert resumed_losses == losses
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))
