"""Cadrille: a point cloud, four rendered views, or a text description in, CadQuery code out.

Cadrille (Rukhovich et al., arXiv 2505.22914) is Qwen2-VL-2B-Instruct plus CAD-Recode's point
encoder. One batch may mix the three modes; every row is a chat prompt::

    point cloud P (256, 3):  "<|endoftext|>" * 256 + chat("Generate cadquery code")
    images:                  chat(<|vision_start|><|video_pad|> * 100<|vision_end|> "Generate cadquery code")
                             four renders tiled 2x2 into one 268x268 picture, a one-frame "video"
    text:                    chat(description)
    chat(x) = <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
              <|im_start|>user\\n x <|im_end|>\\n<|im_start|>assistant\\n          [collate, left padding]

    Cadrille.forward, prefill (empty KV cache):
        E = embed_tokens(input_ids)                                      (B, L, H)
        E[video tokens] = visual(pixel_values_videos)                    masked_scatter, image rows only
        E[i, s_i : s_i + 256] = FourierPointEncoder(P_i)                 point rows; s_i = left pads of row i
        positions (3, B, L) = get_rope_index(input_ids, mm_token_type_ids, grids, mask)   3-D mrope
        rope_deltas_i = max(positions_i) + 1 - L                         kept for decoding
    every later step: only the new token is embedded (no points, no pixels), at
        position cache_position + rope_deltas_i, the same on all three mrope axes
    text = batch_decode(new tokens, skip_special_tokens=True)  ->  {stem}+{k}.py

``Cadrille`` has the module names, parameter names and shapes of ``maksimko123/cadrille``: a
``Qwen2VLForConditionalGeneration`` plus ``point_encoder.projection.weight/bias`` (the encoder is
``cadlab.cad.pointcloud.FourierPointEncoder``, the class CAD-Recode uses). The published weights were
saved by transformers 4.50 (keys ``model.embed_tokens``, ``model.layers.*``, ``model.norm``,
``visual.*``, ``lm_head``, ``point_encoder.*``); today's layout is ``model.language_model.*`` and
``model.visual.*``. transformers converts the old keys only for its own classes, so this module
registers Qwen2-VL's key conversion for ``Cadrille`` too: ``Cadrille.from_pretrained`` loads
both layouts into the same tensors (and ``save_pretrained`` writes the old one).

Four things differ from the original code, each on purpose:

* rope deltas. 4.50's ``get_rope_index`` returned ``max + 1 - L`` (L = padded length), so
  ``cache_position + delta`` was right for left-padded rows; today's returns ``max + 1 - (L - s)``.
  ``forward`` keeps the 4.50 meaning (it computes ``max + 1 - L`` from the positions), so decode
  positions are ``cache_position + rope_deltas`` as in the original, and the library's stored
  ``model.rope_deltas`` is not used.
* video grids. The original fills ``video_grid_thw`` with zero rows for rows without images; the
  library's ``get_rope_index`` consumes grid rows in order, one per video, so in a mixed batch a
  zero row would be given to the wrong sample (in 4.50 too). ``collate`` returns one grid row per
  image row, in batch order; ``forward`` drops all-zero rows if a caller passes the old layout.
* point embeddings are cast to the embedding dtype (the original always cast to bf16).
* nothing passed in is modified.

The inputs (prompts, pictures, the batch) are built by ``cadlab.cad.cadrille_processor``.

Generated code is text here. It runs only inside ``cadlab.cad.sandbox.run_cadquery``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import LogitsProcessorList, PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
from transformers import initialization as init
from transformers.conversion_mapping import get_checkpoint_conversion_mapping, register_checkpoint_conversion_mapping
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel, Qwen2VLPreTrainedModel
from transformers.utils import can_return_tuple
from transformers.utils import logging as hf_logging

from cadlab.cad.cadrecode import require_checkpoint
from cadlab.cad.cadrille_processor import (
    END_TOKEN,
    IMAGE_TOKEN,
    MERGE_SIZE,
    PATCH_SIZE,
    POINT_TOKEN,
    QWEN2VL_SPECIAL_TOKENS,
    TEMPORAL_PATCH_SIZE,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
    CadrilleProcessor,
    collate,
    set_roles,
    token_ids,
)
from cadlab.cad.generation import generate_sequences
from cadlab.cad.pointcloud import FourierPointEncoder
from cadlab.cad.program_grammar import library_grammar
from cadlab.lm.grammar import ConstrainedLogits
from cadlab.lm.models import randomize_
from cadlab.paths import MINI_CADRILLE_DIR


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------
class Cadrille(Qwen2VLForConditionalGeneration):
    """Qwen2-VL whose prompt may also hold 256 point embeddings, as in Cadrille.

    Modules (= checkpoint key prefixes, today's layout): ``model.visual`` (vision tower),
    ``model.language_model`` (``embed_tokens``, ``layers.i``, ``norm``), ``lm_head`` (tied to
    ``embed_tokens`` when ``tie_word_embeddings``) and ``point_encoder`` (``projection.weight``
    (H, 51), ``projection.bias`` (H); the frequencies buffer is not saved). The point encoder stays
    in float32 when the model is loaded in bf16/fp16.

    ``forward(..., point_clouds=P, is_pc=..., is_img=...)``; P is (B, N, 3) with rows of any
    value where ``is_pc`` is False. On prefill (no cache, or an empty one), for each row i with
    ``is_pc[i]``: ``E[i, s:s+N] = point_encoder(P[i])`` with s = L - sum(attention_mask[i]), the
    number of left pads, so the N point placeholders must come right after the padding (``collate``
    puts them there). Video embeddings are computed and scattered only on prefill and only for
    ``is_img`` rows. Positions: see ``rope_positions`` (prefill) and ``decode_positions``. Decode
    steps embed only their new tokens. Explicit ``position_ids`` are used as given.
    """

    _keep_in_fp32_modules_strict = ["point_encoder"]

    def __init__(self, config):
        Qwen2VLPreTrainedModel.__init__(self, config)   # Qwen2VLForConditionalGeneration's build, plus the encoder
        self.model = Qwen2VLModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.point_encoder = FourierPointEncoder(config.text_config.hidden_size)
        self.rope_deltas = None     # (B, 1) from the last prefill, in 4.50's meaning (max + 1 - L)
        self.post_init()
        self.loss_type = "ForCausalLM"    # next-token cross-entropy; the class name is not in transformers' table

    @torch.no_grad()
    def _init_weights(self, module):
        """transformers' initialisation, plus the point encoder's frequencies (``from_pretrained``
        leaves non-persistent buffers as empty storage; ``init.copy_`` skips loaded tensors)."""
        super()._init_weights(module)
        if isinstance(module, FourierPointEncoder):
            init.copy_(module.frequencies, 2.0 ** torch.arange(module.n_frequencies, dtype=module.frequencies.dtype))

    # ---- the pieces of the prefill, each usable on its own (the notebook shows them one by one) ----
    def mm_token_type_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """0 for text (point placeholders included), 1 for ``<|image_pad|>``, 2 for ``<|video_pad|>``."""
        types = torch.zeros_like(input_ids, dtype=torch.int)
        types[input_ids == self.config.image_token_id] = 1
        types[input_ids == self.config.video_token_id] = 2
        return types

    @staticmethod
    def left_pads(attention_mask: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
        """s_i = L - sum(attention_mask[i]) for every row (zeros without a mask)."""
        if attention_mask is None:
            return torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        return input_ids.shape[1] - attention_mask.long().sum(dim=1)

    def insert_points(self, inputs_embeds, point_clouds, is_pc, attention_mask, input_ids):
        """A copy of ``inputs_embeds`` with ``E[i, s_i:s_i+N] = point_encoder(point_clouds[i])`` for ``is_pc`` rows."""
        if point_clouds.ndim != 3 or point_clouds.shape[-1] < 3:
            raise ValueError(f"point_clouds must have shape (batch, n_points, 3), got {tuple(point_clouds.shape)}.")
        if point_clouds.shape[0] != inputs_embeds.shape[0] or is_pc.shape[0] != inputs_embeds.shape[0]:
            raise ValueError(f"point_clouds ({point_clouds.shape[0]}) and is_pc ({is_pc.shape[0]}) need one row "
                             f"per prompt ({inputs_embeds.shape[0]}).")
        rows = torch.nonzero(is_pc.bool().to(inputs_embeds.device)).flatten().tolist()
        if not rows:
            return inputs_embeds
        n = point_clouds.shape[1]
        starts = self.left_pads(attention_mask, input_ids)
        # points stay float32 up to the sines (x * 128 in bf16 would lose the fine frequencies)
        points = self.point_encoder(point_clouds[rows, :, :3].to(inputs_embeds.device, torch.float32))
        points = points.to(inputs_embeds.dtype)
        embeds = inputs_embeds.clone()
        for k, i in enumerate(rows):
            s = int(starts[i])
            if s + n > embeds.shape[1]:
                raise ValueError(f"row {i}: {n} point slots after {s} left pads do not fit in length "
                                 f"{embeds.shape[1]}; build the batch with collate().")
            embeds[i, s:s + n] = points[k]
        return embeds

    def insert_vision(self, inputs_embeds, input_ids, pixel_values, image_grid_thw, pixel_values_videos,
                      video_grid_thw, is_img):
        """Image and video embeddings scattered (``masked_scatter``) onto their placeholder tokens."""
        if pixel_values is not None:
            features = torch.cat(self.model.get_image_features(pixel_values, image_grid_thw).pooler_output)
            mask = (input_ids == self.config.image_token_id)[..., None].expand_as(inputs_embeds)
            if int(mask.sum()) != features.numel():
                raise ValueError(f"{int(mask[..., 0].sum())} image tokens for {features.shape[0]} image features.")
            inputs_embeds = inputs_embeds.masked_scatter(mask, features.to(inputs_embeds))
        if pixel_values_videos is not None and (is_img is None or bool(is_img.any())):
            video_rows = (input_ids == self.config.video_token_id).any(dim=1)
            if is_img is not None and bool((video_rows & ~is_img.bool().to(video_rows.device)).any()):
                raise ValueError("a row with <|video_pad|> tokens is not marked is_img.")
            features = torch.cat(self.model.get_video_features(pixel_values_videos, video_grid_thw).pooler_output)
            mask = (input_ids == self.config.video_token_id)[..., None].expand_as(inputs_embeds)
            if int(mask.sum()) != features.numel():
                raise ValueError(f"{int(mask[..., 0].sum())} video tokens for {features.shape[0]} video features.")
            inputs_embeds = inputs_embeds.masked_scatter(mask, features.to(inputs_embeds))
        return inputs_embeds

    def rope_positions(self, input_ids, attention_mask=None, mm_token_type_ids=None, image_grid_thw=None,
                       video_grid_thw=None):
        """Prefill positions (3, B, L) from the library's ``get_rope_index``, and deltas (B, 1).

        Text tokens (point placeholders too) count 0, 1, 2, ... on all three axes; a video of grid
        (t, h, w) takes (t, h/2, w/2) positions starting where the text stopped, and the text after
        it resumes at start + max(h, w)/2. Left pads get position 0. ``delta_i = max_i + 1 - L``,
        so the first generated token sits at L + delta_i = max_i + 1.
        """
        if mm_token_type_ids is None:
            mm_token_type_ids = self.mm_token_type_ids(input_ids)
        positions, _ = self.model.get_rope_index(input_ids, mm_token_type_ids, image_grid_thw=image_grid_thw,
                                                 video_grid_thw=video_grid_thw, attention_mask=attention_mask)
        deltas = positions.amax(dim=(0, 2)) + 1 - input_ids.shape[1]
        return positions, deltas[:, None]

    def decode_positions(self, past_length: int, seq_length: int, batch_size: int, device) -> torch.Tensor:
        """(3, B, seq) positions of a decode step: ``cache_position + rope_deltas`` on every axis."""
        if self.rope_deltas is None:
            raise ValueError("a decode step (non-empty cache) came before any prefill through this model.")
        deltas = self.rope_deltas.to(device)
        if deltas.shape[0] != batch_size:     # e.g. beam search expanded the batch after the prefill
            deltas = deltas.repeat_interleave(batch_size // deltas.shape[0], dim=0)
        cache_position = torch.arange(past_length, past_length + seq_length, device=device)
        return (cache_position[None, :] + deltas)[None].expand(3, -1, -1)

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, pixel_values=None, pixel_values_videos=None,
                image_grid_thw=None, video_grid_thw=None, mm_token_type_ids=None, logits_to_keep=0,
                point_clouds=None, is_pc=None, is_img=None, **kwargs):
        kwargs.pop("cache_position", None)    # recomputed from the cache length below
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        prefill = past_length == 0
        if inputs_embeds is None:
            inputs_embeds = self.model.get_input_embeddings()(input_ids)
        if video_grid_thw is not None:        # the original's zero rows for non-image rows carry no video
            video_grid_thw = video_grid_thw[video_grid_thw.prod(dim=-1) > 0]
            if video_grid_thw.shape[0] == 0:
                video_grid_thw, pixel_values_videos = None, None
        if prefill and input_ids is not None:
            inputs_embeds = self.insert_vision(inputs_embeds, input_ids, pixel_values, image_grid_thw,
                                               pixel_values_videos, video_grid_thw, is_img)
            if point_clouds is not None:
                if is_pc is None:
                    is_pc = torch.ones(input_ids.shape[0], dtype=torch.bool)
                inputs_embeds = self.insert_points(inputs_embeds, point_clouds, is_pc, attention_mask, input_ids)
        if position_ids is None:
            if prefill and input_ids is not None:
                position_ids, self.rope_deltas = self.rope_positions(input_ids, attention_mask, mm_token_type_ids,
                                                                     image_grid_thw, video_grid_thw)
            elif prefill:    # embeddings only: plain text positions
                length = inputs_embeds.shape[1]
                position_ids = torch.arange(length, device=inputs_embeds.device)[None, None].expand(
                    3, inputs_embeds.shape[0], -1)
                self.rope_deltas = torch.zeros(inputs_embeds.shape[0], 1, dtype=torch.long)
            else:
                position_ids = self.decode_positions(past_length, inputs_embeds.shape[1], inputs_embeds.shape[0],
                                                     inputs_embeds.device)
        outputs = self.model.language_model(input_ids=None, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                            position_ids=position_ids, past_key_values=past_key_values,
                                            use_cache=use_cache, **kwargs)
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size,
                                      **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values,
                                      hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    def prepare_inputs_for_generation(self, input_ids, point_clouds=None, is_pc=None, is_img=None, **kwargs):
        """The library's step inputs plus ``point_clouds``, ``is_pc`` and ``is_img`` (used on prefill only)."""
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        model_inputs.update(point_clouds=point_clouds, is_pc=is_pc, is_img=is_img)
        return model_inputs

    def _prepare_position_ids_for_generation(self, inputs_tensor, model_kwargs):
        """None: ``generate`` keeps no position ids, so every step takes them from ``forward``'s rule."""
        return None


# transformers converts 4.50 checkpoint keys (visual.*, model.layers.*) only for its own classes;
# give Cadrille Qwen2-VL's rules: ^visual -> model.visual, ^model(?!.(language_model|visual)) -> model.language_model.
register_checkpoint_conversion_mapping(
    Cadrille.__name__, get_checkpoint_conversion_mapping("Qwen2VLForConditionalGeneration"), overwrite=True)


@torch.no_grad()
def load_language_model(cadrille: Cadrille, causal_lm) -> Cadrille:
    """Copy a Qwen2 causal LM (e.g. the mini CAD-Recode) into ``cadrille``'s language model, in place.

    ``model.*`` -> ``model.language_model.*``, ``lm_head``, and ``point_encoder`` if the source has one.
    Qwen2-VL's text decoder is Qwen2's (same modules, q/k/v biases, RMSNorm), and with text-only
    positions its mrope is 1-D RoPE, so on text the copy computes what the source did. A larger
    vocabulary keeps the source's rows first (the mini tokenizer appends its new tokens); the new
    rows keep their values. Shapes must otherwise agree.
    """
    source = causal_lm.state_dict()
    target = cadrille.state_dict()
    for key, value in source.items():
        if key.startswith("model."):
            name = "model.language_model." + key[len("model."):]
        elif key.startswith(("lm_head.", "point_encoder.")):
            name = key
        else:
            continue
        if name not in target:
            raise KeyError(f"{key} has no counterpart {name} in Cadrille.")
        slot = target[name]
        if slot.shape == value.shape:
            slot.copy_(value)
        elif name.endswith(("embed_tokens.weight", "lm_head.weight")) and slot.shape[1:] == value.shape[1:] \
                and slot.shape[0] >= value.shape[0]:
            slot[:value.shape[0]].copy_(value)
        else:
            raise ValueError(f"{key}: shape {tuple(value.shape)} does not fit {name} {tuple(slot.shape)}.")
    return cadrille


def to_legacy_key(key: str) -> str:
    """Today's parameter name -> the name in a transformers-4.50 Cadrille checkpoint."""
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    if key.startswith("model.visual."):
        return key[len("model."):]
    return key


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------
def cadrille_config(vocab_size: int, token_ids: dict, hidden_size: int, layers: int, heads: int, kv_heads: int,
                    intermediate_size: int, vision_depth: int, vision_embed_dim: int, vision_heads: int,
                    rope_theta: float = 1e6, max_position_embeddings: int = 32768, rms_norm_eps: float = 1e-6,
                    tie_word_embeddings: bool = True) -> Qwen2VLConfig:
    """A Qwen2-VL configuration; ``token_ids`` maps the special tokens above to this vocabulary's ids.

    mrope splits the head's ``head_dim / 2`` rotation frequencies 1 : 1.5 : 1.5 between the temporal,
    height and width axes (Qwen2-VL-2B: head_dim 128 -> [16, 24, 24]).
    """
    half = hidden_size // heads // 2
    section = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    text = dict(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                hidden_act="silu", max_position_embeddings=max_position_embeddings, rms_norm_eps=rms_norm_eps,
                rope_parameters={"rope_type": "default", "rope_theta": rope_theta, "mrope_section": section},
                use_sliding_window=False, bos_token_id=token_ids[POINT_TOKEN], eos_token_id=token_ids[END_TOKEN],
                pad_token_id=None, tie_word_embeddings=tie_word_embeddings)
    vision = dict(depth=vision_depth, embed_dim=vision_embed_dim, hidden_size=hidden_size, num_heads=vision_heads,
                  mlp_ratio=4, in_channels=3, patch_size=PATCH_SIZE, spatial_merge_size=MERGE_SIZE,
                  temporal_patch_size=TEMPORAL_PATCH_SIZE, hidden_act="quick_gelu")
    return Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=token_ids[IMAGE_TOKEN],
                         video_token_id=token_ids[VIDEO_TOKEN], vision_start_token_id=token_ids[VISION_START],
                         vision_end_token_id=token_ids[VISION_END], tie_word_embeddings=tie_word_embeddings)


