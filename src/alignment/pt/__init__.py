"""The continued-pretraining stage (`pt`, LLaMA-Factory's name), as one unit: raw text, every token trained.

Modules: `config` (`PTConfig`: TRL's `SFTConfig`, `bfd_split` packing by default), `text` (the row check, the
documents' BOS/EOS policy and their tokenizer, with its report of what `max_length` cut), `stage` (`PTStage`, the unit
`alignment.stages` registers as `pt`). Documents come from a `text` column (JSON, JSON Lines, parquet, hub),
from .txt files (`txt_documents`: one per file, or one per blank-line-separated block), or from any chat source whose
entry names its format, rendered whole by the chat template (`alignment.data.conversion.text_target`).

TRL's SFTTrainer trains them in its language-modeling mode: each document reaches it as `input_ids` alone, ending in
EOS, and TRL's labels are those ids (`completion_only_loss` off: no token is masked). Packing (`packing: true`) puts
several documents in one row with their lengths, so that their position ids restart at each document and no token
attends across a document boundary (padding-free batches: the block-diagonal mask of `position_ids` on sdpa and
eager attention, the varlen kernels on flash attention).
"""
