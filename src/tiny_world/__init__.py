"""The offline toy world of the demo (`make demo`) and the tests: not part of the handbook library (`alignment`).

A tokenizer trained in-process, a random tiny Llama, and chats whose quality a rule decides. No hub is needed
anywhere here, so `make demo` and the tests run on a machine without network. The task is two-digit addition inside
a short multi-turn chat:

    system     You are a friendly calculator.           (half of the chats)
    user       hello there
    assistant  Hello! Send me a sum and I will add it.
    user       What is 38+47?
    assistant  38+47=85

Every assistant turn must be learned (the greeting reply and the sum), so a loss mask that keeps only the last
turn, as a completion-only collator does, leaves the greeting reply untrained and shows up in held-out loss.
Held-out chats use operand pairs never seen in training, so held-out accuracy measures addition, not recall.

    arithmetic  the chats, the style flaw, preference pairs, their unpaired (KTO) rows, the rule `answer_is_correct`
    steps       step traces for value models
    chains      chained additions of 3-5 steps, the task of value-guided search (`alignment.search`)
    build       tokenizer, model, `build_tiny_world` and the split writers
    evaluation  greedy accuracy by the rule and held-out loss
    __main__    the command line: `python -m tiny_world build` and `python -m tiny_world evaluate`
"""

from tiny_world.arithmetic import (
    STYLE_FLAW,
    answer_is_clean,
    answer_is_correct,
    arithmetic_chat,
    arithmetic_rows,
    operand_pairs,
    preference_rows,
    sum_is_correct,
    text_rows,
    unpaired_rows,
    with_style_flaw,
    wrong_answer,
)
from tiny_world.build import (
    KTO_DESIRABLE_SHARE,
    NUM_TRAIN_ROWS,
    TEACHER_FLAW_SHARE,
    build_model,
    build_tiny_world,
    build_tokenizer,
    write_base,
    write_jsonl_splits,
    write_step_data,
)
from tiny_world.chains import (
    chain_prompt,
    chain_rows,
    chain_steps,
    final_answer_is_correct,
    prompt_rows,
    step_correctness,
    value_rows,
    write_chain_data,
)
from tiny_world.evaluation import arithmetic_accuracy, evaluate, held_out_loss
from tiny_world.steps import addition_trace, step_rows

__all__ = [
    "KTO_DESIRABLE_SHARE",
    "NUM_TRAIN_ROWS",
    "STYLE_FLAW",
    "TEACHER_FLAW_SHARE",
    "addition_trace",
    "answer_is_clean",
    "answer_is_correct",
    "sum_is_correct",
    "arithmetic_accuracy",
    "arithmetic_chat",
    "arithmetic_rows",
    "build_model",
    "build_tiny_world",
    "build_tokenizer",
    "chain_prompt",
    "chain_rows",
    "chain_steps",
    "evaluate",
    "final_answer_is_correct",
    "held_out_loss",
    "operand_pairs",
    "preference_rows",
    "prompt_rows",
    "step_correctness",
    "step_rows",
    "text_rows",
    "unpaired_rows",
    "value_rows",
    "write_base",
    "with_style_flaw",
    "write_chain_data",
    "write_jsonl_splits",
    "write_step_data",
    "wrong_answer",
]