def qwen2vl_2b_config() -> Qwen2VLConfig:
    """Qwen2-VL-2B-Instruct's architecture (Cadrille's base), written out from its published config."""
    return cadrille_config(151936, QWEN2VL_SPECIAL_TOKENS, hidden_size=1536, layers=28, heads=12, kv_heads=2,
                           intermediate_size=8960, vision_depth=32, vision_embed_dim=1280, vision_heads=16)


def tiny_cadrille(seed: int = 0, std: float = 0.3, token_ids: dict | None = None, vocab_size: int = 64,
                  **overrides) -> Cadrille:
    """A tiny random ``Cadrille`` for fast tests: text hidden 64, 2 layers, 4 query / 2 KV heads (mrope
    [2, 3, 3]), a 2-block 32-wide vision tower; weights drawn by ``cadlab.lm.models.randomize_``, fp32, eval mode.
    ``token_ids`` defaults to the ids of ``tiny_token_ids()``."""
    settings = dict(hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128, vision_depth=2,
                    vision_embed_dim=32, vision_heads=2, rope_theta=10000.0, max_position_embeddings=2048)
    settings.update(overrides)
    model = Cadrille(cadrille_config(vocab_size, token_ids or tiny_token_ids(), **settings))
    return randomize_(model, seed=seed, std=std)


