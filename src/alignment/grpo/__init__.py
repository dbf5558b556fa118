"""The online RL stage: GRPO over TRL's `GRPOTrainer`, with a trained reward model, a rule or a step value model as
the reward.

TRL keeps GRPO in its stable API and has removed PPO; this stage is how a reward model trained by `run_rm.py`, or a
value model trained by `run_value.py`, is used online. Modules: `config` (`GRPOConfig`: TRL's, plus `rewards`),
`rewards` (the registry of reward kinds and how step values become one reward), `reward_functions` (each kind built
as TRL's reward function), `prompts` (the prompt turns of any chat source), `trainer`, `stage` (`GRPOStage`, the
unit `alignment.stages` registers as `grpo`).
"""
