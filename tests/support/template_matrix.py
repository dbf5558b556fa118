"""The template x real-vocabulary matrix: every vendor template TRL ships and every template we ship, each on its
family's real vocabulary (or the closest real one with the template's special tokens added), over chats with and
without a system prompt, 1-4 turns, CJK, emoji, code and reasoning.

Each chat is encoded by `alignment.chat.turns.encode_chat` and checked by `tests/support/invariant.py`: a wrong mask
fails the check. The verdicts (exact: one sequence; expanded: one example per group of turns sharing an inference
context; refused, with the check it failed) are tabulated into `src/alignment/chat/chat_templates/README.md`:

    python -m tests.support.template_matrix          # rewrite the matrix in the README
    python -m tests.support.template_matrix --check  # exit 1 when the README is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import trl

from alignment.chat.templates import ChatTemplateError, list_chat_templates, load_chat_template
from alignment.chat.turns import encode_chat
from tests.support.invariant import check_invariant
from tests.support.real_tokenizers import add_special_tokens_for_template, build

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
README = Path(__file__).resolve().parents[2] / "src" / "alignment" / "chat" / "chat_templates" / "README.md"
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"

# The real vocabulary each template family ships with; templates of families no pip package ships a vocabulary for
# get the closest real one (cl100k, a tiktoken BPE like Llama-3's and gpt-oss's) with the template's tokens added.
FAMILY_VOCABULARY = [
    ("qwen3_5", "qwen3.6"),
    ("qwen3_6", "qwen3.6"),
    ("qwen3_8", "qwen3.6"),
    ("qwen", "qwen3"),
    ("chatml", "qwen3"),
    ("zephyr", "mistral-7b-v0.1"),
    ("llama2", "mistral-7b-v0.1"),
    ("vicuna", "mistral-7b-v0.1"),
    ("llava_next", "mistral-7b-v0.1"),
    ("mistral_instruct", "mistral-instruct-v3"),
]
CLOSEST = "cl100k"
MULTIMODAL = {"idefics3", "smolvlm", "llava_next", "qwen2_5_vl", "qwen3_vl"}

REASONING = "Add the units first: 7 + 5 = 12, carry 1."


def _chat(pairs: list[tuple[str, str]], system: str | None = None, reasoning: bool = False) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    for user, assistant in pairs:
        reply = {"role": "assistant", "content": assistant}
        if reasoning:  # the keys templates read reasoning from: Qwen3/Nemotron/GLM, and gpt-oss/LFM2.5
            reply.update(reasoning_content=REASONING, thinking=REASONING)
        messages += [{"role": "user", "content": user}, reply]
    return messages


CHATS: dict[str, list[dict]] = {
    "1 turn": _chat([("What is 17 + 25?", "17 + 25 = 42.")]),
    "system, 1 turn": _chat([("Hi!", "Hello! How can I help?")], system="You are a terse assistant."),
    "2 turns, CJK + emoji": _chat(
        [("你好，今天怎么样？", "很好，谢谢！😀"), ("日本語は？", "はい、少し話せます 👍🏽")]
    ),
    "system, 3 turns, code": _chat(
        [
            ("Write a Python add.", "```python\ndef add(a, b):\n\treturn a + b\n```"),
            ("Now with types.", "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```"),
            ("Thanks.", "You're welcome."),
        ],
        system="You write code.",
    ),
    "4 turns": _chat([("a?", "A."), ("b?", "B."), ("c?", "C."), ("d?", "D.")]),
    "reasoning, 2 turns": _chat([("What is 17 + 25?", "42."), ("And 7 + 5?", "12.")], reasoning=True),
    "reasoning in content, 2 turns": _chat(
        [
            ("What is 7 + 5?", f"<think>\n{REASONING}\n</think>\n\n12."),
            ("And 2 + 2?", "<think>\nEasy.\n</think>\n\n4."),
        ]
    ),
}


def vendor_templates() -> dict[str, str]:
    """Every original (not `_training`) template TRL ships, by name."""
    return {
        path.stem: path.read_text(encoding="utf-8")
        for path in sorted(TRL_TEMPLATES.glob("*.jinja"))
        if not path.stem.endswith("_training")
    }


def vocabulary_for(name: str) -> str:
    return next((vocabulary for prefix, vocabulary in FAMILY_VOCABULARY if name.startswith(prefix)), CLOSEST)


@dataclass
class PairResult:
    """The verdicts of one template on one vocabulary."""

    template: str
    source: str  # "TRL" or "ours"
    vocabulary: str
    added_tokens: list[str]
    verdicts: dict[str, str] = field(default_factory=dict)  # chat name -> "exact" / "expanded" / "refused: kind"
    reasons: dict[str, str] = field(default_factory=dict)  # refused chat name -> the message

    @property
    def counts(self) -> Counter[str]:
        return Counter(verdict.split(":")[0] for verdict in self.verdicts.values())


def as_blocks(messages: list[dict]) -> list[dict]:
    """Content as a list of typed text blocks, the form multimodal templates read."""
    return [{**message, "content": [{"type": "text", "text": message["content"]}]} for message in messages]


def run_pair(name: str, source: str, origin: str, cache_dir: Path | None) -> PairResult:
    """Encode every chat under one template on its vocabulary; `check_invariant` raises on any wrong mask."""
    vocabulary = vocabulary_for(name)
    tok = build(vocabulary, cache_dir=cache_dir)
    tok.chat_template = source
    added = add_special_tokens_for_template(tok, source)
    result = PairResult(name, origin, vocabulary, added)
    for chat_name, messages in CHATS.items():
        messages = as_blocks(messages) if name in MULTIMODAL else messages
        try:
            encoding = encode_chat(tok, messages)
        except ChatTemplateError as err:
            result.verdicts[chat_name] = f"refused: {err.kind}"
            result.reasons[chat_name] = str(err)
            continue
        check_invariant(tok, messages, encoding)
        result.verdicts[chat_name] = encoding.layout
    return result


def run_matrix(cache_dir: Path | None = None) -> list[PairResult]:
    templates = [(name, source, "TRL") for name, source in vendor_templates().items()]
    templates += [(name, load_chat_template(name), "ours") for name in list_chat_templates()]
    return [run_pair(name, source, origin, cache_dir) for name, source, origin in templates]


def markdown(results: list[PairResult]) -> str:
    """The README section: one row per template, with counts and the refusals' checks."""
    totals = Counter()
    for result in results:
        totals.update(result.counts)
    lines = [
        BEGIN,
        f"{len(results)} templates x {len(CHATS)} chats ({', '.join(CHATS)}); wrong masks: 0 (every accepted chat "
        f"passes `tests/support/invariant.py`). Totals: {totals['exact']} exact, {totals['expanded']} expanded, "
        f"{totals['refused']} refused. Regenerate with `python -m tests.support.template_matrix`.",
        "",
        "| template | from | vocabulary (+ added tokens) | exact | expanded | refused (check failed, chats) |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        refusals = Counter(v.split(": ", 1)[1] for v in result.verdicts.values() if v.startswith("refused"))
        refused = "; ".join(f"{kind} ({count})" for kind, count in refusals.most_common()) or "-"
        added = f" + {len(result.added_tokens)}" if result.added_tokens else ""
        counts = result.counts
        lines.append(
            f"| `{result.template}` | {result.source} | {result.vocabulary}{added} | {counts['exact']} | "
            f"{counts['expanded']} | {counts['refused']}: {refused} |"
        )
    lines.append(END)
    return "\n".join(lines)


def readme_with(section: str) -> str:
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text:
        return text.rstrip() + "\n\n## Templates x real vocabularies\n\n" + section + "\n"
    head, rest = text.split(BEGIN, 1)
    return head + section + rest.split(END, 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's matrix is out of date")
    parser.add_argument("--cache_dir", type=Path, default=None, help="where built tokenizers are cached")
    args = parser.parse_args()
    updated = readme_with(markdown(run_matrix(args.cache_dir)))
    if args.check:
        sys.exit(0 if updated == README.read_text(encoding="utf-8") else 1)
    README.write_text(updated, encoding="utf-8")


if __name__ == "__main__":
    main()
