"""The KTO stage (Kahneman-Tversky Optimization, TRL's `KTOTrainer`): preferences as they come from real feedback,
one completion and a thumbs up or down, no pairs needed.

Data. Rows are TRL's unpaired form (`prompt`, `completion`, `label`), as strings or messages; LLaMA-Factory's
`kto_tag` rows (sharegpt, alpaca); or preference pairs split into a desirable and an undesirable row, only when the
source's entry asks for it (`format: unpaired_preference`, `unpaired_sharegpt_preference`,
`unpaired_alpaca_preference`; `alignment.data.formats`). They become token ids here, not in TRL: the prompt's
inference ids, then the completion's ids after them up to and including the end-of-turn token
(`alignment.chat.turns`), the completion cut to `max_length` and every cut counted.

Weights. `desirable_weight` and `undesirable_weight` left unset balance the training split's labels by the KTO
paper's rule (`alignment.kto.config.balanced_weights`); the values are logged.

Reference. Full fine-tuning keeps a frozen copy of the starting model; LoRA uses the base with the adapter disabled;
with `precompute_ref_log_probs` the reference log-probs are cached on disk across runs, as DPO's are
(`alignment.runtime.reference`).

Modules: `config` (`KTOConfig` and the weights rule), `rows` (the row check and tokenization), `trainer`
(`UnpairedPreferenceTrainer`), `stage` (`KTOStage`, the unit `alignment.stages` registers as `kto`).
"""
