"""Loading tokenizers and models the same way for every stage: dtype, attention, quantization, adapters, pad token."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import huggingface_hub
import torch
from accelerate import PartialState
from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id
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


MODEL_FILES = ("config.json", "adapter_config.json")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "vocab.json", "tekken.json")


def source_problem(source: str, key: str, files: tuple[str, ...], what: str, revision: str = "main") -> str | None:
    """What stops `source` (a recipe or command-line `key`) from being loaded as `what`, before anything loads it:
    a local path that does not exist or is a file, a folder without any of `files`, a hub id that is neither a
    valid id nor, offline, in the local cache. None when it can be loaded (a hub id online is left to the hub)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if any((path / name).is_file() for name in files):
            return None
        held = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
        return f"`{key}: {source}` holds no {what} (none of {', '.join(files)}; it holds {held})."
    if path.exists():
        return f"`{key}: {source}` is a file; give the folder of a {what} or a hub id."
    try:
        validate_repo_id(source)
    except HFValidationError:
        return (
            f"`{key}: {source}`: no such folder (looked in {Path.cwd()}), and it is not a hub id. Build or train it "
            "first (`make demo` builds data/tiny/), or run from the folder the path is relative to."
        )
    if constants.HF_HUB_OFFLINE and not any(
        isinstance(try_to_load_from_cache(source, name, revision=revision), str) for name in files
    ):
        return (
            f"`{key}: {source}` is a hub id, and the hub is offline (HF_HUB_OFFLINE=1) with no copy of it in the "
            f"local cache ({constants.HF_HUB_CACHE}). Download it once online, or give a local folder."
        )
    return None


# The kinds of model a tool loads: its architecture names end so, and how many outputs its head has (None: any).
MODEL_KINDS = {
    "causal LM": (("ForCausalLM", "ForConditionalGeneration"), None),
    "reward model": (("ForSequenceClassification",), 1),
}
ADAPTER_TASKS = {"CAUSAL_LM": "causal LM", "SEQ_CLS": "reward model"}


def model_kind_problem(source: str, key: str, kind: str) -> str | None:
    """Why the local model folder `source` is not a `kind` of `MODEL_KINDS` (a reward model given as a policy, a
    policy given as a judge), from its config alone; None when it is, or when it is a hub id (its loader checks)."""
    folder = Path(source)
    if (folder / "adapter_config.json").is_file():
        task = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("task_type")
        found = ADAPTER_TASKS.get(task)
        return None if found in (None, kind) else f"`{key}: {source}` is a {found} adapter, not a {kind}."
    if not (folder / "config.json").is_file():
        return None
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or []
    suffixes, outputs = MODEL_KINDS[kind]
    if architectures and not any(name.endswith(suffixes) for name in architectures):
        return f"`{key}: {source}` is a {', '.join(architectures)}, not a {kind}."
    labels = len(config.get("id2label") or {0: None, 1: None})  # transformers' default: 2 labels
    if outputs is not None and labels != outputs:
        return f"`{key}: {source}` has {labels} outputs; a {kind} has exactly {outputs}."
    return None


def model_problem(source: str, key: str, kind: str) -> str | None:
    """Why `source` cannot be loaded as a `kind` of `MODEL_KINDS`: `source_problem`, else `model_kind_problem`."""
    return source_problem(source, key, MODEL_FILES, "model") or model_kind_problem(source, key, kind)


