"""Loading tokenizers and models the same way for every stage: dtype, attention, quantization, adapters, pad token."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import huggingface_hub
import torch
from accelerate import PartialState
from peft import PeftConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from trl import get_quantization_config

from alignment.configs import ModelArguments

logger = logging.getLogger(__name__)


def is_adapter_folder(path: str, revision: str = "main") -> bool:
    """True when `path` (a local folder or a hub repo id) holds a PEFT adapter rather than full weights."""
    if Path(path).is_dir():
        return (Path(path) / "adapter_config.json").is_file()
    try:
        return huggingface_hub.file_exists(path, "adapter_config.json", revision=revision)
    except Exception as err:  # offline, private or missing repo: loading the model reports the real problem
        logger.info("Could not check whether %s is an adapter (%s); loading it as a full model", path, err)
        return False


def load_tokenizer(model_args: ModelArguments, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load the tokenizer and make sure it has a pad token.

    A tokenizer without one gets its EOS token as pad token: padded positions are masked out of attention and loss,
    so the choice does not change training, and it is logged once so it is never a surprise.
    """
    source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    # A local adapter folder saved without its tokenizer borrows its base's; hub adapters ship theirs.
    local_adapter = Path(source).is_dir() and is_adapter_folder(source)
    if local_adapter and not (Path(source) / "tokenizer_config.json").is_file():
        source = PeftConfig.from_pretrained(source).base_model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(
        source, revision=model_args.model_revision, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {source} has neither a pad token nor an EOS token to pad with.")
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("Tokenizer has no pad token: padding with its EOS token %r", tokenizer.eos_token)
    return tokenizer


def _check_quantization_possible(model_args: ModelArguments) -> None:
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return
    if not torch.cuda.is_available():
        raise RuntimeError(
            "`load_in_4bit`/`load_in_8bit` (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no GPU. "
            "Set `load_in_4bit: false` to train LoRA adapters on a full-precision base instead."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError("`load_in_4bit`/`load_in_8bit` needs bitsandbytes: `pip install -e '.[gpu]'`.")


def load_model(
    model_args: ModelArguments,
    *,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
    model_class: type = AutoModelForCausalLM,
    **model_kwargs,
) -> PreTrainedModel:
    """Load the model to train, with the recipe's dtype, attention implementation and quantization.

    `model_name_or_path` may be a LoRA adapter folder (the output of a LoRA SFT run, say): the adapter is merged
    into its base so the next stage starts from one plain model, as the original handbook's `is_adapter_model` did.
    """
    _check_quantization_possible(model_args)
    quantization_config = get_quantization_config(model_args)
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=trust_remote_code,
        dtype=dtype,
        attn_implementation=model_args.attn_implementation,
        quantization_config=quantization_config,
        # A quantized base is placed whole on this process's GPU; other models are placed by the trainer.
        device_map={"": PartialState().local_process_index} if quantization_config is not None else None,
        use_cache=not gradient_checkpointing,
        **model_kwargs,
    )
    source = model_args.model_name_or_path
    if is_adapter_folder(source, model_args.model_revision):
        adapter_config = PeftConfig.from_pretrained(source)
        logger.info(
            "%s is a LoRA adapter: merging it into its base %s", source, adapter_config.base_model_name_or_path
        )
        base = model_class.from_pretrained(adapter_config.base_model_name_or_path, **kwargs)
        model = PeftModel.from_pretrained(base, source).merge_and_unload()
        model.config.name_or_path = source
        return model
    return model_class.from_pretrained(source, **kwargs)


def match_embeddings_to_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the embedding matrix when the chat template added special tokens to the tokenizer."""
    # `num_embeddings`, not the weight's shape: under ZeRO-3 the weight is a partitioned, empty placeholder.
    current = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > current:
        logger.info("Resizing token embeddings from %d to %d for added special tokens", current, len(tokenizer))
        model.resize_token_embeddings(len(tokenizer))
