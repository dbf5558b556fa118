"""The reward-model stage: pairwise reward models over TRL's `RewardTrainer`, and what TRL lacks for them.

TRL already supplies the sequence-classification head with one output on any causal LM, the pair collator (chosen
and rejected rows of the same pairs padded together, right-padded), the loss `-logsigmoid(r_chosen - r_rejected
[- margin])` with optional reward centering (`center_rewards_coefficient`), LoRA/QLoRA wrapping and saving. This
module adds:

* **Pair tokenization** (`tokenize_pairs`): every row form of `alignment.data.pairs` (UltraFeedback, TRL
  conversational, plain strings) rendered with the chat template exactly as at inference, prompt + reply up to and
  including the end-of-turn token; pairs longer than `max_length` are dropped and counted (truncating would cut off
  the token the reward is read from).
* **The reward position**: Hugging Face sequence-classification models read the reward at the rightmost token that
  is not the pad token. That is the last real token, on either padding side, exactly when no sequence ends with the
  pad token; a sequence that does (a tokenizer padding with the same token that ends an assistant turn) is refused,
  naming the row, instead of silently reading the reward one token early.
* **Length-grouped batching for pairs** (`alignment.runtime.samplers.PairLengthGroupedSampler`): transformers'
  `group_by_length` infers lengths
  from an `input_ids` column and fails on pairs ("Can only automatically infer lengths for datasets whose items are
  dictionaries with an 'input_ids' key"). Here pairs are grouped by the longer of chosen and rejected, the width the
  collator pads both to, with transformers' mega-batch grouping and a generator seeded by `seed + epoch`. The
  padding fraction with and without grouping is logged when training starts.
* **Exact metrics** (`reward_statistics`): accuracy, margin mean, reward mean and std for chosen and rejected, over
  every pair since the last log (train) or of the whole held-out split (eval), not averages of per-batch values.
* **Scoring** (`score`): one float per conversation from a saved full model or LoRA adapter folder, with the same
  rendering as training and position ids taken from the attention mask, so scores do not depend on batch size or
  padding side.

Modules: `config` (`RewardConfig`, `reward_peft_config`), `pairs` (row schema and pair tokenization), `trainer`
(`PairwiseRewardTrainer`, `reward_statistics`), `scoring` (`load_reward_model`, `score_with`, `score`), `stage`
(`RewardStage`, the unit `alignment.stages` registers as `rm`). Import a name from its module;
`score` and `load_reward_model` are also here, imported on first use so that parsing a reward recipe imports no model
code.
"""

from alignment import entry_points

__getattr__ = entry_points(__name__, {"score": "scoring", "load_reward_model": "scoring"})
