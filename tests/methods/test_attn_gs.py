"""Attn-GS on tiny decoder-only and encoder-decoder backbones."""

import copy
import dataclasses
import json

import pytest
import torch

from components.lamp.io import read_golds, read_questions
from components.lamp.prompts import (MARK_END, MARK_START, build_prompt, compact_item, fit_compact,
                                     prompt_with_context)
from components.lamp.tasks import get_task
from components.methods import build_method
from components.methods.attn_gs.marking import (Marker, MarkingConfig, capture_attention, item_attention, mark,
                                                precision_recall_at_k, query_span, select_layers)
from components.methods.attn_gs.method import (AttnGSMethod, TeacherTargets, compression_prompt,
                                               marked_by_consensus, marked_by_score, marked_content_target,
                                               ranking_of, target_builder)
from components.methods.attn_gs.train import FinetuneConfig, finetune, finetune_marker, learned_temperature

SPEC = get_task("LaMP-2")


def _questions(synth_root, n=6, split="train"):
    qs = read_questions(synth_root / "LaMP-2" / f"{split}_questions.json", SPEC)[:n]
    golds = read_golds(synth_root / "LaMP-2" / f"{split}_outputs.json", SPEC)
    return qs, golds


def _eager_attentions(model, enc, extra):
    """The same forward with every layer's full attention (eager), for comparison."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(**enc, **extra, output_attentions=True)
    finally:
        model.set_attn_implementation("sdpa")


def test_item_spans_cover_each_item_and_marks_wrap_the_flagged_ones(tiny, synth_root):
    q = _questions(synth_root, 1)[0][0]
    flags = [i % 3 == 0 for i in range(len(q.profile))]
    p = build_prompt(SPEC, q.input, q.profile, 2000, tiny.tokenize, tiny.detokenize, marked=flags)
    assert [i for i, _, _ in p.item_spans] == list(range(len(q.profile)))
    for i, a, z in p.item_spans:
        piece = p.text[a:z]
        assert q.profile[i].fields["tag"] in piece
        assert piece.startswith(MARK_START) == flags[i] and piece.endswith(MARK_END) == flags[i]
    short = build_prompt(SPEC, q.input, q.profile, 120, tiny.tokenize, tiny.detokenize)
    kept = [i for i, _, _ in short.item_spans]
    assert kept and kept == list(range(len(q.profile) - len(kept), len(q.profile)))   # the newest items


def test_captured_row_equals_the_eager_attention_of_the_last_position(tiny, synth_root):
    qs, _ = _questions(synth_root, 3)
    texts = [build_prompt(SPEC, q.input, q.profile[:4], 200, tiny.tokenize, tiny.detokenize).text for q in qs]
    enc = tiny.encode_batch(texts)
    model = tiny.model
    extra = {}
    if tiny.is_encoder_decoder:
        extra["decoder_input_ids"] = torch.zeros(len(texts), 1, dtype=torch.long, device=model.device)
    with torch.no_grad(), capture_attention(model, "1") as modules:
        model(**enc, **extra)
        row = modules[0]._persona_rows[-1]                                    # [B, heads, T]
    assert model.config._attn_implementation != "persona_attn_capture"      # restored
    out = _eager_attentions(model, enc, extra)
    full = (out.cross_attentions if tiny.is_encoder_decoder else out.attentions)[1][:, :, -1]
    assert torch.allclose(row, full, atol=1e-5)
    assert torch.allclose(row.sum(-1), torch.ones_like(row.sum(-1)), atol=1e-5)
    pads = enc["attention_mask"] == 0
    assert float(row.permute(0, 2, 1)[pads].abs().sum()) == 0.0


def test_marker_scores_every_item_even_beyond_the_window(tiny, synth_root):
    q = _questions(synth_root, 1)[0][0]
    small = copy.copy(tiny)
    marker = Marker(tiny, MarkingConfig(layers="middle"))
    scores = marker.score(SPEC, [q])[0]
    assert len(scores) == len(q.profile) and all(s > 0 for s in scores)
    # a window that holds a few items: chunks with the same query cover the whole profile
    marker_small = Marker(small, MarkingConfig(layers="middle"))
    small.tokenizer = copy.deepcopy(tiny.tokenizer)
    small.tokenizer.model_max_length = 90
    chunked = marker_small.score(SPEC, [q])[0]
    assert len(chunked) == len(q.profile) and all(s > 0 for s in chunked)


def test_one_head_scores_average_to_the_mean_over_heads_and_a_missing_head_is_named(tiny, synth_root):
    qs, _ = _questions(synth_root, 2)
    qs = [dataclasses.replace(q, profile=q.profile[:5]) for q in qs]
    config = MarkingConfig(layers="1", token_pooling="sum")
    heads = getattr(tiny.model.config, "num_attention_heads", None) or tiny.model.config.num_heads
    each = [Marker(tiny, MarkingConfig(layers="1", token_pooling="sum", head_aggregation=str(h))).score(SPEC, qs)
            for h in range(heads)]
    mean = Marker(tiny, config).score(SPEC, qs)
    for b in range(len(qs)):
        averaged = torch.tensor([row[b] for row in each]).mean(0)
        assert torch.allclose(averaged, torch.tensor(mean[b]), atol=1e-6)
    assert any(each[0][b] != each[1][b] for b in range(len(qs)))          # the heads differ
    per_head = Marker(tiny, config).score(SPEC, qs, per_head=True)          # one pass, every head (the sweep's)
    for b in range(len(qs)):
        assert torch.allclose(torch.tensor(per_head[b]).T, torch.tensor([row[b] for row in each]), atol=1e-6)
    with pytest.raises(ValueError, match=f"head_aggregation {heads}: the marking layers have {heads} heads"):
        Marker(tiny, MarkingConfig(layers="1", head_aggregation=str(heads))).score(SPEC, qs)
    from components.config import AttnGSSettings

    assert AttnGSSettings(head_aggregation=1).head_aggregation == "1"        # params.yaml: `head_aggregation: 1`
    with pytest.raises(ValueError, match="head_aggregation"):
        AttnGSSettings(head_aggregation="first")


def test_marking_rules_and_precision_recall():
    s = [0.1, 0.5, 0.3, 0.05]
    assert mark(s, MarkingConfig(rule="alpha", alpha=0.5)) == [False, True, True, False]
    assert mark(s, MarkingConfig(rule="top_k", top_k=1)) == [False, True, False, False]
    assert mark(s, MarkingConfig(rule="top_p", top_p=0.8)) == [False, True, True, False]
    with pytest.raises(ValueError, match="rule"):
        mark(s, MarkingConfig(rule="best"))
    assert precision_recall_at_k(s, ["a", "b", "c", "d"], {"b", "d"}, 2) == (0.5, 0.5)
    assert precision_recall_at_k(s, ["a", "b", "c", "d"], set(), 2) is None
    assert select_layers(4, "middle") == [2] and select_layers(4, "0,-1") == [0, 3]
    with pytest.raises(ValueError, match="out of range"):
        select_layers(2, "5")


def test_compact_contexts_stay_within_the_budget(tiny, synth_root):
    q = _questions(synth_root, 1)[0][0]
    units = [compact_item(SPEC, p) for p in q.profile]
    assert units[0] == f'"{q.profile[0].fields["tag"]}"'
    for budget in (1, 3, 8, 20):
        text = fit_compact(units, budget, tiny.tokenize, tiny.detokenize)
        assert 0 < len(tiny.tokenize(text)) <= budget
    assert prompt_with_context(SPEC, "INPUT", "") == "INPUT"
    assert prompt_with_context(SPEC, "INPUT", "ctx") == "ctx. INPUT"
    method = build_method("bm25@8")
    preds = method.predict(tiny, SPEC, _questions(synth_root, 4)[0])
    assert all(0 < p.context_tokens <= 8 for p in preds)
    with pytest.raises(ValueError, match="budget"):
        build_method("bm25@0")


def test_compression_prompt_puts_the_item_the_target_ranks_first_last(tiny, synth_root):
    from dataclasses import replace

    from components.lamp.records import ProfileItem

    q = next(q for q in _questions(synth_root, 10)[0] if len(q.profile) >= 4)
    a, b, c, d = (ProfileItem(p.id, p.fields, f"2020-01-0{i + 1}") for i, p in enumerate(q.profile[:4]))
    profile, flags = [a, b, c, d], [True, True, True, False]
    ranked = marked_by_score(SPEC, replace(q, profile=profile), [0.9, 0.1, 0.5, 0.7], flags)
    assert ranked == [0, 2, 1]
    scored = compression_prompt(SPEC, replace(q, profile=profile), flags, 8, tiny, ranked)
    # unmarked first by date, then marked in rising score: d | b, c, a
    dated = [ProfileItem(x.id, x.fields, f"2020-01-0{i + 1}") for i, x in enumerate([d, b, c, a])]
    assert scored == compression_prompt(SPEC, replace(q, profile=dated), [False, True, True, True], 8, tiny)
    assert scored != compression_prompt(SPEC, replace(q, profile=[a, b, c, d]), [True, True, True, False], 8, tiny)


def test_lamp3_compact_item_keeps_lamps_frame_with_one_word_of_the_review():
    from components.lamp.records import ProfileItem

    spec = get_task("LaMP-3")
    item = ProfileItem("7", {"text": "sopo rina zevilo", "score": "4"})
    assert compact_item(spec, item) == '4 is the score for "sopo"'
    assert compact_item(spec, ProfileItem("8", {"text": " ", "score": "2"})) == '2 is the score for ""'


def test_bm25_supervision_keeps_the_label_flags_of_the_best_lexical_matches(tiny, synth_root):
    from components.methods.attn_gs.train import marker_examples
    from components.retrieval.rankers import rank_bm25

    qs, golds = _questions(synth_root, 20)
    pairs = [(q, golds[q.id]) for q in qs]
    args = (SPEC, pairs, 200, tiny.tokenize, tiny.detokenize)
    by_label = marker_examples(*args, supervision="label")
    by_bm25 = marker_examples(*args, supervision="label+bm25", bm25_top=2)
    assert sum(map(sum, (e[2] for e in by_bm25))) < sum(map(sum, (e[2] for e in by_label)))
    for lab, bm in zip(by_label, by_bm25):
        assert lab[0].text == bm[0].text and sum(bm[2]) <= 2            # same prompts, at most 2 flags
        assert all(la or not b for la, b in zip(lab[2], bm[2]))         # a subset of the label flags
    # a question whose profile fits: the flags are the label matches among BM25's top 2
    q = next(q for q, _ in pairs if len(q.profile) <= 12)
    gold = golds[q.id]
    (prompt, _, flags, _), = marker_examples(SPEC, [(q, gold)], 400, tiny.tokenize, tiny.detokenize,
                                            supervision="label+bm25", bm25_top=2)
    top2 = set(rank_bm25(SPEC, q)[:2])
    order = sorted(range(len(q.profile)), key=lambda i: (q.profile[i].date or "", i))     # as shown
    expected = [order[i] in top2 and q.profile[order[i]].fields["tag"] == gold for i, _, _ in prompt.item_spans]
    assert flags == expected


def test_targets_rank_marked_items_and_teacher_targets_name_their_file(tiny, synth_root, tmp_path):
    q = _questions(synth_root, 1)[0][0]
    scores = [float(i) for i in range(len(q.profile))]
    flags = [i >= len(q.profile) - 2 for i in range(len(q.profile))]
    target = marked_content_target(SPEC, q, scores, flags, 40, tiny.tokenize, tiny.detokenize)
    newest, before = (compact_item(SPEC, q.profile[i]) for i in (-1, -2))
    assert target == f"{newest}, and {before}"
    f = tmp_path / "teacher.json"
    f.write_text(json.dumps({q.id: "a long teacher summary of the user"}))
    assert target_builder(f"teacher:{f}")(SPEC, q, scores, flags, 3, tiny.tokenize, tiny.detokenize)
    with pytest.raises(KeyError, match="teacher.json"):
        TeacherTargets(f)(SPEC, _questions(synth_root, 2)[0][1], scores, flags, 3, tiny.tokenize, tiny.detokenize)
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="bad.json"):
        TeacherTargets(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="compression target"):
        target_builder("summaries")


def test_the_consensus_target_leads_with_the_item_whose_output_the_marked_items_agree_on(tiny):
    from components.lamp.records import ProfileItem, Question

    def question(task, field, outputs):
        items = [ProfileItem(id=str(i), fields={"text": f"w{i} x", "description": f"w{i}", field: o})
                 for i, o in enumerate(outputs)]
        return Question(id="q", input="x", profile=items)

    lamp3 = get_task("LaMP-3")
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.1]
    flags = [True] * 5 + [False]
    q = question(lamp3, "score", ["5", "2", "3", "4", "3", "3"])
    assert marked_by_consensus(lamp3, q, scores, flags) == [2, 0, 1, 3, 4]    # median of 5 2 3 4 3: 3, most attended
    target = target_builder("marked-consensus")(lamp3, q, scores, flags, 40, tiny.tokenize, tiny.detokenize)
    assert target.startswith(compact_item(lamp3, q.profile[2]))
    q = question(SPEC, "tag", ["comedy", "drama", "drama", "comedy", "horror", "drama"])
    assert marked_by_consensus(SPEC, q, scores, flags)[0] == 0                 # a tie: the more attended
    assert marked_by_consensus(SPEC, q, scores, [True, True] + [False] * 4) == [0, 1]    # two items: by score
    assert ranking_of(target_builder("marked-consensus")) is marked_by_consensus
    assert ranking_of(None) is marked_by_score                                  # teacher summaries: by score


def test_finetune_trains_lora_and_mark_tokens_and_leaves_the_backbone_alone(tiny, synth_root):
    qs, golds = _questions(synth_root, 6)
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    prompts = [compression_prompt(SPEC, q, [True] * len(q.profile), 8, tiny) for q in qs]
    targets = [golds[q.id] for q in qs]
    tuned, losses = finetune(tiny, prompts, targets, FinetuneConfig(steps=6, batch_size=3), new_tokens=(MARK_START, MARK_END),
                             progress=False)
    assert len(losses) == 6 and all(l == l for l in losses)
    ids = tuned.tokenizer.convert_tokens_to_ids([MARK_START, MARK_END])
    assert len(set(ids)) == 2 and tuned.tokenize(MARK_START) == ids[:1]
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    assert tuned.model.get_input_embeddings().weight.shape[0] == len(tuned.tokenizer)



@pytest.mark.parametrize("variant", ["attention", "random", "all", "none"])
def test_attn_gs_answers_within_budget_and_a_second_run_hits_the_cache(tiny, synth_root, tmp_path, variant):
    qs, golds = _questions(synth_root, 5, "dev")
    compressor, _ = finetune(tiny, [compression_prompt(SPEC, q, [True] * len(q.profile), 6, tiny) for q in qs],
                             [golds[q.id] for q in qs], FinetuneConfig(steps=2, batch_size=2),
                             new_tokens=(MARK_START, MARK_END), progress=False)
    marker = Marker(tiny, MarkingConfig(layers="middle")) if variant == "attention" else None
    method = AttnGSMethod(marker, compressor, 6, variant, versions="test", cache_root=tmp_path)
    preds = method.predict(tiny, SPEC, qs)
    assert len(preds) == len(qs) and all(p.context_tokens <= 6 for p in preds)
    assert method.cache.misses == len(qs) and method.timings.users
    again = AttnGSMethod(marker, compressor, 6, variant, versions="test", cache_root=tmp_path)
    assert [p.output for p in again.predict(tiny, SPEC, qs)] == [p.output for p in preds]
    assert again.cache.hit_rate == 1.0
    other = AttnGSMethod(marker, compressor, 6, variant, versions="another-compressor", cache_root=tmp_path)
    other.predict(tiny, SPEC, qs[:1])
    assert other.cache.misses == 1
    assert method.name.endswith("@6")


def test_attn_gs_refuses_bad_settings(tiny):
    with pytest.raises(ValueError, match="needs a marker"):
        AttnGSMethod(None, tiny, 8, "attention")
    with pytest.raises(ValueError, match="budget"):
        AttnGSMethod(None, tiny, 0, "random")
    with pytest.raises(ValueError, match="variant"):
        AttnGSMethod(None, tiny, 8, "best")


@pytest.mark.parametrize("query", ["last", "input", "generated"])
def test_marker_fine_tuning_trains_only_the_marking_layers_query_and_key(tiny, synth_root, query):
    from components.lamp.history import history_examples

    qs, golds = _questions(synth_root, 12)
    pairs = [(q, golds[q.id]) for q in qs] + list(history_examples(SPEC, qs))[:40]
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    marker, losses = finetune_marker(tiny, SPEC, pairs, MarkingConfig(layers="0", query=query),
                                     FinetuneConfig(steps=4, batch_size=4, lr=1e-2), progress=False)
    assert len(losses) == 4 and all(l > 0 for l in losses)
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())     # the original stays
    changed = {k for k, v in marker.model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed
    if tiny.is_encoder_decoder:      # layer 0: the decoder's cross-attention (last) or the encoder's (input)
        where = "encoder.block.0.layer.0.SelfAttention" if query == "input" else "decoder.block.0.layer.1.EncDecAttention"
        assert changed <= {f"{where}.q.weight", f"{where}.k.weight"}
    else:
        assert changed <= {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.k_proj.weight"}
    assert not any(p.requires_grad for p in marker.model.parameters())
    scores = Marker(marker, MarkingConfig(layers="0", query=query)).score(SPEC, qs[:2])
    assert [len(s) for s in scores] == [len(q.profile) for q in qs[:2]]


@pytest.mark.parametrize("query", ["last", "input"])
def test_learned_temperature_sharpens_the_marking_layer_and_folds_into_its_weights(tiny, synth_root, query):
    """Inside the block one scale multiplies the marking layer's query and key projections;
    on exit it is folded into their weights: the same attention, plain parameters again."""
    qs, _ = _questions(synth_root, 3)
    prompts = [build_prompt(SPEC, q.input, q.profile[:4], 200, tiny.tokenize, tiny.detokenize) for q in qs]
    spans = [query_span(SPEC, q.input, p.text) for p, q in zip(prompts, qs)]
    config = MarkingConfig(layers="0", query=query)
    model = copy.deepcopy(tiny.model)
    marker = dataclasses.replace(tiny, model=model)

    def rows():
        with torch.no_grad(), capture_attention(model, "0", query, skip_rest=True) as modules:
            return item_attention(marker, prompts, modules, config, spans)

    keys = set(model.state_dict())
    before, weights = rows(), {k: v.clone() for k, v in model.state_dict().items()}
    with learned_temperature(model, config) as scales:
        assert len(scales) == 1 and scales[0].item() == 1.0
        assert all(torch.allclose(a, b) for a, b in zip(rows(), before))       # starts as the model
        with torch.no_grad():
            scales[0].fill_(20.0)
        sharpened = rows()
    assert set(model.state_dict()) == keys and not any("parametrizations" in n for n, _ in model.named_modules())
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(rows(), sharpened))        # folded exactly
    assert not all(torch.allclose(a, b, atol=1e-6, rtol=0) for a, b in zip(sharpened, before))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(weights[k], v)}
    assert changed and all(k.endswith((".q.weight", ".k.weight", "q_proj.weight", "k_proj.weight")) for k in changed)
    assert all(torch.allclose(model.state_dict()[k], 20.0 * weights[k]) for k in changed)


def test_learned_temperature_scales_projection_biases_too():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=32, attention_bias=True))
    attn = model.model.layers[1].self_attn
    with torch.no_grad():
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_()                 # initialised at zero
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with learned_temperature(model, MarkingConfig(layers="last")) as scales:
        with torch.no_grad():
            scales[0].fill_(2.0)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {f"model.layers.1.self_attn.{p}_proj.{w}" for p in "qk" for w in ("weight", "bias")}
    assert torch.allclose(attn.q_proj.bias, 2 * before["model.layers.1.self_attn.q_proj.bias"])


def test_captured_rows_over_query_positions_equal_the_eager_mean(tiny, synth_root):
    qs, _ = _questions(synth_root, 2)
    texts = [build_prompt(SPEC, q.input, q.profile[:3], 200, tiny.tokenize, tiny.detokenize).text for q in qs]
    enc = tiny.encode_batch(texts)
    model = tiny.model
    width = enc["input_ids"].shape[1]
    positions = torch.tensor([[width - 1, width - 3, width - 5], [width - 2, width - 4, -1]])
    dec = torch.zeros(2, 1, dtype=torch.long, device=tiny.device)
    extra = {"decoder_input_ids": dec} if tiny.is_encoder_decoder else {}
    with torch.no_grad(), capture_attention(model, "0", "input") as modules:
        modules[0]._persona_positions = positions
        model(**enc, **extra)
        row = modules[0]._persona_rows[-1]
    out = _eager_attentions(model, enc, extra)
    full = (out.encoder_attentions if tiny.is_encoder_decoder else out.attentions)[0]
    expected = torch.stack([full[0, :, [width - 1, width - 3, width - 5]].mean(1),
                            full[1, :, [width - 2, width - 4]].mean(1)])
    assert torch.allclose(row, expected, atol=1e-5)


def test_generated_query_reads_the_rows_that_generate_the_answer(tiny, synth_root):
    """Query `generated`: the mean attention row of the positions whose next token is an
    answer token (the final prompt position, then every answer token but the last), equal to
    the eager attention of the prompt followed by the answer, one prompt at a time."""
    qs, golds = _questions(synth_root, 3)
    prompts = [build_prompt(SPEC, q.input, q.profile[:3], 200, tiny.tokenize, tiny.detokenize) for q in qs]
    answers = [golds[qs[0].id], "", golds[qs[2].id] + " " + golds[qs[1].id]]    # lengths 1, 0 and 2+
    model, config = tiny.model, MarkingConfig(layers="0", query="generated", token_pooling="sum")
    with torch.no_grad(), capture_attention(model, "0", "generated", skip_rest=True) as modules:
        pooled = item_attention(tiny, prompts, modules, config, answers=answers)
        captured = modules[0]._persona_rows[-1]                                     # [B, heads, T]
    for b, (p, a) in enumerate(zip(prompts, answers)):
        enc = tiny.encode_batch([p.text])
        ans = tiny.tokenize(a)
        n = max(1, len(ans))
        if tiny.is_encoder_decoder:
            start = model.config.decoder_start_token_id or 0
            dec = torch.tensor([[start] + ans[:-1]], device=tiny.device)
            full = _eager_attentions(model, enc, {"decoder_input_ids": dec}).cross_attentions[0][0]
            expected, got = full[:, :n].mean(1), captured[b, :, :full.shape[-1]]
        else:
            ids = torch.cat([enc["input_ids"], torch.tensor([ans], dtype=torch.long, device=tiny.device)], 1)
            full = _eager_attentions(model, {"input_ids": ids}, {}).attentions[0][0]
            first = enc["input_ids"].shape[1] - 1
            expected, got = full[:, first:first + n].mean(1), captured[b, :, -ids.shape[1]:]
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(got.sum(-1), torch.ones(got.shape[0]), atol=1e-5)     # padding gets nothing
        assert len(pooled[b]) == len(p.item_spans) and float(pooled[b].sum()) <= 1 + 1e-5
    long_gold = " ".join([golds[qs[0].id]] * (tiny.max_length + 10))                # cut to the window
    with torch.no_grad(), capture_attention(model, "0", "generated", skip_rest=True) as modules:
        assert len(item_attention(tiny, prompts[:1], modules, config, answers=[long_gold])[0]) == 3
        if not tiny.is_encoder_decoder:
            assert modules[0]._persona_rows[-1].shape[-1] == tiny.max_length
    with pytest.raises(ValueError, match="needs the answers"), capture_attention(model, "0", "generated") as modules:
        item_attention(tiny, prompts, modules, config)


@pytest.fixture(scope="module")
def encoder_dir(synth_root, tmp_path_factory):
    from tests.tiny_models import tiny_encoder

    words = []
    for q in read_questions(synth_root / "LaMP-2" / "train_questions.json")[:40]:
        words.append(q.input)
        words += [v for p in q.profile for v in p.fields.values()]
    return tiny_encoder(words, tmp_path_factory.mktemp("encoder"))


def test_an_encoder_marks_from_its_own_attention_and_cannot_mark_from_generation(encoder_dir, synth_root, tiny):
    from components.methods.attn_gs.marking import load_white_box, marker_base

    encoder = marker_base(str(encoder_dir), tiny)
    assert type(encoder.model).__name__ == "BertModel"              # not an LM head with fresh weights
    assert marker_base("backbone", tiny) is tiny
    assert type(load_white_box(tiny.name).model) is type(tiny.model)   # LMs load as LMs
    qs, _ = _questions(synth_root, 3)
    texts = [build_prompt(SPEC, q.input, q.profile[:4], 120, encoder.tokenize, encoder.detokenize).text for q in qs]
    enc = encoder.encode_batch(texts)
    last = enc["attention_mask"].sum(1) - 1                                   # right padding: pads come last
    with torch.no_grad(), capture_attention(encoder.model, "1", query="input") as modules:
        modules[0]._persona_positions = last[:, None]
        encoder.model(**enc)
        row = modules[0]._persona_rows[-1]                                   # [B, heads, T]
    full = _eager_attentions(encoder.model, enc, {}).attentions[1]
    assert torch.allclose(row, full[torch.arange(len(texts)), :, last], atol=1e-5)
    for query in ("input", "last"):      # a batch (padded) scores as each question alone
        marker = Marker(encoder, MarkingConfig(layers="1", query=query))
        scores = marker.score(SPEC, qs)
        assert [len(s) for s in scores] == [len(q.profile) for q in qs] and all(min(s) > 0 for s in scores)
        alone = [marker.score(SPEC, [q])[0] for q in qs]
        assert all(torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-5) for a, b in zip(alone, scores))
    with pytest.raises(ValueError, match="'generated' needs a language model.*is an encoder"):
        Marker(encoder, MarkingConfig(query="generated"))


def test_fine_tuning_an_encoder_marker_trains_its_query_and_key_only(encoder_dir, synth_root, tiny):
    from components.lamp.history import history_examples
    from components.methods.attn_gs.marking import load_white_box

    encoder = load_white_box(str(encoder_dir))
    qs, golds = _questions(synth_root, 12)
    pairs = [(q, golds[q.id]) for q in qs] + list(history_examples(SPEC, qs))[:40]
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    marker, losses = finetune_marker(encoder, SPEC, pairs, MarkingConfig(layers="0", query="input"),
                                     FinetuneConfig(steps=3, batch_size=4, lr=1e-2), progress=False)
    changed = {k for k, v in marker.model.state_dict().items() if not torch.equal(before[k], v)}
    where = "encoder.layer.0.attention.self"
    assert changed and changed <= {f"{where}.{p}.{w}" for p in ("query", "key") for w in ("weight", "bias")}
    assert all(torch.equal(before[k], v) for k, v in encoder.model.state_dict().items())


def test_chunks_keep_whole_items_where_they_fit(tiny, synth_root):
    q = _questions(synth_root, 1)[0][0]
    small = copy.copy(tiny)
    small.tokenizer = copy.deepcopy(tiny.tokenizer)
    small.tokenizer.model_max_length = 110
    chunks = list(Marker(small, MarkingConfig())._chunks(SPEC, q, 106))
    assert len(chunks) > 1
    seen = [i for _, idx, _ in chunks for i in idx]
    assert sorted(seen) == list(range(len(q.profile)))                     # each item once
    for prompt, idx, _ in chunks:
        for i in idx:                                                      # not cut to a stub
            assert q.profile[i].fields["description"] in prompt.text


def test_bad_profiles_fall_back_clearly_and_large_budgets_stay_within_the_profile(tiny, synth_root, tmp_path):
    from components.lamp.records import ProfileItem, Question

    qs, golds = _questions(synth_root, 3, "dev")
    empty = Question(id="empty", input=qs[0].input, profile=[], user_id="nobody")
    run_on = dataclasses.replace(qs[1], id="run-on", profile=[ProfileItem(
        "r1", {"description": " ".join(["guku peza nagibi"] * 12), "tag": "comedy"}, "2020-01-01")])
    marker = Marker(tiny, MarkingConfig(layers="last", rule="top_k", top_k=2))
    scores = marker.score(SPEC, [empty, run_on])
    assert scores[0] == [] and mark(scores[0], marker.config) == []          # no items: no marks
    assert len(scores[1]) == 1 and scores[1][0] > 0 and mark(scores[1], marker.config) == [True]  # one sentence
    compressor, _ = finetune(tiny, [compression_prompt(SPEC, q, [True] * len(q.profile), 6, tiny) for q in qs],
                             [golds[q.id] for q in qs], FinetuneConfig(steps=1, batch_size=2),
                             new_tokens=(MARK_START, MARK_END), progress=False)
    full = max(tiny.count_tokens(" ".join(compact_item(SPEC, p) for p in q.profile)) for q in qs)
    assert 2 * full + 8 <= tiny.max_length // 2
    method = AttnGSMethod(marker, compressor, 2 * full + 8, "attention", versions="t", cache_root=tmp_path)
    preds = method.predict(tiny, SPEC, [empty, run_on, *qs])
    assert preds[0].context_tokens == 0                                     # the non-personalized prompt
    assert method.contexts(SPEC, [empty], tiny) == [""]
    assert method.cache.misses == len(qs) + 1, method.cache.misses
    assert all(p.context_tokens <= method.budget for p in preds)
    with pytest.raises(ValueError, match=f"budget {tiny.max_length} leaves too little of the compressor's"):
        AttnGSMethod(marker, compressor, tiny.max_length, "attention")


def test_attention_the_marker_cannot_read_fails_with_a_clear_message(tiny, synth_root):
    from components.methods.attn_gs.marking import AttentionUnreadable, attention_modules

    qs, _ = _questions(synth_root, 1)
    model = copy.deepcopy(tiny.model)
    outputs = 3 if tiny.is_encoder_decoder else 2       # T5's attention also returns its position bias
    for m in attention_modules(model, "last"):          # custom attention code that bypasses the interface
        m.forward = lambda hidden_states, *a, **k: (torch.zeros_like(hidden_states),) + (None,) * (outputs - 1)
    model.config._attn_implementation = "eager"         # and a model loaded with another kernel: switched back
    broken = type(tiny)(model, tiny.tokenizer, name="custom-attention")
    with pytest.raises(AttentionUnreadable, match="never called transformers' attention interface"):
        Marker(broken, MarkingConfig(layers="last")).score(SPEC, qs)
    assert model.config._attn_implementation == "eager"
    assert Marker(tiny, MarkingConfig(layers="last")).score(SPEC, qs)[0]    # the usual kernel is read as before
