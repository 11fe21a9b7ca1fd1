"""cadlab.cad.cadrille: its proofs on tiny configs, the offline processor and both tokenizers.

The model tests use the mini tokenizer (the mini CAD-Recode's BPE plus Qwen2-VL's special tokens) and a
tiny random Cadrille over its vocabulary, so ``collate`` builds real batches that mix the three modes.
Frames in model tests are 112 x 112 (16 video tokens) to keep the vision tower fast; the 268 x 268
frame and its 100 tokens are checked on the processor alone. Each test prints its measured max |diff|.
"""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import Qwen2VLForConditionalGeneration
from transformers.utils import logging as hf_logging

from cadlab.cad.cadrecode import tiny_cadrecode
from cadlab.cad.cadrille import (
    Cadrille,
    generate_code,
    load_language_model,
    tiny_cadrille,
    to_legacy_key,
    write_programs,
)
from cadlab.cad.cadrille_processor import (
    END_TOKEN,
    MAX_PIXELS,
    MIN_PIXELS,
    N_POINTS,
    PROCESSOR_SIZE,
    QWEN2VL_SPECIAL_TOKENS,
    CadrilleProcessor,
    collate,
    mini_tokenizer,
    patchify,
    qwen2vl_tokenizer,
    token_ids,
    video_frames,
)

hf_logging.disable_progress_bar()     # no "Loading weights" bars in the test log


def frame(size=112, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def cloud(seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (N_POINTS, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return mini_tokenizer()


@pytest.fixture(scope="module")
def processor(tokenizer):
    return CadrilleProcessor(tokenizer)


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_cadrille(token_ids=token_ids(tokenizer), vocab_size=len(tokenizer))


@pytest.fixture(scope="module")
def mixed(processor):
    """One eval batch: text, images (one 112 px frame), point cloud - three different lengths, left-padded."""
    items = [{"description": "a plate 40 by 20 by 5 with a hole"}, {"video": [frame()]}, {"point_cloud": cloud()}]
    return collate(items, processor, eval=True)


def max_diff(a, b):
    return float((a.float() - b.float()).abs().max())


# ------------------------------------------------------------------------------------------------
# Tokenizers, chat template, processor
# ------------------------------------------------------------------------------------------------
def test_real_tokenizer_has_qwen2vl_special_ids():
    tok = qwen2vl_tokenizer()
    for token, expected in QWEN2VL_SPECIAL_TOKENS.items():
        assert tok.convert_tokens_to_ids(token) == expected
        assert tok(token, add_special_tokens=False)["input_ids"] == [expected]
    assert (tok.pad_token, tok.pad_token_id, tok.eos_token_id, tok.padding_side) == \
        ("<|endoftext|>", 151643, 151645, "left")
    # Qwen2's BPE itself (ids from the stack notes' check against tiktoken)
    assert tok("Hello world, def f(x): return x**2")["input_ids"] == \
        [9707, 1879, 11, 707, 282, 2075, 1648, 470, 856, 334, 17]
    assert tok("assistant\n", add_special_tokens=False)["input_ids"] == [77091, 198]   # labels start at +2
    prompt = CadrilleProcessor(tok).apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "video": [frame()], "fps": 1.0},
                                      {"type": "text", "text": "Generate cadquery code"}]}], add_generation_prompt=True)
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "<|vision_start|><|video_pad|><|vision_end|>Generate cadquery code<|im_end|>\n"
                      "<|im_start|>assistant\n")


def test_mini_tokenizer_keeps_cadrecode_ids_and_adds_qwen2vl_tokens(tokenizer):
    from transformers import PreTrainedTokenizerFast

    from cadlab.cad.cadrecode import MINI_MODEL_DIR

    base = PreTrainedTokenizerFast.from_pretrained(MINI_MODEL_DIR)
    ids = token_ids(tokenizer)
    assert set(ids) == set(QWEN2VL_SPECIAL_TOKENS)
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):      # CAD-Recode's rows stay where they were
        assert ids[token] == base.convert_tokens_to_ids(token)
    assert sorted(ids.values())[3:] == list(range(len(base), len(base) + 11))
    code = "r = cq.Workplane('XY').box(-12, 4, 7)"
    assert tokenizer(code)["input_ids"] == base(code)["input_ids"]
    for token, i in ids.items():
        assert tokenizer(f"x{token}y", add_special_tokens=False)["input_ids"].count(i) == 1
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.padding_side) == ("<|endoftext|>", END_TOKEN, "left")
    with pytest.raises(ValueError, match="lacks Qwen2-VL's special tokens"):
        token_ids(base)


