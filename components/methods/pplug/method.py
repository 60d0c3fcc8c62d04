"""PPlug behind the common `Method` interface, its training, and its on-disk form.

A population model is a directory:
    embedder.safetensors   projector, instruction embedding and its MLP, empty-history vector,
                           token norm (the input encoder's weights are saved separately)
    input_encoder/         the fine-tuned input encoder and its tokenizer (`save_pretrained`)
    pplug.json             the PPlug config and the history encoder it was trained with

PPlug keeps no per-user state: a user is their cached item vectors, so a user never seen
in training is personalized from their history with no training at all.
"""

from __future__ import annotations

import copy
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from components.backbone.model import Backbone, prefix_loss
from components.lamp.prompts import build_prompt
from components.lamp.records import ProfileItem, Question
from components.lamp.tasks import TaskSpec
from components.methods.base import Method, Prediction
from components.methods.pplug.model import PPlugConfig, PPlugEmbedder, token_norm
from components.methods.weak_labels import attention_label_loss, gold_output_mask, lexical_top_mask
from components.retrieval.cache import VectorCache, default_cache_root
from components.retrieval.encoder import SentenceEncoder
from components.storage.files import write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PPlugTrainConfig:
    epochs: int = 2
    lr: float = 1e-3                 # projectors and instruction embedding (trained from scratch)
    encoder_lr: float = 5e-5         # the input encoder (fine-tuned from pretrained weights)
    batch_size: int = 16
    history_deletion: int = 0        # extra copies per example with 1-50% of its history deleted
    attention_supervision: float = 0.0   # weight of -log(aggregator weight on the history items whose
                                         # past output is the gold one); 0: the paper's loss alone
    attention_labels: str = "label"      # label | label+bm25: only those among the top-4 BM25 matches
    seed: int = 0


def history_text(spec: TaskSpec, item: ProfileItem, with_output: bool) -> str:
    """The text of a history item as the history encoder reads it (LaMP's retrieval text,
    plus the user's past output for that item when `with_output`)."""
    text = spec.item_text(item.fields)
    if with_output and spec.label_field and spec.label_field not in spec.text_fields:
        text = f"{text} {spec.label_field}: {item.fields.get(spec.label_field, '')}".strip()
    return text


def keyed(cfg) -> bool:
    """Whether the weights read separate keys (the items without their past output)."""
    return cfg.history_keys == "text" and cfg.use_attention


def encoded_texts(spec: TaskSpec, items: Sequence[ProfileItem], cfg) -> list[str]:
    """Every string PPlug encodes for these items (`cfg`: a PPlugConfig or the params.yaml
    settings): each item as the history encoder reads it, then its key when the weights read keys."""
    texts = [history_text(spec, p, cfg.history_with_output) for p in items]
    return texts + ([history_text(spec, p, False) for p in items] if keyed(cfg) else [])


def recent(items: Sequence[ProfileItem], n: int) -> list[ProfileItem]:
    """The n most recent items (by date when every item has one, else the last n in file order)."""
    ordered = sorted(items, key=lambda p: p.date) if items and all(p.date for p in items) else list(items)
    return ordered[-n:] if n else []


