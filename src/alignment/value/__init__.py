"""Step value models in the style of ReST-MCTS*: a causal LM plus a scalar value head, trained on SFT and per-step Q.

Tree search over reasoning steps needs a model that scores each partial solution. The ReST-MCTS* authors trained one
on TRL's `AutoModelForCausalLMWithValueHead`, which TRL 1.x no longer ships; this package is our own version of that
stage, built on `transformers.Trainer` (checkpoints, resume, logging, DeepSpeed and PEFT come from there).

Data: four accepted row forms, one per dataset (`alignment.value.formats`; `to_trace` reads them into one
`StepTrace`, `value_row_problem` checks them). A string prompt is one user turn; a message list must end with a user
turn. Examples (one JSON line each in a file, wrapped here):

* ReST-MCTS*: a `prompt` and the solution's steps in order, each with its value Q in [-1, 1]. The trace is positive
  (its steps are also SFT targets) when its final step's Q is exactly 1.

      {"prompt": "Add 3, 4 and 5.", "response": [{"step": "3+4=7", "Q": 0.6}, {"step": "7+5=12", "Q": 1.0}]}

* LLaMA-Factory v0.6.1, as the ReST-MCTS* authors trained on it: `response` is one assistant message whose content
  is that same step list written as a JSON string. The string is parsed strictly (invalid JSON, a value that is not
  a non-empty list of {step, Q}, a Q outside [-1, 1] are refused); the trace then means exactly what the ReST-MCTS*
  form means.

      {"prompt": [{"role": "user", "content": "Add 3, 4 and 5."}],
       "response": [{"role": "assistant",
                     "content": "[{\\"step\\": \\"3+4=7\\", \\"Q\\": 0.6}, {\\"step\\": \\"7+5=12\\", \\"Q\\": 1}]"}]}

* TRL stepwise supervision: each step's Q is +1 when its label is true, -1 when false; the trace is positive when
  every label is true (a trace with a wrong step somewhere is not a demonstration to imitate, whatever its last label
  says).

      {"prompt": "Add 3, 4 and 5.", "completions": ["3+4=7", "7+5=12"], "labels": [true, true]}

* ReST-MCTS* released value data (what `utils/extract_both_samples.py` writes and `PRM/train_VM_*.py` train on):
  one partial solution and its value. `prompt_answer` is `"Problem:" + question + "\\nSolution:\\n" + steps` (the
  layout `MCTS_Task.get_step_value` scores; the Chinese one, `"问题:" + question + "\\n步骤:\\n【答案】" + steps`, is
  read too), each step one line ending in a newline. The question becomes the user turn and each non-blank line of
  the solution one step; a row without the prefix and separator is refused (the prompt cannot be told from the
  solution otherwise). `label` (in [0, 1]) is the value of the whole partial solution: the Q of its last step only,
  the earlier steps carry no target (`Q_IGNORE`). The trace is positive only when `label` is exactly 1: in
  ReST-MCTS*'s value targets (`treeNode.get_all_value_samples_vm`, `v = max(0, v_parent + (1 - v_parent) * r / m)`)
  only a complete solution whose final answer was verified correct (`r = 1`, `m = 1` steps to the answer) reaches 1;
  every partial solution stays below it.

      {"prompt_answer": "Problem:Add 3, 4 and 5.\\nSolution:\\nStep 1: 3+4=7\\nStep 2: 7+5=12\\n", "label": 1.0}

Both prompts are rendered with the chat template and its generation prompt (`render_prompt`), exactly as at inference
(`score_steps`): for the released form that is the question alone, not ReST-MCTS*'s "Problem: ...\\nSolution:\\n" text.
Forms do not mix in one mixture: `load_mixture` needs every source to have the same columns of the same types, and
refuses others ("Sources have different columns" / "different column types"). Write a mixture's files in one form;
the LLaMA-Factory form becomes the ReST-MCTS* form exactly with `row["response"] = json.loads(row["response"][0]
["content"])`.

Tokens (`tokenize_trace`): the rendered prompt, then each step as `step.strip() + "\\n"` tokenised on its own and
appended, so the tokens of a trace's first k steps do not depend on the steps after them (a search can score a
partial solution and extend it). Per token:

* `Q` is `Q_IGNORE` (-100.0) everywhere except at the last token of each step (the one carrying its newline), which
  holds that step's Q. The value is read at that position in training, evaluation and `score_steps`.
* `labels` are the step tokens of a positive trace, and `IGNORE_INDEX` elsewhere; prompt tokens are trained only with
  `train_on_prompt` (then in every trace: a prompt is never wrong).
* Sequences are cut at `max_length` (ReST-MCTS*'s `cutoff_len`), keeping the start; a step whose last token is cut
  off loses its target. `ValueTruncationReport` counts the steps lost; rows left with no target and no label are
  dropped and counted.

The ignore value is -100.0 rather than a recipe knob because the Trainer pads predictions and labels with -100 when it
gathers evaluation batches across steps and processes: any other value would turn that padding into Q targets.

Model (`ValueModel`): the causal LM (`body`, full or PEFT-wrapped) and `ValueHead`, a linear map of the last hidden
state to one scalar passed through tanh, computed in fp32 whatever the body's dtype. With `value_reads_likelihood`
the head adds `a * m`, `m` being the body's lowest token log-likelihood over the response so far
(`running_min_log_likelihood`; `response_mask` marks the response's tokens): a step is wrong where its tokens are not
the right step's, which the LM computes as it predicts them, while a small body cannot compute that check again at
the step's last token (on the tiny world the head alone stays near chance on the policy's own traces). Position ids
are derived from the attention mask, so left and right padding give the same values.

Loss (`joint_loss`): `sft_loss + value_loss_weight * value_loss`. `sft_loss` is the mean next-token cross-entropy over
the label tokens, and 0 (not NaN) when there are none (a batch of negative traces). `value_loss` is the squared error
`(value - Q)^2` summed over the Q positions and divided by (their count + 1e-3). In training both means run over the
whole optimizer step, every micro-batch of every process (the authors' LLaMA-Factory code averaged micro-batch
means instead): one process with batch 8 and two with batch 4 then compute the same loss and the same gradient.

Saving: `value_head.safetensors` (fp32, keys `weight` and `bias`, and `likelihood_weight` for a head that reads the
likelihood) is written beside the full model or the LoRA adapter, by `save_value_model`, in every checkpoint and in
the final output. The trainer saves from the state dict the Trainer gathers (under DeepSpeed ZeRO-3,
`accelerator.get_state_dict` consolidates the shards on rank 0), never from the live, possibly partitioned,
parameters. `load_value_model(path)` reloads either kind in one call.

Log-probs: the SFT term and the likelihood read `log p(token | prefix)` only at the positions they need, projected
through the LM head a chunk of tokens at a time (`token_log_probs`); no `[batch, seq, vocab]` logits are built.

Modules: `config` (`ValueConfig`), `formats` (the row forms and their readers, `StepTrace`), `rows` (`to_trace`,
tokens, `ValueCollator`), `modeling` (head, model, build, save, load), `token_log_probs` (the chunked log-probs),
`loss` (joint loss and metrics), `trainer`
(`ValueTrainer`), `scoring` (`score_traces`, `score_steps`), `stage` (`ValueStage`, the unit `alignment.stages`
registers as `value`). Import a name from its module; `score_steps` and `load_value_model` are also here, imported
on first use so that parsing a value recipe imports no model code.
"""

from alignment import entry_points

__getattr__ = entry_points(__name__, {"score_steps": "scoring", "load_value_model": "modeling"})
