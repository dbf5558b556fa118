"""pt rows: the document check, the documents' BOS/EOS policy, and documents as token ids.

**BOS and EOS.** A document is tokenized without the tokenizer's special tokens, then given the tokenizer's own
policy at its start (BOS when the tokenizer adds one to a text, as Llama's and Mistral's do; none for Qwen's or
GPT-2's) and the handbook's at its end: EOS, always, so that the model learns where a document ends and packed
documents are told apart. A rendered chat that already starts with BOS (templates that write it) or ends with EOS
gets no second one. `DocumentBoundaries` states the policy; the stage logs it once.

**Length.** Without packing, a document longer than `max_length` is cut to its first `max_length` tokens, as TRL's
`bfd` packing cuts it; with `bfd_split` or `wrapped` packing it is kept whole and TRL splits it across rows. Either
way the count is logged (`DocumentReport`), never silent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow.compute as pc
from datasets import Dataset, Features, List, Value
from transformers import PreTrainedTokenizerBase

from alignment.chat.templates import render_chat
from alignment.data.conversion import ChatRenderer
from alignment.data.rows import RowProblem, describe

logger = logging.getLogger(__name__)

TOKENIZED_FEATURES = Features({"input_ids": List(Value("int32"))})


def pt_row_problem(row: dict) -> RowProblem | None:
    """The pt row validator for `load_mixture`: a `text` column holding a string with something besides whitespace."""
    if "text" not in row:
        return RowProblem("no text column", f"no 'text' column (the row has: {', '.join(row)})")
    text = row["text"]
    if not isinstance(text, str):
        return RowProblem("non-string text", f"text is {describe(text)}, expected a string")
    if not text.strip():
        return RowProblem("empty text", f"text is empty or whitespace only ({describe(text)})")
    return None


def chat_document_renderer(tokenizer: PreTrainedTokenizerBase) -> ChatRenderer:
    """A canonical chat row (`messages`, `tools`) as one document: the whole chat rendered by the tokenizer's chat
    template, as inference renders it (no generation prompt: the last reply is part of the document)."""

    def render(chat: dict) -> str:
        tools = chat.get("tools")
        return render_chat(
            tokenizer,
            chat["messages"],
            add_generation_prompt=False,
            template_kwargs={"tools": tools} if tools else None,
        )

    return render


@dataclass(frozen=True)
class DocumentBoundaries:
    """What starts and ends every document: BOS when the tokenizer adds one to a text, and EOS, added here."""

    bos_token_id: int | None  # None: the tokenizer adds no BOS to a text, and neither does pt
    eos_token_id: int
    tokenizer_adds_eos: bool  # only for the log line: pt tokenizes without special tokens and appends EOS itself
    bos_token: str | None
    eos_token: str

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> DocumentBoundaries:
        """The policy of `tokenizer`, read from what it does to a one-word text. It must have an EOS token."""
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token")
        probe = list(tokenizer("pretraining")["input_ids"])
        adds_bos = tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id]
        return cls(
            bos_token_id=tokenizer.bos_token_id if adds_bos else None,
            eos_token_id=tokenizer.eos_token_id,
            tokenizer_adds_eos=probe[-1:] == [tokenizer.eos_token_id],
            bos_token=tokenizer.bos_token if adds_bos else None,
            eos_token=tokenizer.eos_token,
        )

    def __str__(self) -> str:
        bos = (
            f"BOS {self.bos_token!r} (id {self.bos_token_id}), as the tokenizer adds it,"
            if self.bos_token_id is not None
            else "no BOS (the tokenizer adds none)"
        )
        eos = "the tokenizer adds one too, not twice" if self.tokenizer_adds_eos else "the tokenizer adds none"
        return f"every document starts with {bos} and ends with EOS {self.eos_token!r} (id {self.eos_token_id}; {eos})"

    def wrap(self, ids: list[int]) -> list[int]:
        """A document's ids (tokenized without special tokens) with its BOS (when the policy has one) and EOS."""
        start = [self.bos_token_id] if self.bos_token_id is not None and ids[:1] != [self.bos_token_id] else []
        end = [] if ids[-1:] == [self.eos_token_id] else [self.eos_token_id]
        return start + ids + end


@dataclass
class DocumentReport:
    """What tokenization did to one split: documents, tokens, and those longer than `max_length`."""

    documents: int
    tokens: int  # BOS and EOS included, before any cut
    longer: int = 0  # documents longer than max_length
    cut_tokens: int = 0  # tokens dropped by cutting them (0 when packing splits them instead)
    max_length: int | None = None

    def __str__(self) -> str:
        text = f"{self.documents} documents, {self.tokens} tokens (BOS/EOS included)"
        if not self.longer:
            return text
        if self.cut_tokens:
            return (
                f"{text}; {self.longer} longer than max_length {self.max_length} were cut to it, "
                f"{self.cut_tokens} tokens dropped"
            )
        return f"{text}; {self.longer} longer than max_length {self.max_length} are split across packed rows"


def tokenize_documents(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    *,
    boundaries: DocumentBoundaries,
    max_length: int | None,
    cut_long: bool = True,
    num_proc: int | None = None,
    split_name: str = "train",
) -> tuple[Dataset, DocumentReport]:
    """Map checked `text` rows to `input_ids` (BOS/EOS as `boundaries` says), each cut to `max_length` when
    `cut_long`; the report counts what was cut. Batched over `datasets`' cache: memory bounded by the batch."""
    if not len(dataset):
        report = DocumentReport(0, 0, max_length=max_length)
        logger.info("%s split: %s", split_name, report)
        return Dataset.from_dict({"input_ids": []}, features=TOKENIZED_FEATURES), report
    limit = max_length if cut_long else None

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        documents = [boundaries.wrap(list(ids)) for ids in encoded]
        return {"input_ids": [ids[:limit] for ids in documents], "length": [len(ids) for ids in documents]}

    tokenized = dataset.map(
        encode,
        batched=True,
        remove_columns=dataset.column_names,
        features=Features({**TOKENIZED_FEATURES, "length": Value("int64")}),
        num_proc=num_proc,
        desc=f"Tokenizing {split_name} documents",
    )
    lengths = tokenized.data.column("length")
    report = DocumentReport(len(tokenized), pc.sum(lengths).as_py(), max_length=max_length)
    if max_length is not None:
        over = pc.subtract(lengths, max_length)
        longer = pc.greater(over, 0)
        report.longer = pc.sum(pc.cast(longer, "int64")).as_py()
        if limit is not None:
            report.cut_tokens = pc.sum(pc.filter(over, longer)).as_py() or 0
    logger.info("%s split: %s", split_name, report)
    return tokenized.remove_columns("length"), report


__all__ = [
    "DocumentBoundaries",
    "DocumentReport",
    "chat_document_renderer",
    "pt_row_problem",
    "tokenize_documents",
]
