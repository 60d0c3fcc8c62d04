"""The reader: MiniLM's layers as a causal LM over a cut vocabulary, trained on recall."""

import json
import random
from pathlib import Path

import pytest
import torch

from components.backbone.checks import synthetic_vocabulary_split
from components.backbone.model import load_backbone
from components.backbone.reader import (ReaderConfig, RecallPrompts, build_reader, load_reader, main, pretrain_reader,
                                        save_reader, vocabulary_texts)
from components.lamp.tasks import TASKS


@pytest.fixture(scope="module")
def reader():
    return build_reader(layers=1)


def test_the_cut_vocabulary_keeps_every_word_the_demo_writes_whole(reader):
    model, tokenizer = reader
    assert len(tokenizer) == model.config.vocab_size < 2000                 # cut from MiniLM's 30,522
    tokenize = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert synthetic_vocabulary_split(tokenize, "reader") == 1.0             # one token per synthetic word
    unk = tokenizer.unk_token_id
    for text in vocabulary_texts():
        assert unk not in tokenize(text), text
    for spec in TASKS.values():                                             # every label is readable
        assert all(unk not in tokenize(label) for label in spec.labels)
    assert unk not in tokenize("zyxwv quokka")                               # other words spell out
    assert tokenizer("a b")["input_ids"][0] == tokenizer.bos_token_id        # prompts start with the BOS
    for spec in TASKS.values():                                             # labels decode as written
        for label in spec.labels:
            assert tokenizer.decode(tokenize(label)) == label
    assert tokenizer.decode(tokenize("a - b")) == "a - b"                   # a lone hyphen stays a token


def test_left_padding_does_not_change_what_the_reader_computes(reader):
    """BERT's positions are absolute: a left-padded row gives the same logits as alone
    only with positions counted from its first real token."""
    from components.backbone.model import position_ids

    model, tokenizer = reader
    model.eval()
    enc = tokenizer(["orbit planet rocket is", "orbit"], padding=True, return_tensors="pt")
    alone = model(**tokenizer(["orbit"], return_tensors="pt")).logits[0, -1]
    padded = model(**enc, position_ids=position_ids(enc["attention_mask"])).logits[1, -1]
    assert torch.allclose(alone, padded, atol=1e-4)


def test_a_saved_reader_loads_by_path_like_any_checkpoint(reader, tmp_path):
    model, tokenizer = reader
    save_reader(model, tokenizer, {"note": "untrained"}, tmp_path / "r")
    backbone = load_backbone(tmp_path / "r", dtype="float32")
    assert backbone.model.config.is_decoder and not backbone.is_encoder_decoder
    head = backbone.model.get_output_embeddings()
    assert head.bias.shape[0] == head.weight.shape[0] == len(backbone.tokenizer)
    out = backbone.generate(["the tag for the movie: \"orbit planet\" is \"", "rocket"], 3)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    again, tok = load_reader(ReaderConfig(path=str(tmp_path / "r")))
    assert next(again.parameters()).dtype == torch.float32 and len(tok) == len(tokenizer)
    with pytest.raises(FileNotFoundError, match="python -m components.backbone.reader"):
        load_reader(ReaderConfig(path=str(tmp_path / "missing")))


def test_recall_prompts_answer_with_the_label_of_the_item_on_the_query_theme(reader):
    _, tokenizer = reader
    cfg = ReaderConfig(items=4, queries=3, labels=6, words=(5, 5), theme_words=3)
    prompts = RecallPrompts(cfg, tokenizer)
    ids, targets = prompts.example(random.Random(0), exact=False, queries=3)
    answers = [(i, t) for i, t in enumerate(targets) if t != -100]
    assert len(answers) == 3 and all(ids[i] == t for i, t in answers)       # loss on the answers only
    words = tokenizer.convert_ids_to_tokens(ids)
    theme_of = {w: t for t, theme in enumerate(prompts.themes) for w in theme}
    items = [words[1 + 6 * j: 7 + 6 * j] for j in range(4)]                  # [CLS], then `label w1 .. w5` x 4
    assert all(item[0] in prompts.labels for item in items)                  # label first
    assert len({item[0] for item in items}) == 4                             # each item its own label
    for n, (at, answer) in enumerate(answers):
        query = words[at - 5: at]
        theme = {theme_of[w] for w in query if w in theme_of}
        (match,) = [item for item in items if {theme_of[w] for w in item[1:] if w in theme_of} == theme]
        assert tokenizer.convert_ids_to_tokens([answer]) == [match[0]]      # the matching item's label
        assert at == 25 + 7 * n + 5 and ids[at + 1] == prompts.sep


def test_pretraining_runs_both_phases_and_reports_held_out_recall():
    cfg = ReaderConfig(layers=1, orders=("label-first", "mixed"), exact_steps=(2, 1), fuzzy_steps=(2, 1),
                       batch_size=4, items=4, queries=2, labels=4, warmup_steps=1)
    model, tokenizer, card = pretrain_reader(cfg, progress=False)
    assert len(card["loss_curve"]) == 6 and all(loss > 0 for loss in card["loss_curve"])
    assert card["held_out_recall"].keys() == {"label-first", "label-last"} and card["chance"] == 0.25
    assert all(r.keys() == {"exact", "fuzzy"} for r in card["held_out_recall"].values())
    assert card["config"]["exact_steps"] == (2, 1) and not model.training