def tiny_token_ids() -> dict:
    """Special-token ids 0..13 in Qwen2-VL's order, for tiny test vocabularies."""
    return {token: i for i, token in enumerate(QWEN2VL_SPECIAL_TOKENS)}


@torch.no_grad()
def generate_code(model: Cadrille, processor: CadrilleProcessor, items: list[dict], max_new_tokens: int = 768,
                  grammar: str | None = None, **generate_kwargs) -> list[str]:
    """Programs for ``items`` (see ``collate``): greedy unless ``generate_kwargs`` say otherwise, as Cadrille's
    test script; the new tokens decoded with ``skip_special_tokens=True``. ``grammar`` (``"syntax"`` or
    ``"grid"``, ``cadlab.cad.program_grammar``): decoded under it, so every program stays in it."""
    inputs = collate(items, processor, eval=True)
    tokenizer = processor.tokenizer
    end = tokenizer.convert_tokens_to_ids(END_TOKEN)
    if grammar is not None:
        compiled = library_grammar(grammar, tokenizer, end_ids=[end])
        generate_kwargs["logits_processor"] = LogitsProcessorList([ConstrainedLogits(lambda row: compiled.matcher())])
    tokens = generate_sequences(model, inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=end, **generate_kwargs)
    return processor.batch_decode(tokens[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def write_programs(codes: list[str], stems: list[str], out_dir, n_samples: int = 1) -> list[Path]:
    """``out_dir/{stem}+{k}.py`` for row i = (stem i // n_samples, sample k = i % n_samples), as Cadrille writes them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, code in enumerate(codes):
        path = out_dir / f"{stems[i // n_samples]}+{i % n_samples}.py"
        path.write_text(code)
        paths.append(path)
    return paths



# --------------------------------------------------------------------------------------------
# The course's mini Cadrille (trained by ``cadlab train-cadrille``), one part at a time
# --------------------------------------------------------------------------------------------
def cadrille_folder(path=None) -> Path:
    """The folder of a saved Cadrille: ``path``, or the shipped mini Cadrille for None; ``FileNotFoundError`` if
    it lacks the weights or the tokenizer, ``ValueError`` if it holds another model or damaged weights
    (``cadlab.cad.cadrecode.require_checkpoint``: config.json and the safetensors header only)."""
    folder = Path(path) if path is not None else MINI_CADRILLE_DIR
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"load_cadrille: {folder} holds no saved Cadrille (model.safetensors and "
                                "tokenizer.json); train one with `cadlab train-cadrille`.")
    require_checkpoint(folder, "Cadrille", "load_cadrille")
    return folder


def model_shading(path=None) -> str:
    """How the pictures of the Cadrille saved in ``path`` (None: the shipped mini Cadrille) were shaded in
    training: its log's ``config.shading``, else Cadrille's "smooth"."""
    log = Path(path if path is not None else MINI_CADRILLE_DIR) / "training_log.json"
    config = json.loads(log.read_text()).get("config", {}) if log.is_file() else {}
    return config.get("shading", "smooth")


def load_cadrille_processor(path=None) -> CadrilleProcessor:
    """The processor (prompts, pictures, the folder's tokenizer, the shading its pictures need) of the Cadrille
    saved in ``path`` (None: the shipped mini Cadrille), without the model: enough to measure a prompt before
    loading any weights."""
    folder = cadrille_folder(path)
    tokenizer = set_roles(PreTrainedTokenizerFast.from_pretrained(folder))
    token_ids(tokenizer)
    return CadrilleProcessor(tokenizer, shading=model_shading(folder))


def load_cadrille(path=None, dtype=torch.float32):
    """``(model, processor)`` of the mini Cadrille shipped in ``cadlab/weights/mini-cadrille`` (or a folder
    saved by ``cadlab.train.cadrille``), eval mode; the processor holds the folder's tokenizer. A missing,
    foreign or damaged checkpoint is refused before any weight is read (``cadrille_folder``)."""
    folder = cadrille_folder(path)
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = Cadrille.from_pretrained(folder, dtype=dtype)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as error:  # re-raised with what to do
        raise RuntimeError(f"load_cadrille: could not load {str(folder)!r}: {type(error).__name__}: {error}") \
            from error
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    return model.eval(), load_cadrille_processor(folder)
