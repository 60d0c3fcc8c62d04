"""The LaMP tasks: names, label sets, input templates, profile fields and metrics.

Everything here is copied from the benchmark's own files (see
`shared/reference/methods-and-lamp.md` §B1, §B5); the rest of the code asks this
module instead of hard-coding a task's facts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MOVIE_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia",
    "dark comedy", "classic", "psychology", "fantasy", "romance", "thought-provoking",
    "social commentary", "violence", "true story",
)
NEWS_CATEGORIES = (
    "food & drink", "sports", "education", "parents", "religion", "travel", "business",
    "crime", "science & technology", "culture & arts", "entertainment", "politics",
    "women", "style & beauty", "healthy living",
)
CITATION_LABELS = ("[1]", "[2]")
RATING_LABELS = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class TaskSpec:
    """What the platform needs to know about one LaMP task."""

    name: str                      # our canonical name, e.g. "LaMP-2"
    official: str                  # the "task" field of official outputs files, e.g. "LaMP_2"
    kind: str                      # "classification" | "rating" | "generation"
    input_template: str            # the exact `input` text of the questions file
    profile_fields: tuple[str, ...]  # required, non-empty fields of each profile item
    labels: tuple[str, ...] = ()   # closed label set (classification/rating)
    label_field: str | None = None  # the profile field holding the user's past output
    text_fields: tuple[str, ...] = ()  # profile fields that make an item's text for retrieval
    query_marker: str | None = None  # the input text after this marker is the retrieval query
    oppu_dir: str | None = None    # directory name in the OPPU-style processed data
    max_new_tokens: int = 8

    @property
    def metric_names(self) -> tuple[str, ...]:
        return {"classification": ("accuracy", "f1"), "rating": ("MAE", "RMSE"),
                "generation": ("rouge-1", "rouge-L")}[self.kind]

    @property
    def primary_metric(self) -> str:
        return self.metric_names[0]

    @property
    def higher_is_better(self) -> bool:
        return self.kind != "rating"

    def item_text(self, fields: dict[str, str]) -> str:
        """The text of a profile item as LaMP's retrievers see it."""
        return " ".join(fields.get(f, "") for f in self.text_fields).strip()

    def query_text(self, task_input: str) -> str:
        """The part of the task input that retrieval should match (LaMP's `extract_*`)."""
        if self.name == "LaMP-1":
            quoted = re.findall(r'"(.*?)"', task_input)
            return " ".join(quoted[1:3]) if len(quoted) >= 3 else task_input
        if self.query_marker and self.query_marker in task_input:
            return task_input.split(self.query_marker, 1)[1].strip()
        return task_input


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec(
        name="LaMP-1", official="LaMP_1", kind="classification", labels=CITATION_LABELS,
        input_template=('For an author who has written the paper with the title "{title}", '
                        "which reference is related? Just answer with [1] or [2] without "
                        'explanation. [1]: "{ref1}" [2]: "{ref2}"'),
        profile_fields=("title", "abstract"), text_fields=("title", "abstract"),
        oppu_dir="citation", max_new_tokens=4),
    TaskSpec(
        name="LaMP-2", official="LaMP_2", kind="classification", labels=MOVIE_TAGS,
        input_template=("Which tag does this movie relate to among the following tags? Just "
                        "answer with the tag name without further explanation. tags: ["
                        + ", ".join(MOVIE_TAGS) + "] description: {description}"),
        profile_fields=("description", "tag"), label_field="tag",
        text_fields=("description",), query_marker="description:",
        oppu_dir="movie_tagging", max_new_tokens=6),
    TaskSpec(
        name="LaMP-2N", official="LaMP_2N", kind="classification", labels=NEWS_CATEGORIES,
        input_template=("Which category does this article relate to among the following "
                        "categories? Just answer with the category name without further "
                        "explanation. categories: [" + ", ".join(NEWS_CATEGORIES)
                        + "] article: {text}"),
        profile_fields=("text", "title", "category"), label_field="category",
        text_fields=("text",), query_marker="article:",
        oppu_dir="news_categorize", max_new_tokens=6),
    TaskSpec(
        name="LaMP-3", official="LaMP_3", kind="rating", labels=RATING_LABELS,
        input_template=("What is the score of the following review on a scale of 1 to 5? just "
                        "answer with 1, 2, 3, 4, or 5 without further explanation. review: {text}"),
        profile_fields=("text", "score"), label_field="score", text_fields=("text",),
        query_marker="review:", oppu_dir="product_rating", max_new_tokens=2),
    TaskSpec(
        name="LaMP-4", official="LaMP_4", kind="generation",
        input_template="Generate a headline for the following article: {article}",
        profile_fields=("text", "title"), label_field="title", text_fields=("title", "text"),
        query_marker="article:", oppu_dir="news_headline", max_new_tokens=32),
    TaskSpec(
        name="LaMP-5", official="LaMP_5", kind="generation",
        input_template="Generate a title for the following abstract of a paper: {abstract}",
        profile_fields=("title", "abstract"), label_field="title",
        text_fields=("title", "abstract"), query_marker="paper:",
        oppu_dir="scholarly_title", max_new_tokens=32),
    TaskSpec(
        name="LaMP-6", official="LaMP_6", kind="generation",
        input_template="Generate a subject for the following email: {content}",
        profile_fields=("text", "title"), label_field="title", text_fields=("text",),
        query_marker="email:", max_new_tokens=32),   # LaMP-6 ships Avocado ids: text supplied locally
    TaskSpec(
        name="LaMP-7", official="LaMP_7", kind="generation",
        input_template="Paraphrase the following tweet without any explanation before or after it: {tweet}",
        profile_fields=("text",), text_fields=("text",), query_marker="before or after it:",
        oppu_dir="tweet_paraphrase", max_new_tokens=40),
)}

_ALIASES = {"LaMP-2M": "LaMP-2"}


class UnknownTaskError(ValueError):
    pass


def get_task(name: str) -> TaskSpec:
    """Look a task up by any of its spellings: LaMP-2, LaMP_2, lamp2, LaMP-2M."""
    key = re.sub(r"^lamp[-_ ]?", "LaMP-", name.strip(), flags=re.IGNORECASE)
    key = _ALIASES.get(key, key)
    if key in TASKS:
        return TASKS[key]
    for spec in TASKS.values():
        if spec.official == name.strip():
            return spec
    raise UnknownTaskError(
        f"unknown task {name!r}; known tasks: {', '.join(TASKS)} (LaMP-2M is an alias of LaMP-2)")