def test_268_picture_is_a_two_frame_video_of_100_tokens(processor):
    frames = video_frames([frame(268)])
    assert [f.size for f in frames] == [(280, 280), (280, 280)]
    out = processor(text=["<|vision_start|><|video_pad|><|vision_end|>x"], videos=[frames])
    assert out["video_grid_thw"].tolist() == [[1, 20, 20]]
    assert out["pixel_values_videos"].shape == (400, 1176)
    assert int((out["mm_token_type_ids"] == 2).sum()) == 100
    assert (processor.min_pixels, processor.max_pixels) == (MIN_PIXELS, MAX_PIXELS)


def test_patchify_equals_the_library_image_processor():
    """Our video patches of a still 280 px frame = Qwen2VLImageProcessorPil's patches of the same image."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    still = video_frames([frame(268, seed=3)])
    ours, grid = patchify(still)
    library = Qwen2VLImageProcessorPil(size=PROCESSOR_SIZE)(images=[still[0]], return_tensors="pt")
    assert grid.tolist() == library["image_grid_thw"][0].tolist() == [1, 20, 20]
    diff = max_diff(ours, library["pixel_values"])
    print(f"patchify vs Qwen2VLImageProcessorPil: max|diff| = {diff:.2e}")
    assert diff < 1e-5
    # what today's library would do with Cadrille's min/max_pixels: upscale to 448 px, 256 tokens
    honoured = Qwen2VLImageProcessorPil(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)(images=[still[0]])
    assert list(honoured["image_grid_thw"][0]) == [1, 32, 32]


def test_collate_eval_and_train(processor, tokenizer, mixed):
    ids, mask = mixed["input_ids"], mixed["attention_mask"]
    pad = tokenizer.pad_token_id
    assert mixed["is_pc"].tolist() == [False, False, True] and mixed["is_img"].tolist() == [False, True, False]
    assert bool((mask[:, -1] == 1).all()) and bool((mask[:, 0] == 0).any())          # left padding
    s = ids.shape[1] - int(mask[2].sum())
    assert s == 0 and ids[2, :N_POINTS].eq(pad).all() and ids[2, N_POINTS] == tokenizer.convert_tokens_to_ids(
        "<|im_start|>")
    assert int((mixed["mm_token_type_ids"][1] == 2).sum()) == 16 and mixed["video_grid_thw"].tolist() == [[1, 8, 8]]
    assert torch.equal(mixed["point_clouds"][2], torch.from_numpy(cloud())) and mixed["point_clouds"][:2].eq(0).all()
    texts = tokenizer.batch_decode(ids, skip_special_tokens=False)
    assert texts[0].endswith("<|im_start|>user\na plate 40 by 20 by 5 with a hole<|im_end|>\n<|im_start|>assistant\n")
    assert texts[2].endswith("user\nGenerate cadquery code<|im_end|>\n<|im_start|>assistant\n")
    answers = ["r = cq.Workplane('XY').box(40, 20, 5)", "r = 1", "r = cq.Workplane('XY').cylinder(3, 9)"]
    items = [{"description": "a plate", "answer": answers[0]}, {"video": [frame()], "answer": answers[1]},
             {"point_cloud": cloud(), "answer": answers[2]}]
    train = collate(items, processor, eval=False)
    for row, answer in zip(train["labels"], answers):
        assert tokenizer.decode(row[row != -100]) == "\n" + answer + END_TOKEN
    with pytest.raises(ValueError, match="exactly one of"):
        collate([{"description": "x", "point_cloud": cloud()}], processor)
    with pytest.raises(ValueError, match="needs an 'answer'"):
        collate([{"description": "x"}], processor, eval=False)


# ------------------------------------------------------------------------------------------------
# The proofs
# ------------------------------------------------------------------------------------------------
def test_point_injection_equals_a_hand_written_write(model, mixed):
    """E = embed(ids); E[i, s:s+256] = W [p, sin(p 2^j), cos(p 2^j)] + b, written by hand, for the point row."""
    captured = {}
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True)
    with torch.no_grad():
        logits = model(**mixed).logits
    hook.remove()
    ids, mask = mixed["input_ids"], mixed["attention_mask"]
    with torch.no_grad():
        expected = model.model.language_model.embed_tokens(ids).clone()
        p = mixed["point_clouds"][2]
        f = 2.0 ** torch.arange(8)
        x = (p[:, :, None] * f).reshape(N_POINTS, 24)                          # x f0..x f7, y f0.., z f0..
        features = torch.cat([p, x.sin(), x.cos()], dim=1)                      # (256, 51)
        s = ids.shape[1] - int(mask[2].sum())
        expected[2, s:s + N_POINTS] = features @ model.point_encoder.projection.weight.T \
            + model.point_encoder.projection.bias
    diff = max_diff(captured["embeds"][0], expected[0]), max_diff(captured["embeds"][2], expected[2])
    print(f"point injection vs hand-written write: max|diff| text row {diff[0]:.2e}, point row {diff[1]:.2e}")
    assert diff[0] == 0 and diff[1] < 1e-5
    assert not torch.equal(captured["embeds"][1], expected[1])     # the video row got its video embeddings
    # with the hand-written embeddings (video scattered as the model did), the backbone gives the same logits
    hand = expected.clone()
    hand[1] = captured["embeds"][1]
    positions, _ = model.rope_positions(ids, mask, mixed["mm_token_type_ids"], None, mixed["video_grid_thw"])
    with torch.no_grad():
        out = model.model.language_model(inputs_embeds=hand, attention_mask=mask, position_ids=positions)
        again = model.lm_head(out.last_hidden_state)
    print(f"logits from hand-written embeddings: max|diff| = {max_diff(again, logits):.2e}")
    assert max_diff(again, logits) < 1e-5


def test_without_points_or_images_logits_equal_the_library_model(model, tokenizer, processor):
    library = Qwen2VLForConditionalGeneration(model.config).eval()
    missing, unexpected = library.load_state_dict(
        {k: v for k, v in model.state_dict().items() if not k.startswith("point_encoder.")}, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}      # tied to embed_tokens
    batch = collate([{"description": "a washer"}, {"description": "a long bracket with two holes, 60 mm"}],
                    processor)
    unpadded = batch["input_ids"][1:]
    with torch.no_grad():
        diff = max_diff(model(input_ids=unpadded).logits, library(input_ids=unpadded).logits)
        ours = model.generate(**batch, max_new_tokens=6, do_sample=False, output_logits=True,
                              return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
        theirs = library.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                  max_new_tokens=6, do_sample=False, output_logits=True,
                                  return_dict_in_generate=True, pad_token_id=tokenizer.pad_token_id)
    gen_diff = max(max_diff(a, b) for a, b in zip(ours.logits, theirs.logits))
    print(f"text only, Cadrille vs Qwen2VLForConditionalGeneration: forward max|diff| = {diff:.2e}, "
          f"left-padded generate logits max|diff| = {gen_diff:.2e}")
    assert diff < 1e-5 and gen_diff < 1e-5
    assert torch.equal(ours.sequences, theirs.sequences)


def test_mixed_prompt_positions_and_the_decode_rule(model, mixed):
    ids, mask = mixed["input_ids"], mixed["attention_mask"]
    length = ids.shape[1]
    positions, deltas = model.rope_positions(ids, mask, mixed["mm_token_type_ids"], None, mixed["video_grid_thw"])
    # text row and point row: 0, 1, 2, ... after the left pads (pads at 0), the same on the three axes
    for row in (0, 2):
        s = length - int(mask[row].sum())
        expected = torch.cat([torch.zeros(s, dtype=torch.long), torch.arange(length - s)])
        assert all(torch.equal(positions[axis, row], expected) for axis in range(3))
        assert int(deltas[row]) == -s
    # video row: text up to <|vision_end|>... the 16 video tokens are a 4 x 4 grid (8 x 8 patches, 2 x 2 merged)
    row = 1
    s = length - int(mask[row].sum())
    video = torch.nonzero(ids[row] == model.config.video_token_id).flatten()
    k = int(video[0]) - s                                   # text tokens before the video
    grid_h = grid_w = 4
    t_axis, h_axis, w_axis = positions[:, row, video]
    assert torch.equal(t_axis, torch.full((16,), k))
    assert torch.equal(h_axis, k + torch.arange(grid_h).repeat_interleave(grid_w))
    assert torch.equal(w_axis, k + torch.arange(grid_w).repeat(grid_h))
    after = positions[:, row, int(video[-1]) + 1:]
    assert torch.equal(after[0], k + max(grid_h, grid_w) + torch.arange(after.shape[1]))
    assert int(deltas[row]) == int(positions[:, row].max()) + 1 - length
    # decoding: the positions each step really uses = the prefill rule applied to the whole sequence
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["position_ids"]), with_kwargs=True)
    with torch.no_grad():
        tokens = model.generate(**mixed, max_new_tokens=5, do_sample=False, pad_token_id=0)
    hook.remove()
    assert [p.shape[-1] for p in seen] == [length, 1, 1, 1, 1]
    full_mask = torch.cat([mask, torch.ones(3, 4, dtype=mask.dtype)], dim=1)
    rule, _ = model.rope_positions(tokens[:, :-1], full_mask, None, None, mixed["video_grid_thw"])
    used = torch.cat(seen, dim=-1)
    print("decode positions (row: first 4 steps):", used[0, :, length:].tolist())
    assert torch.equal(used, rule)


def test_cached_tokens_equal_uncached_tokens(model, mixed):
    with torch.no_grad():
        cached = model.generate(**mixed, max_new_tokens=8, do_sample=False, output_logits=True,
                                return_dict_in_generate=True, pad_token_id=0)
        uncached = model.generate(**mixed, max_new_tokens=8, do_sample=False, output_logits=True,
                                  return_dict_in_generate=True, pad_token_id=0, use_cache=False)
    diff = max(max_diff(a, b) for a, b in zip(cached.logits, uncached.logits))
    print(f"cached vs uncached generate, 8 tokens: tokens equal, logits max|diff| = {diff:.2e}")
    assert torch.equal(cached.sequences, uncached.sequences)
    assert diff < 1e-4


def test_old_and_new_checkpoint_layouts_give_equal_logits(model, mixed, tmp_path):
    with torch.no_grad():
        reference = model(**mixed).logits
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}   # tied
    legacy = {to_legacy_key(k): v for k, v in state.items()}
    assert "visual.patch_embed.proj.weight" in legacy and "model.layers.0.self_attn.q_proj.bias" in legacy
    assert "model.embed_tokens.weight" in legacy and "point_encoder.projection.weight" in legacy
    logits = {}
    for name, weights in (("old", legacy), ("new", state)):
        folder = tmp_path / name
        model.config.save_pretrained(folder)
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        loaded, info = Cadrille.from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        with torch.no_grad():
            logits[name] = loaded.eval()(**mixed).logits
    diff = max_diff(logits["old"], logits["new"]), max_diff(logits["old"], reference)
    print(f"old (4.50) vs new layout logits: max|diff| = {diff[0]:.2e}; vs the saved model {diff[1]:.2e}")
    assert diff == (0.0, 0.0)
    # save_pretrained writes the old layout, and reads it back
    model.save_pretrained(tmp_path / "saved")
    with safe_open(str(tmp_path / "saved" / "model.safetensors"), "pt") as saved:
        assert set(saved.keys()) == set(legacy)
    with torch.no_grad():
        assert torch.equal(Cadrille.from_pretrained(tmp_path / "saved").eval()(**mixed).logits, reference)


def test_text_only_mrope_is_1d_rope_so_cadrecode_weights_carry_over(tokenizer, processor):
    """With three equal position rows, mrope's cos/sin = 1-D RoPE's; a Cadrille holding the mini
    CAD-Recode's language model then gives CAD-Recode's logits on text."""
    cadrecode = tiny_cadrecode(vocab_size=len(tokenizer) - 11)        # the mini CAD-Recode's vocabulary size
    cadrille = tiny_cadrille(token_ids=token_ids(tokenizer), vocab_size=len(tokenizer), seed=1)
    load_language_model(cadrille, cadrecode)
    rotary = cadrille.model.language_model.rotary_emb
    positions = torch.arange(300)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions[None].expand(3, -1, -1))
    cos1, sin1 = cadrecode.model.rotary_emb(torch.zeros(1, dtype=torch.float32), positions)
    rope_diff = max(max_diff(cos, cos1), max_diff(sin, sin1))
    assert rope_diff == 0.0
    ids = collate([{"description": "a ring of radius 30"}], processor)["input_ids"]
    ids = ids[:, ids[0] < cadrecode.config.vocab_size]
    with torch.no_grad():
        diff = max_diff(cadrille(input_ids=ids).logits[..., :cadrecode.config.vocab_size],
                        cadrecode(input_ids=ids).logits)
    print(f"text-only mrope vs 1-D RoPE: cos/sin max|diff| = {rope_diff:.1e}; "
          f"Cadrille with CAD-Recode's LM vs CAD-Recode logits: max|diff| = {diff:.2e}")
    assert diff < 1e-5


def test_zero_grid_rows_of_the_original_layout_and_is_img(model, mixed):
    """The original zero-fills video_grid_thw for rows without images; forward drops those rows."""
    padded = dict(mixed, video_grid_thw=torch.stack([torch.zeros(3, dtype=torch.long), mixed["video_grid_thw"][0],
                                                     torch.zeros(3, dtype=torch.long)]))
    with torch.no_grad():
        assert torch.equal(model(**padded).logits, model(**mixed).logits)
        with pytest.raises(ValueError, match="not marked is_img"):
            model(**dict(mixed, is_img=torch.tensor([True, False, False])))


def test_generate_code_and_program_files(model, processor, tmp_path):
    items = [{"description": "a washer"}, {"video": [frame(seed=2)]}, {"point_cloud": cloud(1)}]
    codes = generate_code(model, processor, items, max_new_tokens=4)
    batch = collate(items, processor)
    with torch.no_grad():
        tokens = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=0,
                                eos_token_id=processor.tokenizer.convert_tokens_to_ids(END_TOKEN))
    assert codes == processor.batch_decode(tokens[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    paths = write_programs(codes + codes, ["a", "b", "c"], tmp_path, n_samples=2)
    assert [p.name for p in paths] == ["a+0.py", "a+1.py", "b+0.py", "b+1.py", "c+0.py", "c+1.py"]
    assert paths[1].read_text() == codes[1]


def test_bf16_load_keeps_the_point_encoder_in_float32(model, mixed, tmp_path):
    model.save_pretrained(tmp_path)
    half = Cadrille.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert half.point_encoder.projection.weight.dtype == torch.float32
    assert half.model.language_model.embed_tokens.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = half(**mixed).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_collate_with_the_real_tokenizer():
    processor = CadrilleProcessor(qwen2vl_tokenizer())
    batch = collate([{"point_cloud": cloud()}, {"video": [frame(268)]}], processor)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids[0, :N_POINTS].eq(151643).all() and int(ids[0, N_POINTS]) == 151644 and int(mask[0].sum()) == ids.shape[1]
    assert int((ids[1] == 151656).sum()) == 100 and int((ids[1] == 151652).sum()) == 1
    assert ids[1, :ids.shape[1] - int(mask[1].sum())].eq(151643).all()          # left pads