def test_label_last_prompts_put_the_label_after_its_key(reader):
    _, tokenizer = reader
    prompts = RecallPrompts(ReaderConfig(items=3, queries=1, labels=3), tokenizer)
    ids, _ = prompts.example(random.Random(1), exact=True, queries=1, order="label-last")
    words = tokenizer.convert_ids_to_tokens(ids)
    assert [w in prompts.labels for w in words[1:7]] == [False, True] * 3      # `key label` x 3


def test_stages_must_line_up(tmp_path):
    import yaml

    from components.config import load_profile

    params = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    params["profiles"]["demo"]["backbone"]["reader"]["exact_steps"] = [80]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="one entry per stage"):
        load_profile("demo", tmp_path / "params.yaml")


def test_command_line_overrides_are_validated_like_params_yaml():
    from components.config import ReaderSettings, with_overrides

    base = ReaderSettings()
    cfg = with_overrides(base, ["layout_steps=300", 'tasks=["LaMP-3"]', "layout_items=[4, 9]"], "backbone.reader")
    assert (cfg.layout_steps, cfg.tasks, cfg.layout_items, cfg.lr) == ((300,), ("LaMP-3",), (4, 9), base.lr)
    assert cfg.to_config().layout_items == (4, 9)
    with pytest.raises(ValueError, match="backbone.reader.*layout_stepz"):
        with_overrides(base, ["layout_stepz=3"], "backbone.reader")
    with pytest.raises(ValueError, match="backbone.reader.*layout_drift"):
        with_overrides(base, ["layout_drift=2"], "backbone.reader")
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        with_overrides(base, ["layout_steps"], "backbone.reader")


def test_the_task_stage_trains_on_users_of_another_seed_and_the_card_says_so(tmp_path):
    from dataclasses import replace

    from components.backbone.embedded import EmbeddedConfig
    from components.lamp.synthetic import SynthConfig

    cfg = ReaderConfig(layers=1, orders=("label-first",), exact_steps=(1,), fuzzy_steps=(1,), batch_size=2,
                       task_steps=2, tasks=("LaMP-2", "LaMP-3"))
    synth = SynthConfig(users=8, profile_min=4, profile_max=8)
    adapt = EmbeddedConfig(max_length=256, batch_size=2, warmup_steps=1)
    with pytest.raises(ValueError, match="demo's own users"):
        pretrain_reader(replace(cfg, data_seed=synth.seed), False, adapt, synth)
    model, tokenizer, card = pretrain_reader(cfg, False, adapt, synth)
    stage = card["task_stage"]
    assert stage["tasks"] == ["LaMP-2", "LaMP-3"] and stage["data_seed"] == 1000 and stage["questions"] > 0
    assert len(stage["loss_curve"]) == 2 and all(loss > 0 for loss in stage["loss_curve"])
    save_reader(model, tokenizer, card, tmp_path / "r")
    readme = (tmp_path / "r" / "README.md").read_text()
    assert "seed 1000" in readme and "sha256" in readme and "python -m components.backbone.reader" in readme


def test_layout_prompts_ask_for_the_fresh_label_of_a_shown_theme_in_the_task_template(reader):
    from components.backbone.reader import LayoutPrompts
    from components.lamp.tasks import get_task

    _, tokenizer = reader
    lamp2, lamp3 = get_task("LaMP-2"), get_task("LaMP-3")
    prompts = LayoutPrompts(ReaderConfig(), tokenizer, [lamp2, lamp3])
    rng = random.Random(0)
    for spec, repeats in ((lamp2, True), (lamp3, False)):
        for _ in range(20):
            ids, targets, _ = prompts.example(rng, spec)
            text = tokenizer.decode(ids)
            assert spec.input_template.split("{")[0].strip()[:40].lower() in text.lower()   # LaMP's instruction
            first = len(targets) - 1
            while targets[first - 1] != -100:
                first -= 1
            answer = tokenizer.decode(ids[first:-1]).strip()
            assert answer in spec.labels and ids[-1] == tokenizer.eos_token_id
            assert answer.replace(" ", "") in text[:text.rfind(answer)].replace(" ", "")   # shown before
            asked = [t for t in targets[:first] if t != -100]
            assert bool(asked) == repeats                         # LaMP-2: repeated labels are questions too
    with pytest.raises(ValueError, match="LaMP-5"):
        LayoutPrompts(ReaderConfig(), tokenizer, [get_task("LaMP-5")])


