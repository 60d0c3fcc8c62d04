"""TAP-PER over a frozen backbone: record features and the joint training of one
population's model (P_u, record prefix, penalties, bridge LoRA); data parallel under
`torchrun` (`components.distributed`)."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from components.backbone.model import Backbone, prefix_loss
from components.lamp.records import ProfileItem, Question, parse_date
from components.lamp.tasks import TaskSpec
from components.methods.tap_per.model import TapPerConfig, TapPerPrefix
from components.methods.weak_labels import attention_label_loss, gold_output_mask
from components.storage.checkpoints import Checkpoints

log = logging.getLogger(__name__)
MAX_TEXT_TOKENS = 128          # queries and records are truncated to 128 tokens (reference code)
STANDARDISATION_SAMPLE = 1024  # training examples whose z give the standardisation statistics


@dataclass(frozen=True)
class TapPerTrainConfig:
    max_records: int = 32
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 16
    attention_supervision: float = 0.0   # weight of -log(alpha mass on records whose past output is
                                         # the gold one); 0: the reference's answer loss alone
    seed: int = 0


def record_text(item: ProfileItem) -> str:
    """A history record as the record prefix sees it: all its fields, past output included."""
    return " ".join(v for k, v in sorted(item.fields.items()))


def record_embeddings(backbone: Backbone, items: Sequence[ProfileItem], pooling: str = "tokens") -> torch.Tensor:
    """[N, d] z_h of history records. "tokens": the mean over the record's tokens (the
    reference); "fields": the mean over its fields of each field's token mean, so that a
    one-word past output (a tag, a score) weighs as much as the text beside it."""
    if pooling == "tokens":
        return mean_input_embedding(backbone, [record_text(p) for p in items])
    if pooling != "fields":
        raise ValueError(f"record_pooling must be 'tokens' or 'fields', not {pooling!r}")
    fields = [[v for _, v in sorted(p.fields.items())] for p in items]
    flat = mean_input_embedding(backbone, [v for f in fields for v in f])
    out, at = torch.zeros(len(items), flat.shape[1]), 0
    for i, f in enumerate(fields):
        if f:
            out[i] = flat[at:at + len(f)].mean(0)
        at += len(f)
    return out


@torch.no_grad()
def mean_input_embedding(backbone: Backbone, texts: Sequence[str]) -> torch.Tensor:
    """[N, d] mean of the frozen backbone's *input* token embeddings (not contextual)."""
    emb = backbone.model.get_input_embeddings()
    out = torch.zeros(len(texts), emb.weight.shape[1])
    for i, text in enumerate(texts):
        ids = backbone.tokenize(text)[:MAX_TEXT_TOKENS] or [backbone.tokenizer.pad_token_id]
        out[i] = emb(torch.tensor(ids, device=emb.weight.device)).mean(0).float().cpu()
    return out


def features(backbone: Backbone, spec: TaskSpec, questions: Sequence[Question], max_records: int,
             cfg: TapPerConfig):
    """`record_features` as the model `cfg` reads them (pooling, and keys without the output)."""
    return record_features(backbone, questions, max_records, cfg.record_pooling,
                           key_exclude=spec.label_field if cfg.record_keys == "text" else None)


def record_features(backbone: Backbone, questions: Sequence[Question], max_records: int, pooling: str = "tokens",
                    key_exclude: str | None = None):
    """z_q [B,d], z_h [B,K,d], days [B,K], order [B,K], mask [B,K] for a batch of questions,
    and with `key_exclude` (a field name, the past output) a sixth, z_k [B,K,d]: the mean
    token embedding of each record without that field, which the relevance then reads.

    The K most recent records are kept; records or queries without dates get days = 0
    (the order penalty still applies)."""
    b, d = len(questions), backbone.hidden_size
    z_q = mean_input_embedding(backbone, [q.input for q in questions])
    z_h = torch.zeros(b, max_records, d)
    days = torch.zeros(b, max_records)
    order = torch.zeros(b, max_records)
    mask = torch.zeros(b, max_records, dtype=torch.bool)
    z_k = torch.zeros(b, max_records, d) if key_exclude is not None else None
    undated = future = 0
    for i, q in enumerate(questions):
        recent = q.profile[-max_records:]
        if not recent:
            continue
        z_h[i, : len(recent)] = record_embeddings(backbone, recent, pooling)
        if z_k is not None:
            z_k[i, : len(recent)] = mean_input_embedding(
                backbone, [" ".join(v for k, v in sorted(p.fields.items()) if k != key_exclude) for p in recent])
        qdate = parse_date(q.date) if q.date else None
        for j, item in enumerate(recent):
            if qdate is not None and item.date:
                gap = (qdate - parse_date(item.date)).days
                future += gap < 0
                days[i, j] = max(gap, 0)
            else:
                undated += 1
            order[i, j] = len(recent) - j
        mask[i, : len(recent)] = True
    _warn_once("undated", undated, "records (or their questions) without a date: the temporal penalty "
                                   "sees 0 days for them, only the order penalty applies")
    _warn_once("future", future, "records dated after their question: counted as 0 days old")
    return (z_q, z_h, days, order, mask) if z_k is None else (z_q, z_h, days, order, mask, z_k)


_WARNED: set[str] = set()


def _warn_once(kind: str, count: int, what: str) -> None:
    """One warning per kind and process (features are built every training step)."""
    if count and kind not in _WARNED:
        _WARNED.add(kind)
        log.warning("TAP-PER: %d %s (further cases are not reported)", count, what)


