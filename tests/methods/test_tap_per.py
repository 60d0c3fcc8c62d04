"""TAP-PER on tiny decoder-only and encoder-decoder backbones (issue 5, in progress)."""

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
    emb = tiny.model.get_input_embeddings()
    bos, prompt = [tiny.tokenizer.bos_token_id], tiny.tokenize("description: guku")
    answer = torch.tensor(tiny.tokenize("comedy") + [tiny.tokenizer.eos_token_id])
    # <bos> | prefix | prompt | answer: the prefix goes after BOS, as in generation
    embeds = torch.cat([emb(torch.tensor([bos])), prefix, emb(torch.tensor([prompt + answer.tolist()]))], 1)
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
    from components.backbone.model import load_backbone, save_backbone
    from components.methods.tap_per.method import TapPerMethod, UnknownUserError

    spec, ex = _examples(synth_root, n=8)
    save_backbone(tiny, tmp_path / "base")
    users = sorted({q.user_key for q, _ in ex})
    bridged, prefix, index, _ = train_population(
        load_backbone(tmp_path / "base"), spec, ex, users, TapPerConfig(prefix_length=2),
        TapPerTrainConfig(batch_size=4, lr=1e-2))
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
