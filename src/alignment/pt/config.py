"""The pt recipe's training config: TRL's `SFTConfig` with the checks every stage config runs, and pretraining's
packing default."""

from __future__ import annotations

from dataclasses import dataclass, field

import trl

from alignment.recipes.arguments import StageTrainingArguments


@dataclass
class PTConfig(StageTrainingArguments, trl.SFTConfig):
    """TRL's `SFTConfig`. Every token of every document is trained, so TRL's switches that mask tokens or read another
    column are refused rather than silently ignored (documents reach TRL already tokenized: `alignment.pt.text`)."""

    packing_strategy: str = field(
        default="bfd_split",
        metadata={
            "help": "With `packing: true`, how documents fill rows of `max_length` tokens: `bfd_split` (default for "
            "pt: best fit, and a document longer than `max_length` is split into pieces packed elsewhere, so no "
            "token is lost), `bfd` (best fit, such a document cut to `max_length`: the rest is lost; counted in the "
            "log) or `wrapped` (rows filled end to end, documents attend across their boundaries). The bfd "
            "strategies train padding-free: position ids restart at each document, which no token attends across."
        },
    )

    def __post_init__(self):
        if self.completion_only_loss:
            raise ValueError(
                "`completion_only_loss: true` masks every token but a completion's; pt trains every token of every "
                "document. Remove the key (or train prompt-completion rows with run_sft.py)."
            )
        if self.dataset_text_field != "text":
            raise ValueError(
                f"`dataset_text_field: {self.dataset_text_field}` is not used: a source's documents are its `text` "
                f"column. Give the source `format: text` and `columns_map: {{text: {self.dataset_text_field}}}` in "
                "the list form of `dataset_mixer`."
            )
        self.completion_only_loss = False  # TRL would otherwise guess it from the columns
        super().__post_init__()
