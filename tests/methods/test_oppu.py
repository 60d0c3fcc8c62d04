"""OPPU: a fresh r=8 LoRA per user, trained on that user's data only."""

import pytest
import torch

from components.lamp.history import history_examples
from components.lamp.io import read_questions
from components.lamp.tasks import get_task
from components.methods.oppu.method import OppuConfig, OppuMethod


@pytest.fixture(scope="module")
def per_user(synth_root):
    spec = get_task("LaMP-2")
    qs = read_questions(synth_root / "LaMP-2" / "train_questions.json", spec)[:30]
    by_user = {}
    for q, g in history_examples(spec, qs):
        by_user.setdefault(q.user_key, []).append((q, g))
    return spec, dict(list(by_user.items())[:2])


def test_one_adapter_per_user_on_own_data(tiny, per_user):
    spec, data = per_user
    method = OppuMethod(tiny, OppuConfig(epochs=1, lr=5e-2, batch_size=4))
    base = {n: p.detach().clone() for n, p in tiny.model.named_parameters()}
    (u1, ex1), (u2, ex2) = data.items()
    method.fit_user(u1, ex1[:6])
    method.fit_user(u2, ex2[:6])
    a1, a2 = method.adapters[u1], method.adapters[u2]
    assert set(a1) == set(a2) and all(k.count("lora_") == 1 for k in a1)
    assert any(not torch.equal(a1[k], a2[k]) for k in a1)              # two different adapters
    assert method.per_user_params == sum(v.numel() for v in a1.values())
    assert all(torch.equal(p, base[n]) for n, p in tiny.model.named_parameters())   # backbone untouched
    # refitting u1 after u2 gives u1's adapter again: each fit starts fresh, nothing of u2 leaks in
    method.fit_user(u1, ex1[:6])
    assert all(torch.allclose(method.adapters[u1][k], a1[k], atol=1e-6) for k in a1)
    with pytest.raises(ValueError, match="that user's data only"):
        method.fit_user(u1, ex1[:2] + ex2[:2])
    preds = method.predict(None, spec, [q for q, _ in ex1[:2]] + [q for q, _ in ex2[:2]])
    assert len(preds) == 4 and all(isinstance(p.output, str) for p in preds)
