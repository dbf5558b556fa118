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

from alignment.recipes.arguments import ModelArguments
from alignment.recipes.parser import RecipeError

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

    A tokenizer without one pads with its unknown token, or else its EOS token: padded positions are masked out of
    attention and loss, so the choice does not change training, and it is logged once so it is never a surprise.
    """
    source = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    # A local adapter folder saved without its tokenizer borrows its base's; hub adapters ship theirs.
    local_adapter = Path(source).is_dir() and is_adapter_folder(source)
    if local_adapter and not (Path(source) / "tokenizer_config.json").is_file():
        source = PeftConfig.from_pretrained(source).base_model_name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, revision=model_args.model_revision, trust_remote_code=trust_remote_code
        )
    except ValueError as err:
        if "trust_remote_code" not in str(err):
            raise
        raise RecipeError(
            f"The tokenizer of {source} needs code from its repository. Set `trust_remote_code: true` in the "
            "recipe only if you trust that code."
        ) from err
    if tokenizer.pad_token is None:
        # Prefer the unknown token (Llama-2, Mistral): EOS often ends assistant turns (Zephyr's </s>), and a reward
        # model reads its score at the last token that is not the pad token.
        pad = tokenizer.unk_token or tokenizer.eos_token
        if pad is None:
            raise ValueError(f"The tokenizer of {source} has neither a pad, an unknown nor an EOS token to pad with.")
        tokenizer.pad_token = pad
        logger.info("Tokenizer has no pad token: padding with %r", pad)
    return tokenizer


def _check_quantization_possible(model_args: ModelArguments) -> None:
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return
    if not torch.cuda.is_available():
        raise RecipeError(
            "`load_in_4bit`/`load_in_8bit` (QLoRA) needs a CUDA GPU and bitsandbytes; this machine has no GPU. "
            "Set `load_in_4bit: false` to train LoRA adapters on a full-precision base instead."
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RecipeError("`load_in_4bit`/`load_in_8bit` needs bitsandbytes: `pip install -e '.[gpu]'`.")


PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".pkl", ".ckpt")


def refuse_pickle_only_weights(folder: str | Path, *, allow_pickle_weights: bool) -> None:
    """Stop before loading a local model folder whose weights exist only as pickle files, unless the recipe allows
    it: unpickling runs whatever code the file holds. Hub models are held to the same rule by `use_safetensors`."""
    folder = Path(folder)
    if allow_pickle_weights or not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(path.name for path in folder.iterdir() if path.suffix in PICKLE_SUFFIXES)
    if pickled and pickled != ["training_args.bin"]:
        raise RecipeError(
            f"{folder} holds its weights only as pickle files ({', '.join(pickled)}), which can run arbitrary code "
            "when loaded. Convert them to safetensors, or set `allow_pickle_weights: true` if you trust the source."
        )


def _from_pretrained(model_class: type, source: str, *, allow_pickle_weights: bool, **kwargs) -> PreTrainedModel:
    """`model_class.from_pretrained`, safetensors only unless pickle is allowed, with the recipe keys named in the
    errors a user can fix."""
    refuse_pickle_only_weights(source, allow_pickle_weights=allow_pickle_weights)
    try:
        return model_class.from_pretrained(source, use_safetensors=None if allow_pickle_weights else True, **kwargs)
    except (OSError, ValueError) as err:
        if "trust_remote_code" in str(err):
            raise RecipeError(
                f"{source} needs code from its repository to load (a custom architecture). Set "
                "`trust_remote_code: true` in the recipe only if you trust that code."
            ) from err
        if "safetensors" in str(err).lower() and not allow_pickle_weights:
            raise RecipeError(
                f"{source} has no safetensors weights ({err}). Set `allow_pickle_weights: true` to load pickle "
                "weights if you trust the source."
            ) from err
        raise


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
        allow = model_args.allow_pickle_weights
        base = _from_pretrained(
            model_class, adapter_config.base_model_name_or_path, allow_pickle_weights=allow, **kwargs
        )
        refuse_pickle_only_weights(source, allow_pickle_weights=allow)
        model = PeftModel.from_pretrained(base, source).merge_and_unload()
        model.config.name_or_path = source
        return model
    return _from_pretrained(model_class, source, allow_pickle_weights=model_args.allow_pickle_weights, **kwargs)


def match_embeddings_to_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the embedding matrix when the chat template added special tokens to the tokenizer."""
    # `num_embeddings`, not the weight's shape: under ZeRO-3 the weight is a partitioned, empty placeholder.
    current = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > current:
        logger.info("Resizing token embeddings from %d to %d for added special tokens", current, len(tokenizer))
        model.resize_token_embeddings(len(tokenizer))
