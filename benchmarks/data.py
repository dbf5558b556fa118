"""Mixed-length synthetic data for the benchmarks: chats, preference pairs and step traces whose message lengths are
log-normal, the long-tailed shape of real chat data (UltraChat, UltraFeedback), capped so nothing is ever truncated.

Every length here is in tokens of the benchmark tokenizer (`tiny_world`'s byte-level BPE with the zephyr
template). Text is drawn word by word, Zipf-weighted, from a fixed list of English words plus the tokenizer's own
whole-word tokens, counting each word's tokens as it goes, so a message of n tokens costs n tokens to the model.
Byte-level BPE has no unknown token, and none of these words needs one.

Caps: a chat, a pair's prompt plus its longer reply, or a trace never exceeds `max_length` tokens once rendered, so
our scripts' truncation and TRL's never cut anything and every configuration trains on exactly the same tokens. A
row's lengths are redrawn until they fit: the distribution is the log-normal conditioned on fitting.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tiny_world import STYLE_FLAW

WORDS = (
    "the of and to a in is you that it he was for on are as with his they I at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "sum add compute answer step check result because first next finally therefore carry digit total value"
).split()
# Tokens the zephyr template writes around each message: the role marker, "\n", the end-of-turn token and "\n".
MESSAGE_OVERHEAD = 4
# The generation prompt of a pair's prompt or a trace's prompt: "<|assistant|>" and "\n".
GENERATION_PROMPT_TOKENS = 2
# Share of chats that open with a system prompt.
SYSTEM_PROMPT_SHARE = 0.3
# Draws of a row's message lengths before concluding that max_length is too short for the profile.
MAX_DRAWS = 1000


@dataclass(frozen=True)
class LengthProfile:
    """Median tokens of each kind of message and the log-normal spread, scaled to `max_length`.

    At max_length 256: user turns median 14 tokens, assistant replies 32, system prompts 16, reasoning steps 12;
    sigma 0.9 puts the 95th percentile at 4.4x the median, so a few messages come close to the cap.
    """

    max_length: int
    sigma: float = 0.9

    def median(self, kind: str) -> float:
        share = {"user": 1 / 18, "assistant": 1 / 8, "system": 1 / 16, "step": 1 / 21}[kind]
        return share * self.max_length

    def sample(self, rng: random.Random, kind: str) -> int:
        """One message length in tokens: log-normal around `median(kind)`, at least 1."""
        return max(1, round(rng.lognormvariate(math.log(self.median(kind)), self.sigma)))


class TextSampler:
    """Text of a requested token length, from Zipf-weighted words whose token counts are known exactly."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        vocab_words = [token[1:] for token in tokenizer.get_vocab() if token.startswith("Ġ") and token[1:].isalpha()]
        self.words = sorted(set(WORDS) | set(vocab_words))
        # Byte-level BPE splits text into words before merging, so a text's tokens are the sum of its words'. A word
        # opening a message is written without its leading space, which can change its tokens: both are counted.
        self.first_costs = [len(tokenizer(word, add_special_tokens=False)["input_ids"]) for word in self.words]
        self.costs = [len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) for word in self.words]
        self.weights = [1 / rank for rank in range(1, len(self.words) + 1)]  # Zipf: the usual shape of word counts
        self.flaw_cost = len(tokenizer(STYLE_FLAW, add_special_tokens=False)["input_ids"])

    def text(self, rng: random.Random, tokens: int) -> str:
        """Words adding up to exactly `tokens` tokens (at least 1): each word is drawn among those that still fit,
        and single-token words always do."""
        words, left = [], max(1, tokens)
        while left > 0:
            costs = self.costs if words else self.first_costs
            fitting = [i for i, cost in enumerate(costs) if cost <= left]
            index = rng.choices(fitting, weights=[self.weights[i] for i in fitting])[0]
            words.append(self.words[index])
            left -= costs[index]
        return " ".join(words)