def attention_loss(prefix: TapPerPrefix, spec: TaskSpec, batch: Sequence[tuple[Question, str]], feats,
                   max_records: int) -> torch.Tensor:
    """The weak attention label (`components.methods.weak_labels`) on the record prefix."""
    target = gold_output_mask(spec, [q.profile[-max_records:] for q, _ in batch], [g for _, g in batch],
                              feats[4].shape[1])
    return attention_label_loss(prefix.attention(*feats), target)


def attach_bridge(backbone: Backbone, cfg: TapPerConfig) -> Backbone:
    """Freeze the backbone and add the shared bridge LoRA on its real attention projections."""
    from components.backbone.lora import add_lora

    for p in backbone.model.parameters():
        p.requires_grad_(False)
    peft_model = add_lora(backbone.model, r=cfg.bridge_rank, alpha=2 * cfg.bridge_rank, roles=cfg.bridge_roles)
    return Backbone(peft_model, backbone.tokenizer, name=backbone.name)


def train_population(backbone: Backbone, spec: TaskSpec, examples: Sequence[tuple[Question, str]],
                     users: Sequence[str], cfg: TapPerConfig = TapPerConfig(),
                     tcfg: TapPerTrainConfig = TapPerTrainConfig(), progress: bool = False,
                     prefix: TapPerPrefix | None = None, checkpoints: Checkpoints | None = None):
    """Train P_u, the record prefix, the penalties and the bridge jointly on `examples`
    (question with its visible history, gold). `backbone` is taken over (the bridge LoRA is
    injected into it). With `checkpoints`, a killed training resumes at the step it last
    saved, to the same weights. Returns (bridged backbone, prefix module, user index, losses)."""
    from tqdm.auto import tqdm

    from components import distributed

    ctx = distributed.init()
    torch.manual_seed(tcfg.seed)
    index = {u: i for i, u in enumerate(users)}
    bridged = attach_bridge(backbone, cfg)
    if prefix is None:
        prefix = TapPerPrefix(backbone.hidden_size, len(users), cfg)
        sample = random.Random(tcfg.seed).sample(list(examples), min(len(examples), STANDARDISATION_SAMPLE))
        z_q, z_h, _, _, mask, *z_k = features(backbone, spec, [q for q, _ in sample], tcfg.max_records, cfg)
        prefix.fit_standardisation(z_q, z_h, mask, *z_k)   # same on every rank: same seed, same sample
    distributed.broadcast_parameters(prefix, ctx)
    shared = [p for p in bridged.model.parameters() if p.requires_grad]
    shared += [p for n, p in prefix.named_parameters() if not n.startswith("user_prefix")]
    # no weight decay on P_u: decoupled decay would shrink the rows of users absent from a batch
    opt = torch.optim.AdamW([{"params": shared, "weight_decay": 0.01},
                             {"params": [prefix.user_prefix.weight], "weight_decay": 0.0}], lr=tcfg.lr)
    rng = random.Random(tcfg.seed)
    perm = list(range(len(examples)))
    bridged.model.train()
    losses = []
    trainable = {n: p for n, p in bridged.model.named_parameters() if p.requires_grad}
    resume = checkpoints.restore() if checkpoints is not None else None
    first_epoch, first_start = 0, 0
    if resume is not None:
        prefix.load_state_dict(resume["prefix"])
        with torch.no_grad():
            for n, p in trainable.items():
                p.copy_(resume["bridge"][n])
        opt.load_state_dict(resume["optimizer"])
        rng.setstate(resume["rng"])
        torch.set_rng_state(resume["torch_rng"])
        perm, losses, first_epoch, first_start = resume["perm"], resume["losses"], resume["epoch"], resume["start"]
    for epoch in range(first_epoch, tcfg.epochs):
        resuming = resume is not None and epoch == first_epoch     # perm and rng as saved mid-epoch
        if not resuming:
            rng.shuffle(perm)
        for start in tqdm(range(first_start if resuming else 0, len(perm), tcfg.batch_size), disable=not progress or not ctx.is_main,
                          desc="tap-per"):
            batch = distributed.shard([examples[i] for i in perm[start:start + tcfg.batch_size]], ctx)
            qs = [q for q, _ in batch]
            feats = features(backbone, spec, qs, tcfg.max_records, cfg)
            rows = torch.tensor([index[q.user_key] for q in qs])
            p = prefix(rows, *feats)
            loss = prefix_loss(bridged, p, [q.input for q in qs], [g for _, g in batch])
            if tcfg.attention_supervision > 0 and cfg.use_record_prefix:
                loss = loss + tcfg.attention_supervision * attention_loss(prefix, spec, batch, feats,
                                                                          tcfg.max_records)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.reduce_gradients(shared + [prefix.user_prefix.weight], ctx)
            opt.step()
            losses.append(distributed.all_sum(float(loss.detach()), ctx) / ctx.world_size)
            if checkpoints is not None:
                checkpoints.save(len(losses), lambda: {
                    "prefix": prefix.state_dict(), "bridge": {n: p.detach().clone() for n, p in trainable.items()},
                    "optimizer": opt.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                    "perm": list(perm), "losses": list(losses), "epoch": epoch, "start": start + tcfg.batch_size})
    bridged.model.eval()
    return bridged, prefix, index, losses