def test_layout_drift_gives_the_asked_theme_a_new_label_from_one_of_its_later_items_on():
    from components.backbone.reader import LayoutPrompts
    from components.lamp.tasks import get_task

    lamp2, rng = get_task("LaMP-2"), random.Random(0)
    shown, labels = [0, 1, 0, 0, 1, 0], ["comedy", "action", "comedy", "comedy", "action", "comedy"]
    cuts = set()
    for _ in range(50):
        out = LayoutPrompts._drift(rng, lamp2, shown, 0, labels)
        changed = [i for i, (old, new) in enumerate(zip(labels, out)) if old != new]
        assert changed and changed == [i for i in (2, 3, 5) if i >= changed[0]]   # a later item of theme 0 on
        assert len({out[i] for i in changed}) == 1 and out[changed[0]] not in labels   # one label not in use
        cuts.add(changed[0])
    assert cuts == {2, 3, 5}
    assert LayoutPrompts._drift(rng, lamp2, [0, 1], 0, ["comedy", "action"]) == ["comedy", "action"]   # shown once


def test_questions_on_one_profile_read_as_prompts_of_their_own(reader):
    from components.backbone.reader import LayoutPrompts, tree_batch
    from components.lamp.tasks import get_task

    model, tokenizer = reader
    model.eval()
    lamp3 = get_task("LaMP-3")
    prompts = LayoutPrompts(ReaderConfig(), tokenizer, [lamp3])
    examples = [prompts.example(random.Random(seed), lamp3, questions=3) for seed in range(2)]
    batch = tree_batch(examples, tokenizer.pad_token_id)
    with torch.no_grad():
        packed = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        for row, (ids, targets, blocks) in enumerate(examples):
            assert sorted(set(blocks)) == [0, 1, 2, 3]
            profile = [i for i, b in zip(ids, blocks) if b == 0]
            for q in (1, 2, 3):
                block = [i for i, b in zip(ids, blocks) if b == q]
                answer = [t for t, b in zip(targets, blocks) if b == q and t != -100]
                assert tokenizer.decode(answer[:-1]).strip() in lamp3.labels
                alone = model(input_ids=torch.tensor([profile + block])).logits[0, len(profile):]
                where = [i for i, b in enumerate(blocks) if b == q]
                torch.testing.assert_close(packed[row, where], alone, atol=1e-4, rtol=1e-4)


def test_the_layout_stages_train_in_turn_and_report_held_out_answers_of_every_task():
    cfg = ReaderConfig(layers=1, orders=("label-first",), exact_steps=(1,), fuzzy_steps=(1,), batch_size=2,
                       layout_steps=(2, 3), layout_tasks=(("LaMP-3",), ("LaMP-2", "LaMP-3")), layout_batch_size=2,
                       layout_items=(3, 5))
    _, _, card = pretrain_reader(cfg, progress=False)
    first, second = card["layout_stages"]
    assert (first["tasks"], first["steps"]) == (["LaMP-3"], 2)
    assert (second["tasks"], second["steps"]) == (["LaMP-2", "LaMP-3"], 3)
    for stage in (first, second):
        assert len(stage["loss_curve"]) == stage["steps"] and all(v > 0 for v in stage["loss_curve"])
        assert stage["held_out"].keys() == {"LaMP-2", "LaMP-3"} and all(0 <= v <= 1 for v in stage["held_out"].values())


def test_layout_stages_are_checked_against_the_tasks_and_a_number_is_one_stage():
    from components.config import ReaderSettings

    assert ReaderSettings(layout_steps=300).layout_steps == (300,) and ReaderSettings(layout_steps=0).layout_steps == ()
    with pytest.raises(ValueError, match="one entry per layout stage"):
        ReaderSettings(layout_steps=[300, 600], layout_tasks=[["LaMP-3"]])
    with pytest.raises(ValueError, match="LaMP-5.*not among tasks"):
        ReaderSettings(layout_steps=[300], layout_tasks=[["LaMP-5"]])


def test_a_reader_built_on_another_keeps_its_stages_and_the_commands_that_built_it(tmp_path):
    cfg = ReaderConfig(layers=1, orders=("label-first",), exact_steps=(1,), fuzzy_steps=(1,), batch_size=2,
                       layout_steps=(1,), layout_batch_size=2, layout_items=(3, 5))
    model, tokenizer, card = pretrain_reader(cfg, progress=False)
    card["commands"] = ["python -m components.backbone.reader --out FIRST"]
    save_reader(model, tokenizer, card, tmp_path / "first")
    repo = Path(__file__).resolve().parents[2]
    main(["--init", str(tmp_path / "first"), "--out", str(tmp_path / "second"), "--repo", str(repo),
          "--set", "layout_steps=2", "layout_batch_size=2", 'layout_tasks=[["LaMP-3"]]'])
    second = json.loads((tmp_path / "second" / "reader.json").read_text())
    assert [(s["steps"], s["tasks"]) for s in second["layout_stages"]] == [(1, ["LaMP-2", "LaMP-3"]), (2, ["LaMP-3"])]
    assert second["commands"][0] == "python -m components.backbone.reader --out FIRST"
    assert second["commands"][1].startswith("python -m components.backbone.reader --init ")
    assert "'layout_tasks=[[\"LaMP-3\"]]'" in second["commands"][1]
    readme = (tmp_path / "second" / "README.md").read_text()
    assert "Layout stage 2: 2 steps" in readme and "--out FIRST" in readme
