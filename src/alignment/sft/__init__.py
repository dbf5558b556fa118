"""The dSFT stage of Zephyr, as one unit: its config (`config`), chat rows and their tokenizer (`rows`), trainer
(`trainer`) and builder (`stage`, registered in `alignment.stages`).

Chats become training tensors in `rows`: every assistant turn in its inference context (`alignment.chat.turns`),
truncated, and everything accounted for. TRL's SFTTrainer receives them already tokenized (`input_ids` and `labels`,
-100 where no loss is taken), so the mask is ours and TRL keeps doing what it does well: packing, padding-free
batches, collation and the training loop.
"""
