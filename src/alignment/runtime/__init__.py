"""What every run shares and no stage owns.

- `stage`: `Stage`, the base of a stage unit (rows -> token ids -> model -> trainer -> save).
- `cli`: `run_cli`, one message and exit status 2 for a user's mistake (`USER_ERRORS`), a traceback for a bug.
- `lifecycle`: a run's start (logging, launch check, `output_dir`, resolved config, tokenizer) and end (train with
  resume, evaluate, save, model card).
- `loading`: models and tokenizers, safely (no remote code, no pickle unless asked).
- `reliability`: crash-safe checkpoints (manifests), finished runs, `output_dir` checks and its lock, the
  finite-loss check.
- `preemption`: SIGTERM and SIGINT finish the step, save a checkpoint there, and stop with one line (exit 75).
- `reference`: the frozen reference of DPO and KTO (the copy, or none with LoRA) and the on-disk cache of its
  log-probs across runs.
- `samplers`: preference pairs batched by length. `plots`: the curves written beside a model.
- `rules`: a user's `module:function` judge of a reply.
- `private_hooks`: every private TRL/transformers name we override, call or read, checked against the installed
  versions by a unit test.

The runtime knows no stage: stages import it, never the other way.
"""
