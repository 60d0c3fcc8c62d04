"""The Great Expectations suites of each LaMP task, over flattened tables.

GX validates flat columns only, so a questions file becomes two tables:
`questions` (one row per question, with its gold output when an outputs file is given)
and `profile` (one row per profile item). `outputs` holds the outputs file's ids.
"""

from __future__ import annotations

from components.lamp.tasks import TaskSpec

MAX_INPUT_CHARS = 200_000    # far above any real LaMP input; catches pasted blobs and binary junk
MAX_FIELD_CHARS = 100_000
# ISO dates as LaMP writes them (YYYY-MM-DD, optionally followed by a time). A vectorised
# regex instead of dateutil: dateutil parses ~20k values/s, which made dates 85% of the
# validation time of a LaMP-3-sized file; this is what `records.parse_date` accepts.
ISO_DATE = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])([ T].*)?$"


def question_expectations(spec: TaskSpec, with_outputs: bool) -> list:
    import great_expectations.expectations as gxe

    exps = [
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="input", min_value=1, max_value=MAX_INPUT_CHARS),
        gxe.ExpectColumnValuesToBeBetween(column="profile_size", min_value=1),
        gxe.ExpectColumnValuesToMatchRegex(column="date", regex=ISO_DATE),
    ]
    if with_outputs:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column="output"))
        if spec.labels:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column="output", value_set=list(spec.labels)))
        else:
            exps.append(gxe.ExpectColumnValueLengthsToBeBetween(column="output", min_value=1,
                                                               max_value=MAX_FIELD_CHARS))
    return exps


def output_expectations(question_ids: list[str]) -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToBeInSet(column="id", value_set=question_ids),
    ]


def profile_expectations(spec: TaskSpec) -> list:
    import great_expectations.expectations as gxe

    exps = [
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["question_id", "item_id"]),
        gxe.ExpectColumnValuesToMatchRegex(column="date", regex=ISO_DATE),
    ]
    for name in spec.profile_fields:
        exps.append(gxe.ExpectColumnValueLengthsToBeBetween(column=name, min_value=1,
                                                           max_value=MAX_FIELD_CHARS))
    if spec.label_field and spec.labels:
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=spec.label_field, value_set=list(spec.labels)))
    return exps
