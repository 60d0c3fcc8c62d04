import pytest
import torch

from components.backbone.lora import add_lora, attention_targets, count_trainable
from components.backbone.model import BackboneError, load_backbone, save_backbone


def test_loads_by_path_with_the_right_class(tiny):
    assert tiny.is_encoder_decoder == (tiny.model.config.model_type == "t5")
    assert tiny.tokenizer.pad_token_id is not None
    if not tiny.is_encoder_decoder:
        assert tiny.tokenizer.padding_side == "left"


def test_soft_tokens_equal_token_embeddings(tiny):
    """Prepending the embeddings of real tokens as soft tokens gives the same logits."""
    prefix_text, prompt_text = "comedy action", "description: guku"
    pre = torch.tensor([tiny.tokenize(prefix_text)], device=tiny.device)
    enc = tiny.encode_batch([prompt_text])
    full = tiny.encode_batch([prefix_text + " " + prompt_text])      # <bos> prefix prompt
    assert int(enc["input_ids"][0, 0]) == tiny.tokenizer.bos_token_id   # soft tokens go after it
    soft = tiny.model.get_input_embeddings()(pre)
    embeds, mask = tiny.embed_with_prefix(enc["input_ids"], enc["attention_mask"], soft)
    with torch.no_grad():
        if tiny.is_encoder_decoder:
            dec = torch.tensor([[tiny.model.config.decoder_start_token_id]], device=tiny.device)
            a = tiny.model(inputs_embeds=embeds, attention_mask=mask, decoder_input_ids=dec).logits
            b = tiny.model(**full, decoder_input_ids=dec).logits
        else:
            a = tiny.model(inputs_embeds=embeds, attention_mask=mask).logits[:, -1]
            b = tiny.model(**full).logits[:, -1]
    assert torch.allclose(a, b, atol=1e-5)


def test_soft_tokens_with_left_padding_match_unpadded(tiny):
    if tiny.is_encoder_decoder:
        pytest.skip("encoder-decoder batches pad on the right; covered above")
    prompts = ["description: guku nimasa zonu peve", "description: guku"]
    soft = torch.randn(2, 3, tiny.hidden_size) * 0.02
    out_batch = tiny.generate(prompts, 4, prefix=soft)
    out_single = [tiny.generate([p], 4, prefix=soft[i:i + 1])[0] for i, p in enumerate(prompts)]
    assert out_batch == out_single


def test_batched_generation_equals_one_at_a_time(tiny):
    prompts = ["description: guku nimasa", "review: a b c d e f", "description: zonu"]
    assert tiny.generate(prompts, 5) == [tiny.generate([p], 5)[0] for p in prompts]


def test_prompt_longer_than_limit_is_refused(tiny):
    with pytest.raises(BackboneError, match="more than the model's limit"):
        tiny.encode_batch(["guku " * (tiny.max_length + 5)])


def test_bad_model_paths(tmp_path):
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(tmp_path / "nope")
    from transformers import ViTConfig

    ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(BackboneError, match="not a causal or seq2seq"):
        load_backbone(tmp_path)


def test_tokenizer_without_pad_token(tiny, tmp_path):
    tok = tiny.tokenizer
    save_backbone(tiny, tmp_path / "m")
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tmp_path / "m")
    t.pad_token = None
    t.save_pretrained(tmp_path / "m")
    assert load_backbone(tmp_path / "m").tokenizer.pad_token == tok.eos_token


def test_lora_targets_real_module_names(tiny):
    names = attention_targets(tiny.model, "qkvo")
    expected = ["q", "k", "v", "o"] if tiny.is_encoder_decoder else ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert names == expected
    import copy

    peft_model = add_lora(copy.deepcopy(tiny.model), r=4, roles="qv")
    assert 0 < count_trainable(peft_model) < count_trainable(tiny.model) / 2
