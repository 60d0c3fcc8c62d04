"""The weak attention label shared by TAP-PER and PPlug."""

import math

import torch

from components.lamp.records import ProfileItem
from components.lamp.tasks import get_task
from components.methods.weak_labels import attention_label_loss, gold_output_mask, lexical_top_mask


def _item(i, tag):
    return ProfileItem(id=str(i), fields={"description": f"text {i}", "tag": tag})


def test_items_with_the_gold_output_are_marked_in_attention_order():
    spec = get_task("LaMP-2")
    histories = [[_item(1, "comedy"), _item(2, "classic"), _item(3, "comedy")], [_item(4, "dark comedy")], []]
    mask = gold_output_mask(spec, histories, ["comedy", "comedy", "comedy"], width=4)
    assert mask.tolist() == [[True, False, True, False], [False] * 4, [False] * 4]


def test_tasks_whose_items_hold_no_output_get_no_label():
    spec = get_task("LaMP-1")
    assert spec.label_field is None
    assert not gold_output_mask(spec, [[_item(1, "[1]")]], ["[1]"], width=2).any()


def test_loss_is_minus_log_mass_over_labelled_examples_only():
    weights = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([[True, False, True], [False, False, False], [True, False, False]])
    loss = attention_label_loss(weights, target)
    assert math.isclose(float(loss), (-math.log(0.75) - math.log(1.0)) / 2, rel_tol=1e-6)
    assert float(attention_label_loss(weights, torch.zeros_like(target))) == 0.0


def test_lexical_top_keeps_the_items_bm25_ranks_highest_in_attention_order():
    from components.lamp.records import Question

    spec = get_task("LaMP-2")
    profile = [ProfileItem(str(i), {"description": d, "tag": "comedy"}) for i, d in
               enumerate(["zorba sea", "zorba sea zorba", "rain spain", "plain train", "cold night", "blue sky"])]
    q = Question("q1", "Which tag does this movie relate to among the following tags? Just answer with the tag "
                       "name without further explanation. tags: [comedy] description: zorba sea", profile)
    shown = [profile[5], profile[1], profile[2], profile[0]]     # a subset, in the attention's order
    mask = lexical_top_mask(spec, [q], [shown], width=5, top=2)
    assert mask.tolist() == [[False, True, False, True, False]]  # the two items that share the input's words
    assert (gold_output_mask(spec, [shown], ["drama"], 5) & mask).sum() == 0