def check_model_sources(model_args: ModelArguments) -> None:
    """Refuse, with one message naming the key, a model or tokenizer that cannot be loaded as given, and a recipe
    this machine cannot run (quantization or flash-attention without their GPU and package); nothing is loaded."""
    model = model_args.model_name_or_path
    problem = source_problem(model, "model_name_or_path", MODEL_FILES, "model", model_args.model_revision)
    if problem is None and model_args.tokenizer_name_or_path is not None:
        problem = source_problem(
            model_args.tokenizer_name_or_path, "tokenizer_name_or_path", TOKENIZER_FILES, "tokenizer"
        )
    elif problem is None and Path(model).is_dir() and not (Path(model) / "adapter_config.json").is_file():
        # An adapter folder may borrow its base's tokenizer; a full model folder must hold its own.
        if source_problem(model, "model_name_or_path", TOKENIZER_FILES, "tokenizer") is not None:
            problem = (
                f"`model_name_or_path: {model}` holds a model but no tokenizer: set `tokenizer_name_or_path` to the "
                "tokenizer it was trained with."
            )
    if problem is not None:
        raise RecipeError(problem)
    _check_quantization_possible(model_args)
    _check_attention_possible(model_args)


def _check_attention_possible(model_args: ModelArguments) -> None:
    if model_args.attn_implementation not in ("flash_attention_2", "flash_attention_3"):
        return
    if not torch.cuda.is_available():
        raise RecipeError(
            f"`attn_implementation: {model_args.attn_implementation}` runs on a CUDA GPU only; this machine has none. "
            "Set `attn_implementation: sdpa`."
        )
    if importlib.util.find_spec("flash_attn") is None:
        raise RecipeError(
            f"`attn_implementation: {model_args.attn_implementation}` needs the flash-attn package: "
            "`pip install -e '.[gpu]'`, or set `attn_implementation: sdpa`."
        )


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


def check_lora_targets(model: PreTrainedModel, model_args: ModelArguments) -> None:
    """Refuse `lora_target_modules` naming a module the model lacks, listing the ones it has, before peft fails
    inside the trainer's construction."""
    targets = model_args.lora_target_modules
    if not model_args.use_peft or targets in (None, "all-linear"):  # peft chooses
        return
    targets = [targets] if isinstance(targets, str) else targets  # TRL unwraps a list of one
    names = {name.rpartition(".")[2] for name, _ in model.named_modules()}
    missing = [target for target in targets if target not in names]
    if missing:
        linear = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise RecipeError(
            f"`lora_target_modules`: the model has no module named {', '.join(missing)}; its linear layers are "
            f"{', '.join(linear)} (or write `all-linear`)."
        )


def _check_one_vocabulary(tokenizer: PreTrainedTokenizerBase, embeddings: int, model: str) -> None:
    """Refuse a tokenizer whose base vocabulary alone outgrows the model's `embeddings`: another vocabulary, which
    resizing would paper over with new random rows for every token."""
    if tokenizer.vocab_size > embeddings:
        raise RecipeError(
            f"The tokenizer ({tokenizer.name_or_path}) has a vocabulary of {tokenizer.vocab_size} tokens and the "
            f"model ({model}) embeds {embeddings}: they are not one vocabulary. Use the model's own tokenizer "
            "(`tokenizer_name_or_path`, or unset it)."
        )


def check_vocabulary(tokenizer: PreTrainedTokenizerBase, model_args: ModelArguments) -> None:
    """`_check_one_vocabulary` from a local model folder's config, before the data is tokenized (a hub model is
    checked when it loads, by `match_embeddings_to_tokenizer`)."""
    config = Path(model_args.model_name_or_path, "config.json")
    if config.is_file():
        vocab_size = json.loads(config.read_text(encoding="utf-8")).get("vocab_size")
        if isinstance(vocab_size, int):
            _check_one_vocabulary(tokenizer, vocab_size, model_args.model_name_or_path)


def match_embeddings_to_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Grow the embedding matrix when the chat template added special tokens to the tokenizer; refuse a tokenizer
    of another vocabulary (`_check_one_vocabulary`)."""
    # `num_embeddings`, not the weight's shape: under ZeRO-3 the weight is a partitioned, empty placeholder.
    current = model.get_input_embeddings().num_embeddings
    _check_one_vocabulary(tokenizer, current, model.config.name_or_path)
    if len(tokenizer) > current:
        logger.info("Resizing token embeddings from %d to %d for added special tokens", current, len(tokenizer))
        model.resize_token_embeddings(len(tokenizer))
