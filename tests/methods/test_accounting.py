"""Parameter accounting reproduces the published TAP-PER / OPPU figures from the modules."""

import pytest
import torch

from components.methods.accounting import account, meta_llama
from components.methods.tap_per.model import TapPerConfig, TapPerPrefix


@pytest.fixture(scope="module")
def llama2_rows():
    return {r.method: r for r in account(meta_llama("llama-2-7b"), "llama-2-7b")}


def test_published_tap_per_vs_oppu(llama2_rows):
    tap, oppu = llama2_rows["tap-per"], llama2_rows["oppu"]
    assert tap.per_user == 32_768
    assert oppu.per_user == 4_194_304
    assert oppu.per_user / tap.per_user == 128
    share = tap.total(1000) / oppu.total(1000)
    assert 0.055 < share < 0.058            # "about 5.7 % of OPPU's total at 1,000 users"
    assert llama2_rows["pplug"].per_user == 0


def test_pplug_counts_its_bridge_as_shared_and_keeps_nothing_per_user():
    model = meta_llama("llama-2-7b")
    plain = {r.method: r for r in account(model, "llama-2-7b")}["pplug"]
    bridged = {r.method: r for r in account(model, "llama-2-7b", pplug_bridge_rank=4)}["pplug"]
    assert bridged.per_user == plain.per_user == 0
    assert bridged.shared - plain.shared == 32 * 3 * 4 * (4096 + 4096)     # r=4 on q, k, v of 32 layers


def test_tap_per_rows_follow_the_settings_given():
    model = meta_llama("llama-2-7b")
    longer = account(model, "llama-2-7b", tap_per=TapPerConfig(prefix_length=16, bridge_rank=8))[0]
    default = account(model, "llama-2-7b")[0]
    assert longer.per_user == 2 * default.per_user == 16 * 4096
    assert "r=8" in longer.note and longer.shared > default.shared


def test_llama31_shared_matches_reference_budget():
    tap = account(meta_llama("llama-3.1-8b"), "llama-3.1-8b")[0]
    assert tap.shared == pytest.approx(203.7e6, rel=0.002)   # 67.1 M + 134.3 M + 2.36 M bridge


def test_prefix_shapes_and_empty_history():
    torch.manual_seed(0)
    m = TapPerPrefix(hidden_size=16, num_users=3, cfg=TapPerConfig(prefix_length=4))
    z_q, z_h = torch.randn(2, 16), torch.randn(2, 5, 16)
    days, order = torch.rand(2, 5) * 30, torch.arange(5.0).expand(2, 5)
    mask = torch.tensor([[True] * 5, [False] * 5])           # the second user has no history
    p = m(torch.tensor([0, 2]), z_q, z_h, days, order, mask)
    assert p.shape == (2, 4, 16) and torch.isfinite(p).all()
    pq = m.record_prefix(z_q, z_h, days, order, mask)
    assert torch.allclose(pq[1], m.project.bias.view(4, 16))  # no records: only the projection bias