class PPlugMethod(Method):
    name = "pplug"
    per_user_params = 0

    def __init__(self, backbone: Backbone, history_encoder: SentenceEncoder, embedder: PPlugEmbedder,
                 cache: VectorCache | None = None):
        self.backbone, self.history_encoder, self.embedder = backbone, history_encoder, embedder
        self.cfg = embedder.cfg
        self.cache = cache if cache is not None else VectorCache(default_cache_root(), history_encoder.fingerprint)
        if self.cfg.retrieve_top1:
            self.name = "pplug-retrieval"

    @classmethod
    def create(cls, backbone: Backbone, history_encoder: SentenceEncoder, cfg: PPlugConfig = PPlugConfig(),
               cache: VectorCache | None = None) -> "PPlugMethod":
        """A fresh (untrained) PPlug: the input encoder starts as a copy of the history encoder."""
        backbone = freeze(backbone, cfg)
        input_encoder = copy.deepcopy(history_encoder.model).train()
        embedder = PPlugEmbedder(input_encoder, history_encoder.dim, backbone.hidden_size, token_norm(backbone),
                                 cfg, history_encoder.pooling, vocab_matrix(backbone, cfg))
        return cls(backbone, history_encoder, embedder, cache)

    # --- features ---------------------------------------------------------------------------

    def encode_histories(self, spec: TaskSpec, questions: Sequence[Question], progress: bool = False,
                         count: bool = True) -> list[str]:
        """Encode (or find in the cache) every history item of these questions in one go."""
        items = [p for q in questions for p in recent(q.profile, self.cfg.max_history)]
        texts = encoded_texts(spec, items, self.cfg)
        self.cache.encode(texts, self.history_encoder, progress=progress, count=count)
        return texts[: len(items)]                     # the values (the keys follow them)

    def features(self, spec: TaskSpec, questions: Sequence[Question]):
        """(tokenized inputs, history [B, N, e], mask [B, N], keys [B, N, e] or None) for a batch."""
        b = len(questions)
        kept = [recent(q.profile, self.cfg.max_history) for q in questions]
        n = max([len(k) for k in kept] + [1])
        history = torch.zeros(b, n, self.history_encoder.dim)
        keys = torch.zeros(b, n, self.history_encoder.dim) if keyed(self.cfg) else None
        mask = torch.zeros(b, n, dtype=torch.bool)
        for i, items in enumerate(kept):
            if items:
                vectors = self.cache.encode(encoded_texts(spec, items, self.cfg), self.history_encoder, count=False)
                history[i, : len(items)] = vectors[: len(items)]
                if keys is not None:
                    keys[i, : len(items)] = vectors[len(items):]
                mask[i, : len(items)] = True
        queries = [self.cfg.query_instruction + spec.query_text(q.input) for q in questions]
        return self.history_encoder.tokenize(queries), history, mask, keys

    def history_counts(self, questions: Sequence[Question]) -> dict[str, int]:
        """How many questions had their history cut to `max_history`, and how many had none."""
        return {"history_truncated": sum(len(q.profile) > self.cfg.max_history for q in questions),
                "history_empty": sum(not q.profile for q in questions)}

    def prompts(self, spec: TaskSpec, questions: Sequence[Question]) -> list[str]:
        if not self.cfg.retrieve_top1:
            return [q.input for q in questions]
        from components.retrieval.rankers import rank_bm25, select_items

        limit = self.backbone.max_length - spec.max_new_tokens - self.embedder.num_tokens - 2
        return [build_prompt(spec, q.input, select_items(q.profile, rank_bm25(spec, q), 1) if q.profile else [],
                             limit, self.backbone.tokenize, self.backbone.detokenize).text for q in questions]

    def soft_tokens(self, spec: TaskSpec, questions: Sequence[Question]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embedder(*self.features(spec, questions))

    # --- the Method interface ---------------------------------------------------------------

    @torch.no_grad()
    def predict(self, backbone: Backbone | None, spec: TaskSpec, questions: Sequence[Question]) -> list[Prediction]:
        backbone = self.backbone                 # the frozen backbone this PPlug was trained on (+ bridge)
        self.embedder.eval()
        backbone.model.eval()
        self.encode_histories(spec, questions)
        tokens, _ = self.soft_tokens(spec, questions)
        prompts = self.prompts(spec, questions)
        outputs = backbone.generate(prompts, spec.max_new_tokens, prefix=tokens)
        t = self.embedder.num_tokens
        return [Prediction(q.id, out, t + (backbone.count_tokens(p) - backbone.count_tokens(q.input)),
                           t + backbone.count_tokens(p))
                for q, p, out in zip(questions, prompts, outputs)]

    # --- training -----------------------------------------------------------------------------

    def fit(self, spec: TaskSpec, examples: Sequence[tuple[Question, str]],
            tcfg: PPlugTrainConfig = PPlugTrainConfig(), progress: bool = False,
            on_step: Callable[[dict], None] | None = None, checkpoints=None) -> list[float]:
        """Next-token loss on the gold outputs; the backbone and the history encoder stay frozen;
        the input encoder, both projectors, the instruction and empty-history vectors train,
        and the shared bridge LoRA when `bridge_rank` > 0. With `checkpoints`
        (`components/storage/checkpoints.py`), a killed training resumes where it last saved.
        `on_step` (diagnostics) gets each step's method, loss, batch, soft tokens and weights."""
        from tqdm.auto import tqdm

        from components import distributed

        ctx = distributed.init()
        torch.manual_seed(tcfg.seed)
        rng = random.Random(tcfg.seed)
        data = list(examples) + augment_deletions(examples, tcfg.history_deletion, rng)
        texts = self.encode_histories(spec, [q for q, _ in data], progress=progress, count=False)
        emb = self.embedder
        emb.fit_standardizer(self.cache.encode(sorted(set(texts)), self.history_encoder, count=False))
        encoder_params = list(emb.input_encoder.parameters())
        head_params = [p for n, p in emb.named_parameters() if not n.startswith("input_encoder.")]
        head_params += [p for p in self.backbone.model.parameters() if p.requires_grad]   # the bridge, if any
        distributed.broadcast_parameters(emb, ctx)
        opt = torch.optim.AdamW([{"params": encoder_params, "lr": tcfg.encoder_lr},
                                 {"params": head_params, "lr": tcfg.lr}], weight_decay=1e-4)
        self.backbone.model.eval()
        losses: list[float] = []
        steps = tcfg.epochs * ((len(data) + tcfg.batch_size - 1) // tcfg.batch_size)
        bridge = {n: p for n, p in self.backbone.model.named_parameters() if p.requires_grad}
        perm, first_epoch, first_start = list(range(len(data))), 0, 0
        resume = checkpoints.restore() if checkpoints is not None else None
        if resume is not None:
            emb.load_state_dict(resume["embedder"])
            with torch.no_grad():
                for n, p in bridge.items():
                    p.copy_(resume["bridge"][n])
            opt.load_state_dict(resume["optimizer"])
            rng.setstate(resume["rng"])
            torch.set_rng_state(resume["torch_rng"])
            perm, losses, first_epoch, first_start = resume["perm"], resume["losses"], resume["epoch"], resume["start"]
        with tqdm(total=steps, initial=len(losses), disable=not progress or not ctx.is_main, desc="pplug",
                  unit="step") as bar:
            for epoch in range(first_epoch, tcfg.epochs):
                emb.train()
                resuming = resume is not None and epoch == first_epoch     # perm and rng as saved mid-epoch
                if not resuming:
                    rng.shuffle(perm)
                for start in range(first_start if resuming else 0, len(data), tcfg.batch_size):
                    batch = distributed.shard([data[i] for i in perm[start:start + tcfg.batch_size]], ctx)
                    qs = [q for q, _ in batch]
                    tokens, weights = self.soft_tokens(spec, qs)
                    loss = prefix_loss(self.backbone, tokens, self.prompts(spec, qs), [g for _, g in batch])
                    if tcfg.attention_supervision > 0 and self.cfg.use_attention:
                        histories = [recent(q.profile, self.cfg.max_history) for q in qs]
                        target = gold_output_mask(spec, histories, [g for _, g in batch], weights.shape[1])
                        if tcfg.attention_labels == "label+bm25":
                            target &= lexical_top_mask(spec, qs, histories, weights.shape[1])
                        loss = loss + tcfg.attention_supervision * attention_label_loss(weights, target)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    distributed.reduce_gradients(encoder_params + head_params, ctx)
                    opt.step()
                    losses.append(distributed.all_sum(float(loss.detach()), ctx) / ctx.world_size)
                    if on_step is not None:
                        on_step({"method": self, "step": len(losses) - 1, "loss": losses[-1], "batch": batch,
                                 "tokens": tokens.detach(), "weights": weights.detach()})
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                    if checkpoints is not None:
                        checkpoints.save(len(losses), lambda: {
                            "embedder": emb.state_dict(), "bridge": {n: p.detach().clone() for n, p in bridge.items()},
                            "optimizer": opt.state_dict(), "rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
                            "perm": list(perm), "losses": list(losses), "epoch": epoch,
                            "start": start + tcfg.batch_size})
        emb.eval()
        return losses

    # --- persistence --------------------------------------------------------------------------

    def save(self, out_dir: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.embedder.state_dict().items()
                 if not k.startswith("input_encoder.")}
        save_file(state, str(out / "embedder.safetensors"))
        self.embedder.input_encoder.save_pretrained(out / "input_encoder")
        if self.cfg.bridge_rank:
            self.backbone.model.save_pretrained(out / "bridge")
        self.history_encoder.tokenizer.save_pretrained(out / "input_encoder")
        he = self.history_encoder
        write_json_atomic(out / "pplug.json", {
            "config": asdict(self.cfg), "hidden_size": self.embedder.hidden_size,
            "history_encoder": {"name_or_path": he.name_or_path, "max_length": he.max_length,
                                "pooling": he.pooling, "fingerprint": he.fingerprint}})
        return out

    @classmethod
    def load(cls, directory: str | Path, backbone: Backbone, history_encoder: SentenceEncoder | None = None,
             cache: VectorCache | None = None) -> "PPlugMethod":
        from safetensors.torch import load_file
        from transformers import AutoModel

        d = Path(directory)
        meta = json.loads((d / "pplug.json").read_text())
        he = meta["history_encoder"]
        if history_encoder is None:
            history_encoder = SentenceEncoder(he["name_or_path"], max_length=he["max_length"], pooling=he["pooling"])
        if history_encoder.fingerprint != he["fingerprint"]:
            log.warning("history encoder %s differs from the one PPlug was trained with (%s)",
                        history_encoder.fingerprint, he["fingerprint"])
        cfg = PPlugConfig(**meta["config"])
        input_encoder = AutoModel.from_pretrained(d / "input_encoder").eval()
        embedder = PPlugEmbedder(input_encoder, history_encoder.dim, meta["hidden_size"], 1.0, cfg,
                                 history_encoder.pooling, vocab_matrix(backbone, cfg))
        state = load_file(str(d / "embedder.safetensors"))
        state.update({f"input_encoder.{k}": v for k, v in input_encoder.state_dict().items()})
        embedder.load_state_dict(state)
        for p in backbone.model.parameters():
            p.requires_grad_(False)
        if cfg.bridge_rank:
            from peft import PeftModel

            backbone = Backbone(PeftModel.from_pretrained(backbone.model, d / "bridge").eval(), backbone.tokenizer,
                                name=backbone.name)
        return cls(backbone, history_encoder, embedder.eval(), cache)


def vocab_matrix(backbone: Backbone, cfg: PPlugConfig) -> torch.Tensor | None:
    return backbone.model.get_input_embeddings().weight if cfg.projection == "vocab" else None


def freeze(backbone: Backbone, cfg: PPlugConfig) -> Backbone:
    """Freeze the backbone; with `bridge_rank` > 0, add the shared bridge LoRA (trainable)."""
    from components.backbone.lora import add_lora

    for p in backbone.model.parameters():
        p.requires_grad_(False)
    if not cfg.bridge_rank:
        return backbone
    model = add_lora(backbone.model, r=cfg.bridge_rank, alpha=2 * cfg.bridge_rank, roles="qkv")
    return Backbone(model, backbone.tokenizer, name=backbone.name)


def augment_deletions(examples: Sequence[tuple[Question, str]], copies: int, rng: random.Random):
    """The reference code's `aggr_id.py`: for every example with more than 2 history items,
    `copies` extra copies with 1-50% of the items randomly deleted."""
    out = []
    for q, gold in examples:
        if copies <= 0 or len(q.profile) <= 2:
            continue
        for _ in range(copies):
            drop = rng.randint(max(1, len(q.profile) // 100), max(1, len(q.profile) // 2))
            gone = set(rng.sample(range(len(q.profile)), drop))
            out.append((replace(q, profile=[p for i, p in enumerate(q.profile) if i not in gone]), gold))
    return out


def train_pplug(backbone: Backbone, spec: TaskSpec, examples: Sequence[tuple[Question, str]],
                cfg: PPlugConfig = PPlugConfig(), tcfg: PPlugTrainConfig = PPlugTrainConfig(),
                history_encoder: SentenceEncoder | None = None, cache: VectorCache | None = None,
                progress: bool = False, on_step: Callable[[dict], None] | None = None, checkpoints=None
                ) -> tuple[PPlugMethod, list[float], dict]:
    """A trained PPlug for one population; returns (method, losses, costs)."""
    encoder = history_encoder or SentenceEncoder.default()
    torch.manual_seed(tcfg.seed)            # the projectors' initial weights: the same on every run
    method = PPlugMethod.create(backbone, encoder, cfg, cache)
    start = time.perf_counter()
    items_before = method.cache.misses
    t0 = time.perf_counter()
    method.encode_histories(spec, [q for q, _ in examples], progress=progress)
    encode_s = time.perf_counter() - t0
    encoded = method.cache.misses - items_before
    losses = method.fit(spec, examples, tcfg, progress=progress, on_step=on_step, checkpoints=checkpoints)
    costs = {"items_encoded": encoded, "encode_seconds": encode_s,
             "items_per_second": encoded / encode_s if encoded and encode_s > 0 else 0.0,
             "cache_hit_rate": method.cache.hit_rate, "train_seconds": time.perf_counter() - start,
             **method.history_counts([q for q, _ in examples]), "trainable_parameters": method.embedder.trainable_parameters()}
    return method, losses, costs
