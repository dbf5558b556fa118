"""The pt stage unit: raw-text documents -> every token trained, documents packed apart -> TRL's SFTTrainer."""

from __future__ import annotations

import logging

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from alignment.data.mixture import Mixture, load_mixture
from alignment.data.sources import parse_mixer
from alignment.pt.text import (
    DocumentBoundaries,
    DocumentReport,
    chat_document_renderer,
    pt_row_problem,
    tokenize_documents,
)
from alignment.recipes.arguments import Recipe
from alignment.recipes.parser import RecipeError
from alignment.runtime.stage import Stage
from alignment.sft.stage import SFTStage

logger = logging.getLogger(__name__)


class PTStage(SFTStage):
    """Documents (`text`) -> `input_ids` with BOS/EOS (`alignment.pt.text`) -> TRL's SFTTrainer in language-modeling
    mode. SFT's trainer, LoRA config and padding-free rule are reused as they are; the rows, their tokenizer and the
    generation config are pt's own. A chat template is needed only to render chat sources."""

    required_columns = ("text",)
    row_problem = staticmethod(pt_row_problem)
    needs_chat_template = False

    def start(self, recipe: Recipe) -> PreTrainedTokenizerBase:
        """The base's start, then the recipe's `eos_token` set on the tokenizer before any document is tokenized
        (TRL would set it only in its trainer), and the documents' BOS/EOS policy logged once."""
        tokenizer = super().start(recipe)
        eos_token = recipe.training.eos_token
        if eos_token is not None:
            if eos_token not in tokenizer.get_vocab():
                raise RecipeError(f"`eos_token: {eos_token}` is not a token of the tokenizer's vocabulary.")
            tokenizer.eos_token = eos_token
        if tokenizer.eos_token_id is None:
            raise RecipeError(
                "The tokenizer has no EOS token, which pt appends to every document so that the model learns where "
                "one ends and packed documents are told apart: set `eos_token` to one of its tokens."
            )
        logger.info("pt documents: %s", DocumentBoundaries.of(tokenizer))
        return tokenizer

    def load_rows(self, recipe: Recipe, tokenizer: PreTrainedTokenizerBase | None = None) -> Mixture:
        """The documents of every source: `text` as read, and chats rendered whole by the chat template (a source
        that names a chat format needs one)."""
        render = chat_document_renderer(tokenizer) if tokenizer is not None and tokenizer.chat_template else None
        if render is None:
            data = recipe.data
            for source in parse_mixer(data.dataset_mixer, data.dataset_splits, data.dataset_config):
                if source.format not in (None, "text"):
                    raise RecipeError(
                        f"{source.where}: `format: {source.format}` renders each chat by the chat template, and the "
                        "tokenizer has none: set `chat_template` (a shipped name or a .jinja file)."
                    )
        return load_mixture(
            recipe.data,
            validate_row=self.row_problem,
            required_columns=list(self.required_columns),
            render_chat=render,
        )

    def tokenizer_options(self, recipe: Recipe) -> dict:
        training = recipe.training
        return {
            **Stage.tokenizer_options(self, recipe),  # SFT's chat options do not apply
            "cut_long": not (training.packing and training.packing_strategy in ("bfd_split", "wrapped")),
        }

    def tokenize(self, rows, tokenizer, *, split, source_of=None, **options) -> tuple[Dataset, DocumentReport]:
        options.pop("skip_invalid_rows")  # every row is checked when loaded; tokenizing refuses none
        boundaries = DocumentBoundaries.of(tokenizer)
        return tokenize_documents(rows, tokenizer, boundaries=boundaries, split_name=split, **options)

    def generation_stop_ids(self, tokenizer: PreTrainedTokenizerBase) -> list[int]:
        """None besides EOS: a pretrained model ends a document there, whatever chat template the tokenizer has."""
        return []
