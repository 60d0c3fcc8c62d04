"""Typed, validated settings read from `params.yaml` (the one configuration source)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.lamp.splits import PopulationConfig, PrepareConfig
from components.lamp.synthetic import SynthConfig

PARAMS_FILE = Path(os.environ.get("PERSONA_PARAMS", "params.yaml"))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SynthSettings(_Strict):
    users: int = Field(500, ge=3, description="number of synthetic users")
    queries_per_user: int = Field(3, ge=1, description="questions per user (>=3 enables the time-based split)")
    profile_min: int = Field(10, ge=1)
    profile_max: int = Field(40, ge=1)
    n_themes: int = Field(30, ge=2)
    n_segments: int = Field(3, ge=1, description="user segments that prefer different theme pools")
    themes_per_user: tuple[int, int] = (3, 8)
    irrelevant_fraction: float = Field(0.15, ge=0, le=1, description="share of off-interest noise items")
    drift_themes: tuple[int, int] = (1, 2)
    label_noise: float = Field(0.03, ge=0, le=1)
    words_per_text: tuple[int, int] = (8, 16)
    theme_words_per_text: int = Field(3, ge=1, le=6, description="theme words in each text (signal strength)")
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0

    def to_config(self) -> SynthConfig:
        return SynthConfig(**self.model_dump())


class DataSettings(_Strict):
    source: str = "synth"
    time_based: bool = False
    synth: SynthSettings = SynthSettings()


class PopulationSettings(_Strict):
    rule: str = "kmeans"
    k: int = Field(3, ge=1)
    dim: int = Field(512, ge=8)
    iterations: int = Field(25, ge=1)
    seed: int = 0

    @field_validator("rule")
    @classmethod
    def _known_rule(cls, v: str) -> str:
        if v not in ("kmeans", "single") and not v.startswith("field:"):
            raise ValueError("rule must be kmeans, single or field:<name>")
        return v


class PrepareSettings(_Strict):
    oppu_top_users: int = Field(100, ge=1)
    populations: PopulationSettings = PopulationSettings()

    def to_config(self) -> PrepareConfig:
        return PrepareConfig(self.oppu_top_users, PopulationConfig(**self.populations.model_dump()))


class EmbeddedSettings(_Strict):
    max_length: int = Field(512, ge=64, description="the prompt limit (at most the reader's positions)")
    steps: int = Field(150, ge=1, description="task adaptation steps")
    batch_size: int = Field(16, ge=1)
    tokens_per_microbatch: int = Field(4096, ge=64)
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(30, ge=0)
    k_max: int = Field(8, ge=1)
    mix_none: float = Field(0.10, ge=0, le=1)
    mix_bm25: float = Field(0.30, ge=0, le=1)
    mix_random: float = Field(0.10, ge=0, le=1)
    mix_recall: float = Field(0.25, ge=0, le=1, description="recall prompts: BM25's best item among k-1 others, "
                                                           "each relabelled afresh, in random order")
    history_examples: bool = True
    history_share: float = Field(0.5, ge=0, le=1)
    profile_label_loss: bool = Field(False, description="loss on the profile's labels too (they can be memorised: "
                                                        "the time split's questions come from the training users)")
    permute_labels: float = Field(0.0, ge=0, le=1, description="share of prompts with history whose labels are "
                                  "renamed by one random permutation (profile and answer), with loss on the "
                                  "profile's labels: only reading the items answers them")
    seed: int = 0

    @model_validator(mode="after")
    def _mix_fits(self):
        total = self.mix_none + self.mix_bm25 + self.mix_random + self.mix_recall
        if total > 1 + 1e-9:
            raise ValueError(f"mix_none + mix_bm25 + mix_random + mix_recall = {total:g} > 1 "
                             "(the rest of the training prompts show every item that fits)")
        return self

    def to_config(self):
        from components.backbone.embedded import EmbeddedConfig

        return EmbeddedConfig(**self.model_dump())


class ReaderSettings(_Strict):
    path: str = Field("components/backbone/shipped-reader",
                      description="the reader the embedded backbone starts from (relative: to the repository)")
    layers: int = Field(3, ge=1, le=6, description="MiniLM's first layers kept")
    orders: tuple[Literal["label-first", "label-last", "mixed"], ...] = ("label-first", "mixed")
    exact_steps: tuple[int, ...] = Field((80, 200), description="per stage: exact recall steps (the copy circuit)")
    fuzzy_steps: tuple[int, ...] = Field((160, 200), description="per stage: fuzzy recall steps (matching by theme)")
    batch_size: int = Field(64, ge=1)
    items: int = Field(8, ge=2)
    queries: int = Field(8, ge=1)
    labels: int = Field(16, ge=2)
    words: tuple[int, int] = (6, 8)
    theme_words: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=1)
    layout_steps: tuple[int, ...] = Field((), description="then recall in the tasks' own prompts, per stage in turn "
                                                          "(a number: one stage): items on a few themes, each "
                                                          "theme a fresh label of the task, the question on one")
    layout_tasks: tuple[tuple[str, ...], ...] = Field((), description="per layout stage, the tasks its prompts are "
                                                                      "drawn from (empty: every stage on `tasks`)")
    layout_lr: float = Field(3e-4, gt=0, description="the layout stage's peak learning rate")
    layout_batch_size: int = Field(16, ge=1)
    layout_items: tuple[int, int] = Field((6, 14), description="items per layout prompt (least, most)")
    layout_themes: tuple[int, int] = Field((2, 5), description="themes among them (least, most)")
    layout_drift: float = Field(0.0, ge=0, le=1, description="share of layout prompts whose asked theme changes "
                                                             "label midway (the newest label answers)")
    layout_questions: int = Field(1, ge=1, description="questions asked on one profile, each seeing the profile "
                                                       "and itself only, for tasks whose labels precede their "
                                                       "texts (LaMP-3: one answer a prompt otherwise)")
    task_steps: int = Field(0, ge=0, description="then steps on the tasks' prompts, from synthetic users of "
                                                 "data_seed (backbone.embedded's mix)")
    task_lr: float = Field(3e-4, gt=0)
    task_profile_labels: bool = Field(True, description="task stage: loss on the profile's labels too")
    tasks: tuple[str, ...] = ("LaMP-2", "LaMP-3")
    data_seed: int = Field(1000, description="seed of the task stage's users (not the demo's data.synth.seed)")
    seed: int = 0

    @model_validator(mode="after")
    def _enough_labels(self):
        if self.labels < self.items:
            raise ValueError(f"labels ({self.labels}) must be at least items ({self.items}): each item gets its own")
        if not len(self.orders) == len(self.exact_steps) == len(self.fuzzy_steps):
            raise ValueError(f"orders, exact_steps and fuzzy_steps need one entry per stage, got {len(self.orders)}, "
                             f"{len(self.exact_steps)} and {len(self.fuzzy_steps)}")
        if self.layout_tasks and len(self.layout_tasks) != len(self.layout_steps):
            raise ValueError(f"layout_tasks needs one entry per layout stage: got {len(self.layout_tasks)} for "
                             f"{len(self.layout_steps)} layout_steps")
        if any(s < 1 for s in self.layout_steps):
            raise ValueError(f"layout_steps must be positive, got {list(self.layout_steps)}")
        unknown = {t for stage in self.layout_tasks for t in stage} - set(self.tasks)
        if unknown:
            raise ValueError(f"layout_tasks names {sorted(unknown)}, not among tasks {list(self.tasks)}")
        return self

    @field_validator("layout_steps", mode="before")
    @classmethod
    def _one_stage(cls, value):
        return ((value,) if value else ()) if isinstance(value, int) else value

    def to_config(self):
        from components.backbone.reader import ReaderConfig

        return ReaderConfig(**self.model_dump())


class BackboneSettings(_Strict):
    source: str = "embedded"
    train_split: str = "time/train"
    processes: int = Field(1, ge=1, description="data-parallel training processes (torchrun; one per GPU)")
    checkpoint_every: int = Field(100, ge=1, description="training steps between resumable checkpoints (the "
                                                         "backbone's, and each TAP-PER and PPlug population's)")
    embedded: EmbeddedSettings = EmbeddedSettings()
    reader: ReaderSettings = ReaderSettings()


class EvaluationSettings(_Strict):
    split: str = "time/test"
    methods: list[str] = ["non-personalized", "random-4", "recency-4", "bm25-4", "dense-4", "full-context"]
    batch_size: int = Field(32, ge=1)
    num_beams: int = Field(1, ge=1)


class TapPerSettings(_Strict):
    prefix_length: int = Field(8, ge=1, description="L: soft tokens per user")
    temporal: bool = True
    order: bool = True
    use_user_prefix: bool = True
    use_record_prefix: bool = True
    bridge_rank: int = Field(4, ge=1)
    bridge_roles: str = "qkv"
    record_pooling: str = Field("tokens", pattern="^(tokens|fields)$",
                                description="z_h: mean over the record's tokens (reference) or over its fields")
    record_keys: str = Field("record", pattern="^(record|text)$",
                             description="relevance reads the whole record (reference) or its text without the output")
    standardise: bool = Field(True, description="centre and scale z_q, z_h with training statistics")
    attention_supervision: float = Field(0.0, ge=0, description="weight of the weak attention label loss")
    max_records: int = Field(32, ge=1)
    max_examples: int | None = Field(None, ge=1, description="cap on training items per population")
    epochs: int = Field(4, ge=1)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    max_parallel: int = Field(1, ge=1)

    def configs(self):
        from components.methods.tap_per.model import TapPerConfig
        from components.methods.tap_per.train import TapPerTrainConfig

        d = self.model_dump()
        model = TapPerConfig(**{k: d[k] for k in ("prefix_length", "temporal", "order", "use_user_prefix",
                                                  "use_record_prefix", "bridge_rank", "bridge_roles",
                                                  "record_pooling", "record_keys", "standardise")})
        train = TapPerTrainConfig(max_records=self.max_records, epochs=self.epochs, lr=self.lr,
                                  batch_size=self.batch_size, attention_supervision=self.attention_supervision)
        return model, train


class PPlugSettings(_Strict):
    encoder: str = Field("all-MiniLM-L6-v2", description="history/input encoder: all-MiniLM-L6-v2 (shipped) "
                                                         "or a local path / hub name of a BERT-style encoder")
    pooling: str = Field("mean", pattern="^(mean|cls)$", description="mean (MiniLM) or cls (BGE)")
    max_history: int = Field(64, ge=1, description="most recent history items kept per question")
    use_attention: bool = True
    use_instruction: bool = True
    retrieve_top1: bool = False
    history_with_output: bool = True
    history_keys: str = Field("record", pattern="^(record|text)$",
                              description="what the input is compared with: the item as encoded (paper) "
                                          "or its text without the past output")
    query_instruction: str = "Represent this sentence for searching relevant passages: "
    attention_scale: float = Field(1.0, gt=0, description="multiplies x.h before the softmax (paper: 1)")
    learn_attention_scale: bool = False
    projection: str = Field("mlp", pattern="^(mlp|vocab)$")
    bridge_rank: int = Field(0, ge=0, description="0: frozen LLM (paper); r: shared LoRA on q,k,v")
    max_examples: int | None = Field(None, ge=1, description="cap on training items per population")
    epochs: int = Field(2, ge=1)
    lr: float = Field(3e-3, gt=0)
    encoder_lr: float = Field(5e-5, gt=0)
    batch_size: int = Field(16, ge=1)
    history_deletion: int = Field(0, ge=0)
    attention_supervision: float = Field(0.0, ge=0, description="weight of the weak attention label loss")
    attention_labels: Literal["label", "label+bm25"] = "label"
    max_parallel: int = Field(1, ge=1)

    ABLATIONS: ClassVar[dict] = {"none": {}, "mean": {"use_attention": False}, "no-instruction": {"use_instruction": False},
                 "retrieval": {"retrieve_top1": True}}

    def configs(self, ablation: str = "none", **overrides):
        """(PPlugConfig, PPlugTrainConfig); `ablation` and non-None `overrides` win over the file."""
        from components.methods.pplug.method import PPlugTrainConfig
        from components.methods.pplug.model import PPlugConfig

        d = {**self.model_dump(), **self.ABLATIONS[ablation],
             **{k: v for k, v in overrides.items() if v is not None}}
        model = PPlugConfig(**{k: d[k] for k in ("max_history", "use_attention", "use_instruction",
                                                 "retrieve_top1", "history_with_output", "history_keys",
                                                 "query_instruction",
                                                 "attention_scale", "learn_attention_scale", "projection",
                                                 "bridge_rank")})
        train = PPlugTrainConfig(**{k: d[k] for k in ("epochs", "lr", "encoder_lr", "batch_size",
                                                      "history_deletion", "attention_supervision",
                                                      "attention_labels")})
        return model, train

    def history_encoder(self):
        from components.retrieval.encoder import SentenceEncoder

        if self.encoder == "all-MiniLM-L6-v2":
            return SentenceEncoder.default()
        return SentenceEncoder(self.encoder, pooling=self.pooling)


class AttnGSSettings(_Strict):
    """Attn-GS: marker and compressor; choices documented in docs/attn-gs.md."""
    marker_source: str = Field("backbone", min_length=1,
                               description="the model the marker reads: backbone (the task backbone) | minilm "
                                           "(the packaged pretrained all-MiniLM-L6-v2) | a model name or path")
    layers: str = Field("middle", description="marking layers: middle | last | all | indices like '0,1'")
    head_aggregation: str = Field("mean", pattern=r"^(mean|max|[0-9]+)$",
                                  description="mean | max over heads, or one head's index")
    token_pooling: Literal["mean", "max", "sum"] = "mean"
    rule: Literal["alpha", "top_p", "top_k"] = "top_k"
    alpha: float = Field(0.5, gt=0, le=1)
    top_p: float = Field(0.5, gt=0, le=1)
    top_k: int = Field(5, ge=1)
    attention_weight: float = Field(1.0, ge=0, description="weight of the marker's attention loss")
    hide_outputs: bool = True
    query: Literal["last", "input", "generated"] = "last"
    marker_supervision: Literal["label", "label+lexical", "label+bm25"] = "label+bm25"
    marker_answer_weight: float = Field(0.0, ge=0, description="answer loss added to the marker's attention loss")
    marker_steps: int = Field(3000, ge=0)
    marker_lr: float = Field(3e-3, gt=0)
    marker_temperature: bool = Field(True, description="learn one scale on each marking layer's query and key "
                                                       "projections (a temperature of its attention)")
    compressor_steps: int = Field(400, ge=1)
    compressor_rank: int = Field(16, ge=1)
    compressor_lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    target: str = Field("marked-consensus",
                        description="marked-content | marked-consensus | teacher:<JSON file of summaries>")
    train_budgets: list[int] = [4, 8, 16, 32]
    budgets: list[int] = Field([8, 32], description="budgets evaluated (methods attn-gs@B)")
    max_train_examples: int = Field(2000, ge=1, description="training questions + history items for the marker")
    max_compressor_questions: int = Field(600, ge=1)
    seed: int = 0

    @field_validator("head_aggregation", mode="before")
    @classmethod
    def _head_index(cls, v):
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v     # `head_aggregation: 2`

    def configs(self):
        from components.methods.attn_gs.marking import MarkingConfig
        from components.methods.attn_gs.train import FinetuneConfig

        marking = MarkingConfig(layers=self.layers, head_aggregation=self.head_aggregation,
                                token_pooling=self.token_pooling, rule=self.rule, alpha=self.alpha,
                                top_p=self.top_p, top_k=self.top_k, hide_outputs=self.hide_outputs, query=self.query)
        marker = FinetuneConfig(steps=self.marker_steps, batch_size=self.batch_size, lr=self.marker_lr, seed=self.seed)
        compressor = FinetuneConfig(rank=self.compressor_rank, alpha=2 * self.compressor_rank,
                                    steps=self.compressor_steps, batch_size=self.batch_size, lr=self.compressor_lr,
                                    seed=self.seed)
        return marking, marker, compressor


class Profile(_Strict):
    name: str
    tasks: list[str]
    data: DataSettings = DataSettings()
    prepare: PrepareSettings = PrepareSettings()
    backbone: BackboneSettings = BackboneSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    tap_per: TapPerSettings = TapPerSettings()
    pplug: PPlugSettings = PPlugSettings()
    attn_gs: AttnGSSettings = AttnGSSettings()

    def section_hash(self, *sections: str) -> str:
        """A short hash of the named settings sections (a cache key part)."""
        import hashlib
        import json

        blob = json.dumps({s: getattr(self, s).model_dump() for s in sections}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        from components.lamp.tasks import get_task

        return [get_task(t).name for t in v]


def load_profile(name: str | None = None, params_file: str | Path | None = None) -> Profile:
    path = Path(params_file or PARAMS_FILE)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found: run from the repository root or set PERSONA_PARAMS") from None
    name = name or os.environ.get("PERSONA_PROFILE") or raw.get("profile", "demo")
    profiles = raw.get("profiles", {})
    if name not in profiles:
        raise KeyError(f"{path}: no profile {name!r}; defined: {', '.join(profiles)}")
    return Profile(name=name, **profiles[name])


def with_overrides(settings: _Strict, items: list[str], where: str) -> _Strict:
    """`settings` with KEY=VALUE overrides (VALUE parsed as JSON, else kept as text),
    validated like params.yaml; an unknown key or a bad value names `where` and the key."""
    import json

    from pydantic import ValidationError

    update = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"{where}: override {item!r} is not KEY=VALUE")
        try:
            update[key] = json.loads(value)
        except json.JSONDecodeError:
            update[key] = value
    try:
        return type(settings)(**{**settings.model_dump(), **update})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ValueError(f"{where}: bad override ({problems})") from None


def data_paths(root: str | Path = "data") -> dict[str, Path]:
    root = Path(root)
    return {"raw": root / "raw", "validation": root / "validation",
            "validation_summary": root / "validation.json", "prepared": root / "prepared"}


__all__ = ["Profile", "load_profile", "data_paths"]
