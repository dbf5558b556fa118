"""The dDPO stage: its recipe config, preference data as token ids, the reference model, cached reference
log-probs, and a `DPOTrainer` that also computes the losses TRL 1.16 lacks.

Data. Rows in any form of `alignment.data.pairs` become token ids here, not in TRL (`encode_pair`): the prompt's
inference ids, then each reply's ids after them (`alignment.chat.turns`), so a template that writes its own BOS gets
one BOS, exactly as in SFT and at inference. The prompt keeps its end (`max_prompt_length`: the last turns and the
generation prompt are what the reply depends on); the replies keep their start and are cut to
`max_length - prompt length`. Every cut is counted and logged; a pair whose prompt leaves no room for a reply token,
or whose replies become identical once cut, is dropped and counted, never trained on silently.

Reference. Full fine-tuning keeps a frozen copy of the starting model; LoRA/QLoRA uses the base with the adapter
disabled (no second copy); `orpo` and `simpo` need no reference and none is loaded. With
`precompute_ref_log_probs`, the reference log-probs are computed in one pass before training and cached on disk
(`ref_logps_cache_dir`), keyed by the reference weights, the token ids (hence data, template, tokenizer and
truncation), the lengths, `ld_alpha` and the precision: three epochs, a re-run, a resume or a `beta` sweep reuse them.

Losses. `loss_type` takes every loss of TRL's `DPOTrainer` plus `orpo`, `simpo` and `kto_pair`
(`alignment.dpo.losses`); `sigmoid` with `label_smoothing > 0` is conservative DPO; `pref_ftx` adds an SFT
term on the chosen reply to any of them except `orpo`, which has its own.

Modules: `config` (`DPOConfig` and its checks), `losses` (the registry of preference losses and ours), `pairs`
(tokenization and truncation), `reference` (the reference model and its log-prob cache), `trainer`
(`PreferenceTrainer`), `stage` (`DPOStage`, the unit `alignment.stages` registers as `dpo`).
"""
