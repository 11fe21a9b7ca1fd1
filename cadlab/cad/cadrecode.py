"""CAD-Recode: a point cloud goes in, CadQuery code comes out.

The whole road, one STL file at a time, eight files per batch::

    STL file --load_mesh--> mesh --normalize_mesh--> centred, longest side in [-1, 1]
         --mesh_to_point_cloud--> P (256, 3)                      [STLDataset]
    prepare_inputs:  input_ids      = [<|im_end|>] * 256 + [<|im_start|>]
                     attention_mask = [-1] * 256         + [1]
    model.generate(input_ids, attention_mask, point_cloud=P)
        prefill (empty KV cache):
            E = embed_tokens(input_ids)                      (B, 257, H)
            E[mask == -1] = FourierPointEncoder(P)           the 256 pad embeddings are replaced
            mask[mask == -1] = 1                             (in a copy: the caller's mask is kept)
            logits = lm_head(Qwen2Model(E, mask))            -> first code token
        every later step: only the new token goes through the model; keys and values
            of the 257 prompt positions come from the KV cache, points are never re-embedded
    text = decode(tokens)  ->  extract_code: after <|im_start|>, before <|endoftext|>
    write {stem}+{k}.py                                      [reconstruct_folder]

``CADRecode`` has exactly the module names, parameter names and shapes of the released
``filapro/cad-recode-v1.5`` checkpoint (a ``Qwen2ForCausalLM`` on ``Qwen/Qwen2-1.5B`` plus
``point_encoder.projection``), so ``CADRecode.from_pretrained`` loads it unchanged. Compared with
the original demo it fixes three traps: it never writes into the caller's ``attention_mask``,
it casts point embeddings to the embedding dtype (not always bf16, which broke fp32 models),
and it never changes torch's global default dtype. Two things transformers v5 needs that the
original (written for 4.x) did not: ``generate`` derives position ids from the mask by a cumulative
sum, which the -1s turn negative, so ``forward`` recounts them from the translated mask; and
``from_pretrained`` leaves non-persistent buffers empty, so ``_init_weights`` re-creates the
encoder's frequencies.

Generated code is text here. It runs only inside ``cadlab.cad.sandbox.run_cadquery``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache
from safetensors import SafetensorError, safe_open
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen2Model
from transformers import initialization as init
from transformers.models.qwen2.modeling_qwen2 import Qwen2PreTrainedModel
from transformers.utils import can_return_tuple
from transformers.utils import logging as hf_logging

from cadlab.cad.generation import generate_sequences
from cadlab.cad.pointcloud import FourierPointEncoder, load_mesh, mesh_to_point_cloud
from cadlab.lm.models import checkpoint_kind, qwen25_tokenizer, randomize_
from cadlab.paths import MINI_CADRECODE_DIR

N_POINTS = 256
POINT_TOKEN = "<|im_end|>"      # placeholder id at point positions (CAD-Recode's pad token, 151645 in Qwen2)
START_TOKEN = "<|im_start|>"    # the one real prompt token (151644); the code follows it
END_TOKEN = "<|endoftext|>"     # the model ends a program with it (151643, Qwen2-1.5B's eos)


def backbone_mask_and_positions(attention_mask: torch.Tensor):
    """The mask and position ids the Qwen2 backbone should see for a CAD-Recode mask.

    ``-1`` marks a point position: for attention it is an ordinary visible token, so it becomes
    ``1`` (in a new tensor). Positions count the visible tokens: ``p_t = (sum_{s<=t} m_s) - 1``
    (pad positions, ``m = 0``, get 1 as in transformers' convention); for an unpadded CAD-Recode
    prompt that is simply 0, 1, ..., 256, 257, ...
    """
    mask = attention_mask.masked_fill(attention_mask == -1, 1)
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return mask, positions


class CADRecode(Qwen2ForCausalLM):
    """Qwen2 causal LM whose first 256 prompt embeddings are points, as in CAD-Recode v1.5.

    Modules (= checkpoint key prefixes): ``model`` (Qwen2Model: ``embed_tokens``, ``layers.i``,
    ``norm``), ``lm_head`` (tied to ``model.embed_tokens``) and ``point_encoder``
    (``FourierPointEncoder``: ``projection.weight`` (H, 51), ``projection.bias`` (H); its
    ``frequencies`` buffer is not saved). The point encoder stays in float32 when the model is
    loaded in bf16/fp16, as it ran in the original.

    ``forward(..., point_cloud=P)`` on prefill (no cache, or an empty one)::

        E = embed_tokens(input_ids);  E[attention_mask == -1] = point_encoder(P).to(E.dtype)

    row by row in order, so each row needs exactly ``P.shape[1]`` entries equal to -1. On later
    steps ``point_cloud`` is ignored: the cache already holds the keys and values of the points.
    Any ``-1`` in the mask is shown to the backbone as ``1``, with positions recomputed from it
    (``backbone_mask_and_positions``), on every step. Logits are returned in float32.
    """

    # The original built the encoder in float32 inside a bf16 model; from_pretrained(dtype=bf16) keeps that.
    _keep_in_fp32_modules_strict = ["point_encoder"]

    def __init__(self, config):
        Qwen2PreTrainedModel.__init__(self, config)   # same construction as Qwen2ForCausalLM, plus the encoder
        self.model = Qwen2Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.point_encoder = FourierPointEncoder(config.hidden_size)
        self.post_init()
        self.loss_type = "ForCausalLM"    # next-token cross-entropy; the class name is not in transformers' table

    @torch.no_grad()
    def _init_weights(self, module):
        """transformers' initialisation, plus the encoder's frequencies.

        ``from_pretrained`` builds the model on the meta device and gives non-persistent buffers
        empty (garbage) storage; every model must re-create them here. ``init.copy_`` skips
        tensors already loaded from a checkpoint.
        """
        super()._init_weights(module)
        if isinstance(module, FourierPointEncoder):
            init.copy_(module.frequencies, 2.0 ** torch.arange(module.n_frequencies, dtype=module.frequencies.dtype))

    def embed_prompt(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     point_cloud: torch.Tensor) -> torch.Tensor:
        """``embed_tokens(input_ids)`` with the rows' ``-1`` positions replaced by the point embeddings.

        Returns a new (B, L, H) tensor in the embedding dtype; nothing passed in is modified.
        """
        embeds = self.model.embed_tokens(input_ids)
        slots = attention_mask == -1
        if point_cloud.ndim != 3 or point_cloud.shape[-1] != 3:
            raise ValueError(f"point_cloud must have shape (batch, n_points, 3), got {tuple(point_cloud.shape)}.")
        if point_cloud.shape[0] != input_ids.shape[0]:
            raise ValueError(f"point_cloud has {point_cloud.shape[0]} clouds for {input_ids.shape[0]} prompts.")
        per_row = slots.sum(dim=1)
        if not bool((per_row == point_cloud.shape[1]).all()):
            raise ValueError(
                f"each attention_mask row must hold one -1 per point ({point_cloud.shape[1]}), got "
                f"{per_row.tolist()}; build the prompt with prepare_inputs(point_clouds, tokenizer).")
        # points stay float32 up to the sines (x * 128 in bf16 would lose the fine frequencies)
        points = self.point_encoder(point_cloud.to(embeds.device, torch.float32)).to(embeds.dtype)
        embeds = embeds.clone()
        embeds[slots] = points.reshape(-1, points.shape[-1])   # row 0's points fill row 0's slots, ...
        return embeds

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, logits_to_keep=0, point_cloud=None, **kwargs):
        prefill = past_key_values is None or past_key_values.get_seq_length() == 0
        marked = attention_mask is not None and attention_mask.ndim == 2 and bool((attention_mask == -1).any())
        if prefill and (point_cloud is not None or marked):
            if point_cloud is None:
                raise ValueError("attention_mask marks point positions with -1 but no point_cloud was given.")
            if input_ids is None or inputs_embeds is not None or attention_mask is None:
                raise ValueError("CADRecode's prefill needs input_ids and attention_mask (with -1 at the "
                                 "point positions) and no inputs_embeds; see prepare_inputs().")
            inputs_embeds, input_ids = self.embed_prompt(input_ids, attention_mask, point_cloud), None
        if marked:
            # generate() derives position ids from the mask by a cumulative sum, which the -1s turn
            # negative; the backbone gets the translated mask and positions counted from it.
            attention_mask, positions = backbone_mask_and_positions(attention_mask)
            length = (inputs_embeds if input_ids is None else input_ids).shape[1]
            position_ids = positions[:, -length:]
        outputs = super().forward(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                  past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                                  use_cache=use_cache, logits_to_keep=logits_to_keep, return_dict=True, **kwargs)
        outputs.logits = outputs.logits.float()
        return outputs

    def prepare_inputs_for_generation(self, input_ids, point_cloud=None, **kwargs):
        """transformers' step preparation (slicing to the new token, cache, mask), plus the point cloud.

        It is passed on every step; ``forward`` uses it only when the cache is empty (the first
        step, or every step with ``use_cache=False``).
        """
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        model_inputs["point_cloud"] = point_cloud
        return model_inputs


# --------------------------------------------------------------------------------------------
# Prompts in, code out
# --------------------------------------------------------------------------------------------
def _token_id(tokenizer, token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if token_id is None or token_id == getattr(tokenizer, "unk_token_id", None):
        raise ValueError(f"the tokenizer has no {token} token; CAD-Recode needs Qwen2's tokenizer "
                         "(cadlab.lm.models.qwen25_tokenizer() or the checkpoint's own).")
    return token_id


def prepare_inputs(point_clouds, tokenizer) -> dict:
    """The CAD-Recode prompt for a batch of clouds: ``input_ids``, ``attention_mask``, ``point_cloud``.

    Each row is ``[<|im_end|>] * N + [<|im_start|>]`` with mask ``[-1] * N + [1]``: N placeholder
    tokens whose embeddings the model replaces by the N point embeddings, then the token after
    which the code begins. Every row has length N + 1, so a batch needs no padding.
    ``point_clouds``: a (B, N, 3) array/tensor, one (N, 3) cloud, or a list of (N, 3) clouds.
    """
    if isinstance(point_clouds, (list, tuple)):
        if not point_clouds:
            raise ValueError("prepare_inputs got an empty list of point clouds.")
        clouds = [torch.as_tensor(c, dtype=torch.float32) for c in point_clouds]
        if len({tuple(c.shape) for c in clouds}) != 1:
            raise ValueError(f"all clouds must have the same shape, got {sorted({tuple(c.shape) for c in clouds})}.")
        cloud = torch.stack(clouds)
    else:
        cloud = torch.as_tensor(point_clouds, dtype=torch.float32)
        if cloud.ndim == 2:
            cloud = cloud[None]
    if cloud.ndim != 3 or cloud.shape[-1] != 3 or cloud.shape[1] == 0:
        raise ValueError("point clouds must have shape (n_points, 3) or (batch, n_points, 3), "
                         f"got {tuple(cloud.shape)}.")
    if not bool(torch.isfinite(cloud).all()):
        raise ValueError("point clouds contain NaN or infinite coordinates.")
    batch, n = cloud.shape[:2]
    pad, start = _token_id(tokenizer, POINT_TOKEN), _token_id(tokenizer, START_TOKEN)
    input_ids = torch.tensor([[pad] * n + [start]] * batch, dtype=torch.long)
    attention_mask = torch.tensor([[-1] * n + [1]] * batch, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "point_cloud": cloud}


def extract_code(text: str) -> str:
    """The program in a decoded sequence: after the first ``<|im_start|>``, before ``<|endoftext|>``.

    Decode with special tokens kept. A missing ``<|im_start|>`` (e.g. only new tokens decoded)
    keeps everything from the start; a missing ``<|endoftext|>`` (``max_new_tokens`` reached)
    keeps everything to the end. ``<|im_end|>`` (the pad that follows a finished row) also ends
    the program, as it can never be part of CadQuery code.
    """
    if START_TOKEN in text:
        text = text.split(START_TOKEN, 1)[1]
    for end in (END_TOKEN, POINT_TOKEN):
        text = text.split(end, 1)[0]
    return text


# --------------------------------------------------------------------------------------------
# A folder of STL files -> a folder of programs
# --------------------------------------------------------------------------------------------
class STLDataset(torch.utils.data.Dataset):
    """The ``*.stl`` files of a folder (sorted by name) as ``{"point_cloud": (256, 3), "stem": str}``.

    Each mesh is read with ``load_mesh``, normalized (bounding-box centre at 0, longest side
    [-1, 1]) and sampled with ``mesh_to_point_cloud`` (8192 surface samples, FPS to ``n_points``,
    deterministic for ``seed``).
    """

    def __init__(self, folder, n_points: int = N_POINTS, seed: int = 0):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise FileNotFoundError(f"STLDataset: no folder at {self.folder}.")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() == ".stl" and p.is_file())
        if not self.paths:
            raise ValueError(f"STLDataset: {self.folder} holds no .stl files.")
        self.n_points, self.seed = n_points, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        path = self.paths[index]
        cloud = mesh_to_point_cloud(load_mesh(path), n_points=self.n_points, seed=self.seed)
        return {"point_cloud": torch.from_numpy(cloud), "stem": path.stem}


@torch.no_grad()
def reconstruct_folder(model, tokenizer, stl_dir, out_dir, batch_size: int = 8, n_samples: int = 1,
                       max_new_tokens: int = 768, seed: int = 0, progress: bool = True,
                       **generate_kwargs) -> list[Path]:
    """Write ``out_dir/{stem}+{k}.py`` (k = 0 .. n_samples-1) for every STL file in ``stl_dir``.

    Batches of ``batch_size`` clouds go through ``prepare_inputs`` -> ``model.generate`` (greedy
    unless ``generate_kwargs`` say otherwise, as in the demo; ``n_samples > 1`` needs
    ``do_sample=True``, and sampling is seeded once with ``torch.manual_seed(seed)``) ->
    ``extract_code``. The code is only written, never run.
    Returns the written paths in order.
    """
    if n_samples > 1 and not generate_kwargs.get("do_sample", False):
        raise ValueError("n_samples > 1 with greedy decoding writes the same program n times; "
                         "pass do_sample=True (and e.g. temperature) or use n_samples=1.")
    dataset = STLDataset(stl_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    pad_id = _token_id(tokenizer, POINT_TOKEN)
    if generate_kwargs.get("do_sample", False):
        torch.manual_seed(seed)   # generate samples from torch's global generator
    written = []
    for batch in tqdm(loader, desc="CAD-Recode", disable=not progress):
        tokens = generate_sequences(model, prepare_inputs(batch["point_cloud"], tokenizer), samples=n_samples,
                                    max_new_tokens=max_new_tokens, pad_token_id=pad_id, **generate_kwargs)
        texts = tokenizer.batch_decode(tokens, skip_special_tokens=False)
        for i, text in enumerate(texts):   # generate returns row b's samples consecutively
            stem, k = batch["stem"][i // n_samples], i % n_samples
            path = out_dir / f"{stem}+{k}.py"
            path.write_text(extract_code(text))
            written.append(path)
    return written


def tiny_cadrecode(seed: int = 0, std: float = 0.3, **overrides) -> CADRecode:
    """A tiny random ``CADRecode`` for fast tests: 2 layers, hidden 64, 4 query / 2 KV heads, vocabulary 320
    (``overrides`` change any ``Qwen2Config`` field), weights drawn by ``cadlab.lm.models.randomize_``, fp32, eval mode."""
    hidden = overrides.pop("hidden_size", 64)
    settings = dict(vocab_size=320, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True,
                    bos_token_id=None, eos_token_id=None, pad_token_id=None)
    settings.update(overrides)
    return randomize_(CADRecode(Qwen2Config(**settings)), seed=seed, std=std)


# --------------------------------------------------------------------------------------------
# Which model: the course's mini model, or the real checkpoint
# --------------------------------------------------------------------------------------------
MINI_MODEL_DIR = MINI_CADRECODE_DIR
REAL_MODEL_ID = "filapro/cad-recode-v1.5"
POINT_ENCODER_KEY = "point_encoder.projection.weight"   # in CAD-Recode's and Cadrille's weights, in no plain LM


@dataclass
class Checkpoint:
    """What a saved model folder holds, as ``inspect_checkpoint`` reads it (no weights loaded).

    ``kind``: "CAD-Recode", "Cadrille" or "other"; ``what``: the same in words, for messages;
    ``context``: the language model's ``max_position_embeddings`` (prompt and generated tokens
    together), None where the config does not say.
    """

    kind: str
    what: str
    context: int | None


def inspect_checkpoint(folder) -> Checkpoint:
    """Which model ``folder`` holds, from its config.json and the headers of its ``*.safetensors`` files.

    Cheap (no tensor is read), so a command can refuse a wrong or damaged folder before loading
    anything. Weights with a point encoder (``point_encoder.projection.weight``) are CAD-Recode (a
    Qwen2 config) or Cadrille (a Qwen2-VL config); anything else is "other", named in ``what`` (a plain
    language model such as SmolLM2, or another course checkpoint as ``cadlab.lm.models.checkpoint_kind``
    names it). A folder without safetensors files is judged by its config's class name alone.

    Raises ``FileNotFoundError`` without config.json; ``ValueError`` if config.json is not a JSON
    object or a safetensors file is damaged (truncated by an interrupted copy or download, or not
    safetensors at all): safetensors checks that the file is as long as its header says.
    """
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} has no config.json; it is not a saved model folder "
                                "(save one with model.save_pretrained).") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{folder / 'config.json'} is not a model configuration: {error}.") from None
    if not isinstance(config, dict):
        raise ValueError(f"{folder / 'config.json'} is not a model configuration (a JSON object).")
    weights, keys = sorted(folder.glob("*.safetensors")), set()
    for path in weights:
        try:
            with safe_open(path, "pt") as file:
                keys.update(file.keys())
        except SafetensorError as error:
            raise ValueError(f"{path} is damaged ({error}): copy or download it again.") from None
    architecture = ", ".join(config.get("architectures") or []) or str(config.get("model_type", "unknown"))
    points = POINT_ENCODER_KEY in keys if weights else architecture in ("CADRecode", "Cadrille")
    kind = {"qwen2": "CAD-Recode", "qwen2_vl": "Cadrille"}.get(config.get("model_type")) if points else None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    context = text.get("max_position_embeddings")
    context = context if isinstance(context, int) else None
    if kind is not None:
        named = "" if architecture in ("CADRecode", "Cadrille") else f" ({architecture})"
        return Checkpoint(kind, f"a {kind} checkpoint{named}", context)
    known = checkpoint_kind(folder)
    what = known.what if known is not None and known.name not in ("cadrecode", "cadrille") else \
        f"a plain language model ({architecture}) without the point encoder of CAD-Recode and Cadrille"
    return Checkpoint("other", what, context)


def require_checkpoint(folder, kind: str, loader: str) -> Checkpoint:
    """``inspect_checkpoint(folder)``, or ``ValueError`` if the folder holds no ``kind`` checkpoint (saying
    what it holds instead); ``loader`` names the function that asked, for the message."""
    checkpoint = inspect_checkpoint(folder)
    if checkpoint.kind != kind:
        other = {"CAD-Recode": "cadlab.cad.cadrecode.load_cadrecode", "Cadrille": "cadlab.cad.cadrille.load_cadrille"}
        hint = f" (load it with {other[checkpoint.kind]})" if checkpoint.kind in other else ""
        raise ValueError(f"{loader}: {folder} holds {checkpoint.what}, not a {kind} checkpoint{hint}.")
    return checkpoint


def load_cadrecode(name_or_path=None, dtype=torch.float32):
    """``(model, tokenizer)`` for CAD-Recode, in eval mode; prints one line naming the model in use.

    * ``None``: the course's mini model shipped in ``cadlab/weights/mini-cadrecode`` (a few-layer
      Qwen2 trained by ``cadlab train-cadrecode``, with its own small tokenizer that keeps
      ``<|im_end|>`` / ``<|im_start|>`` / ``<|endoftext|>`` in their CAD-Recode roles). Offline.
    * a folder or a hub id already in the local Hugging Face cache, e.g. ``filapro/cad-recode-v1.5``:
      ``CADRecode.from_pretrained``. Its tokenizer is the folder's own if it has one, else Qwen2's
      (the real checkpoint ships none; ``cadlab.lm.models.qwen25_tokenizer()`` builds it offline).
    """
    if name_or_path is None:
        source, where = MINI_MODEL_DIR, "the course's mini CAD-Recode"
        if not (source / "model.safetensors").is_file():
            raise FileNotFoundError(f"load_cadrecode: the shipped mini model is missing from {source}; "
                                    "train it with `cadlab train-cadrecode` or pass a model folder.")
    else:
        text = str(name_or_path)
        folder = Path(text).expanduser()
        is_path = isinstance(name_or_path, Path) or folder.exists() or text.startswith((".", "/", "~")) \
            or text.count("/") != 1
        if is_path:
            if not folder.is_dir():
                raise FileNotFoundError(f"load_cadrecode: {text!r} is not a folder. Pass a folder holding "
                                        "config.json and *.safetensors of a CAD-Recode checkpoint, a hub id "
                                        f"already in your Hugging Face cache (e.g. {REAL_MODEL_ID!r}), or "
                                        "nothing for the course's mini model.")
            if not (folder / "config.json").is_file():
                raise FileNotFoundError(f"load_cadrecode: {folder} has no config.json; it is not a saved "
                                        "model folder (save one with model.save_pretrained).")
            require_checkpoint(folder, "CAD-Recode", "load_cadrecode")
            source, where = folder, str(folder)
        else:
            source, where = text, f"{text} (Hugging Face cache)"
            try:
                cached = try_to_load_from_cache(text, "config.json")
            except ValueError:                    # huggingface_hub's HFValidationError: not a hub id's spelling
                raise FileNotFoundError(f"load_cadrecode: {text!r} is neither a folder nor a hub id.") from None
            if isinstance(cached, str):           # in the cache: check its folder as any other
                require_checkpoint(Path(cached).parent, "CAD-Recode", "load_cadrecode")
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()          # no "Loading weights" bar in notebooks, logs or the CLI's stderr
    try:
        model = CADRecode.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:  # re-raised with what to do
        raise RuntimeError(f"load_cadrecode: could not load {str(source)!r}: {type(error).__name__}: {error}\n"
                           "A folder needs config.json and weights; a hub id must already be in your Hugging "
                           "Face cache (no network here). Call load_cadrecode() for the course's mini model.") \
            from error
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    try:
        # the files' own class, not the one AutoTokenizer picks from model_type (Qwen2Tokenizer would
        # make the mini tokenizer's <|endoftext|> its unknown token)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(source)
        tokenizer_note = "its own tokenizer"
    except (OSError, ValueError):  # the real checkpoint ships no tokenizer: use Qwen2's
        tokenizer = qwen25_tokenizer()
        tokenizer_note = "Qwen2's tokenizer"
    for token in (POINT_TOKEN, START_TOKEN, END_TOKEN):
        _token_id(tokenizer, token)
    tokenizer.padding_side = "left"
    n_params = sum(p.numel() for p in model.parameters())
    print(f"cadlab: using {where} ({model.config.num_hidden_layers}-layer CADRecode, {n_params / 1e6:.1f}M "
          f"parameters, {tokenizer_note} of {len(tokenizer)} tokens)")
    return model.eval(), tokenizer