def _draw_fitting(
    rng: random.Random, profile: LengthProfile, kinds: list[str], cost: Callable[[list[int]], int], budget: int
) -> list[int]:
    """One length per message of `kinds`, drawn from the profile and redrawn together until `cost(lengths)` fits in
    `budget`: the profile conditioned on fitting, no message squeezed to make room."""
    for _ in range(MAX_DRAWS):
        lengths = [profile.sample(rng, kind) for kind in kinds]
        if cost(lengths) <= budget:
            return lengths
    raise ValueError(f"max_length {profile.max_length} leaves no room for messages {kinds}")


def _roles(rng: random.Random, exchanges: int) -> list[str]:
    """An optional system prompt, then `exchanges` user/assistant exchanges."""
    return (["system"] if rng.random() < SYSTEM_PROMPT_SHARE else []) + ["user", "assistant"] * exchanges


def chat_rows(tokenizer: PreTrainedTokenizerBase, n: int, *, max_length: int, seed: int) -> list[dict]:
    """`n` SFT rows `{"messages": [...]}`: an optional system prompt, then 1-3 user/assistant exchanges."""
    rng, sampler, profile = random.Random(seed), TextSampler(tokenizer), LengthProfile(max_length)
    rows = []
    for _ in range(n):
        roles = _roles(rng, exchanges=rng.randint(1, 3))
        lengths = _draw_fitting(rng, profile, roles, sum, max_length - MESSAGE_OVERHEAD * len(roles))
        messages = [
            {"role": role, "content": sampler.text(rng, length)} for role, length in zip(roles, lengths, strict=True)
        ]
        rows.append({"messages": messages})
    return rows


def preference_rows(tokenizer: PreTrainedTokenizerBase, n: int, *, max_length: int, seed: int) -> list[dict]:
    """`n` pairs in TRL's conversational form: a prompt of 0-2 earlier exchanges and a user turn, a `chosen` reply and
    a `rejected` one of independent length that ends with `STYLE_FLAW` (what the model has to learn to disprefer)."""
    rng, sampler, profile = random.Random(seed), TextSampler(tokenizer), LengthProfile(max_length)
    rows = []
    for _ in range(n):
        roles = _roles(rng, exchanges=rng.randint(1, 3))[:-1]  # the prompt ends with a user turn

        def cost(lengths: list[int]) -> int:
            *prompt, chosen, rejected = lengths
            return sum(prompt) + max(chosen, rejected + sampler.flaw_cost)

        budget = max_length - MESSAGE_OVERHEAD * (len(roles) + 1)
        *prompt_lengths, chosen, rejected = _draw_fitting(
            rng, profile, [*roles, "assistant", "assistant"], cost, budget
        )
        prompt = [
            {"role": role, "content": sampler.text(rng, length)}
            for role, length in zip(roles, prompt_lengths, strict=True)
        ]
        rows.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": sampler.text(rng, chosen)}],
                "rejected": [{"role": "assistant", "content": sampler.text(rng, rejected) + STYLE_FLAW}],
            }
        )
    return rows


def trace_rows(tokenizer: PreTrainedTokenizerBase, n: int, *, max_length: int, seed: int) -> list[dict]:
    """`n` value rows in the ReST-MCTS* form `{"prompt", "response": [{"step", "Q"}]}`: 1-6 steps; half the traces
    go wrong at one step, which then carries `STYLE_FLAW`, and Q is +1 before it and -1 from it on."""
    rng, sampler, profile = random.Random(seed), TextSampler(tokenizer), LengthProfile(max_length)
    rows = []
    for _ in range(n):
        num_steps = rng.randint(1, 6)
        wrong_at = rng.randrange(num_steps) if rng.random() < 0.5 else num_steps
        # Each step is tokenized as `step + "\n"`; a wrong one also carries the flaw.
        extra = num_steps + (sampler.flaw_cost if wrong_at < num_steps else 0)
        budget = max_length - MESSAGE_OVERHEAD - GENERATION_PROMPT_TOKENS - extra
        prompt_length, *steps = _draw_fitting(rng, profile, ["user"] + ["step"] * num_steps, sum, budget)
        response = [
            {
                "step": sampler.text(rng, length) + (STYLE_FLAW if i == wrong_at else ""),
                "Q": 1.0 if i < wrong_at else -1.0,
            }
            for i, length in enumerate(steps)
        ]
        rows.append({"prompt": sampler.text(rng, prompt_length), "response": response})
    return rows
