"""cadlab.cad.cadrecode: checkpoint layout, point injection on prefill only, generate parity, prompts, I/O.

Models are tiny random Qwen2 configs; one group of tests uses the real Qwen2 tokenizer ids
(151643 <|endoftext|>, 151644 <|im_start|>, 151645 <|im_end|>) with the full 151,936 vocabulary.
"""

import json

import numpy as np
import pytest
import torch
import trimesh
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from cadlab.cad.cadrecode import (
    CADRecode,
    STLDataset,
    backbone_mask_and_positions,
    extract_code,
    prepare_inputs,
    reconstruct_folder,
    tiny_cadrecode,
)
from cadlab.cad.pointcloud import FourierPointEncoder, load_mesh, mesh_to_point_cloud

N = 256          # points per cloud, as in CAD-Recode
PAD, START = 2, 3  # <|im_end|> and <|im_start|> of the small fake vocabulary


class TinyTokenizer:
    """Just enough of a tokenizer for prepare_inputs with the small test vocabulary."""

    ids = {"<|im_end|>": PAD, "<|im_start|>": START}
    unk_token_id = None

    def convert_tokens_to_ids(self, token):
        return self.ids.get(token)


def tiny_config(**overrides):
    """The config ``tiny_cadrecode(**overrides)`` builds its model from."""
    return tiny_cadrecode(**overrides).config


def clouds(batch, n=N, seed=0):
    """Random points in [-1, 1]^3, as normalized meshes give."""
    return torch.rand(batch, n, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def model():
    return tiny_cadrecode()


@pytest.fixture(scope="module")
def inputs():
    return prepare_inputs(clouds(2), TinyTokenizer())


def manual_prefill_logits(model, inputs):
    """The definition, written out with a PLAIN Qwen2ForCausalLM holding the same weights:
    embed -> overwrite the 256 point positions with the encoder output -> backbone -> lm_head."""
    plain = Qwen2ForCausalLM(model.config).eval()
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and sorted(unexpected) == ["point_encoder.projection.bias", "point_encoder.projection.weight"]
    plain.to(model.dtype)
    with torch.no_grad():
        embeds = plain.model.embed_tokens(inputs["input_ids"])
        embeds[:, :N] = model.point_encoder(inputs["point_cloud"]).to(embeds.dtype)
        ones = torch.ones_like(inputs["attention_mask"])
        hidden = plain.model(inputs_embeds=embeds, attention_mask=ones).last_hidden_state
        return plain.lm_head(hidden).float()


# ---------------------------------------------------------------------------------------------
# The checkpoint layout of filapro/cad-recode-v1.5
# ---------------------------------------------------------------------------------------------
def expected_checkpoint(config) -> dict[str, tuple]:
    """Key -> shape of a CAD-Recode v1.5 checkpoint, written from the facts (Qwen2 + point encoder),
    not read off our class. lm_head.weight is tied to model.embed_tokens.weight."""
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    keys = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h),
            "point_encoder.projection.weight": (h, 51), "point_encoder.projection.bias": (h,)}
    for layer in range(config.num_hidden_layers):
        p = f"model.layers.{layer}."
        keys.update({
            p + "self_attn.q_proj.weight": (h, h), p + "self_attn.q_proj.bias": (h,),
            p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.k_proj.bias": (kv,),
            p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.v_proj.bias": (kv,),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i),
            p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
        })
    return keys


def qwen2_1_5b_config() -> Qwen2Config:
    """Qwen/Qwen2-1.5B's published architecture (CAD-Recode's base LLM)."""
    return Qwen2Config(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                       num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=131072,
                       rms_norm_eps=1e-6, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                       tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151643)


def test_state_dict_has_the_checkpoint_layout_at_full_size():
    config = qwen2_1_5b_config()
    with torch.device("meta"):   # 1.5B parameters, no memory
        model = CADRecode(config)
    shapes = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    assert shapes == expected_checkpoint(config)
    assert len(shapes) == 5 + 12 * 28
    assert shapes["point_encoder.projection.weight"] == (1536, 51)
    assert isinstance(model.point_encoder, FourierPointEncoder)
    assert "point_encoder.frequencies" not in shapes          # a non-persistent buffer
    assert dict(model.named_buffers())["point_encoder.frequencies"].shape == (8,)


@pytest.mark.parametrize("with_lm_head", [False, True])
def test_a_checkpoint_written_in_the_v15_layout_loads_with_no_missing_or_unexpected_keys(tmp_path, with_lm_head):
    config = tiny_config(vocab_size=300, hidden_size=48, num_attention_heads=6, num_key_value_heads=2,
                         intermediate_size=80, num_hidden_layers=3)
    generator = torch.Generator().manual_seed(1)
    tensors = {k: torch.randn(shape, generator=generator) for k, shape in expected_checkpoint(config).items()}
    if with_lm_head:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()   # an untied save
    else:
        del tensors["lm_head.weight"]                                               # save_pretrained's tied save
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config.architectures = ["CADRecode"]
    config.save_pretrained(tmp_path)

    model, info = CADRecode.from_pretrained(tmp_path, output_loading_info=True)
    assert info["missing_keys"] == set() and info["unexpected_keys"] == set() and info["mismatched_keys"] == set()
    state = model.state_dict()
    for key, tensor in tensors.items():
        assert torch.equal(state[key], tensor), key
    assert model.lm_head.weight is model.model.embed_tokens.weight                  # tied
    # a non-persistent buffer is not in the file: from_pretrained must re-create it (v5 leaves it empty)
    assert torch.equal(model.point_encoder.frequencies, 2.0 ** torch.arange(8.0))


def test_save_pretrained_writes_exactly_the_v15_keys_and_round_trips(tmp_path):
    model = tiny_cadrecode(vocab_size=300)
    model.save_pretrained(tmp_path)
    written = load_file(tmp_path / "model.safetensors")
    expected = expected_checkpoint(model.config)
    del expected["lm_head.weight"]                                                  # tied: saved once
    assert {k: tuple(t.shape) for k, t in written.items()} == expected
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["CADRecode"]
    again = CADRecode.from_pretrained(tmp_path).eval()
    ids = prepare_inputs(clouds(1), TinyTokenizer())
    with torch.no_grad():
        torch.testing.assert_close(again(**ids).logits, model(**ids).logits, rtol=0, atol=0)


def test_construction_leaves_the_default_dtype_alone():
    before = torch.get_default_dtype()
    CADRecode(tiny_config())
    assert torch.get_default_dtype() == before == torch.float32


# ---------------------------------------------------------------------------------------------
# Prefill: the point embeddings
# ---------------------------------------------------------------------------------------------
def test_prefill_logits_equal_the_manual_computation(model, inputs):
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.dtype == torch.float32 and logits.shape == (2, N + 1, model.config.vocab_size)
    torch.testing.assert_close(logits, manual_prefill_logits(model, inputs), rtol=1e-5, atol=1e-5)


def test_the_points_matter_and_the_placeholder_ids_do_not(model, inputs):
    with torch.no_grad():
        base = model(**inputs).logits
        other_points = model(**{**inputs, "point_cloud": inputs["point_cloud"].flip(0)}).logits
        other_ids = inputs["input_ids"].clone()
        other_ids[:, :N] = 7                   # whatever sits at a -1 position is overwritten
        same = model(**{**inputs, "input_ids": other_ids}).logits
    assert (base - other_points).abs().max() > 1e-2
    torch.testing.assert_close(same, base, rtol=0, atol=0)


def test_the_callers_tensors_are_not_modified(model, inputs):
    copies = {k: v.clone() for k, v in inputs.items()}
    with torch.no_grad():
        model(**inputs)
    model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=PAD)
    for key in inputs:
        assert torch.equal(inputs[key], copies[key]), key
    assert (inputs["attention_mask"][:, :N] == -1).all()


def test_backbone_mask_and_positions():
    mask = torch.tensor([[-1, -1, -1, 1, 1], [0, -1, -1, 1, 1]])
    translated, positions = backbone_mask_and_positions(mask)
    assert translated.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert positions.tolist() == [[0, 1, 2, 3, 4], [1, 0, 1, 2, 3]]
    assert mask[0, 0] == -1                      # the input is untouched


def test_forward_errors_are_clear(model, inputs):
    with pytest.raises(ValueError, match="no point_cloud"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    short_mask = inputs["attention_mask"].clone()
    short_mask[0, 0] = 1
    with pytest.raises(ValueError, match="one -1 per point"):
        model(**{**inputs, "attention_mask": short_mask})
    with pytest.raises(ValueError, match="3 clouds for 2 prompts"):
        model(**{**inputs, "point_cloud": clouds(3)})


def test_tuple_outputs_and_training_gradients_reach_the_point_encoder(inputs):
    model = tiny_cadrecode().to(torch.bfloat16)
    as_tuple = model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and as_tuple[0].dtype == torch.float32
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == -1, -100)   # no loss on point positions
    model.train()
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.point_encoder.projection.weight.grad.abs().sum() > 0


def test_plain_text_without_points_is_the_plain_qwen2(model):
    ids = torch.tensor([[5, 9, 11, 4]])
    plain = Qwen2ForCausalLM(model.config).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Generation: generate == a hand-written cached loop == recomputing everything each step
# ---------------------------------------------------------------------------------------------
STEPS = 12


@torch.no_grad()
def cached_loop(model, inputs, steps=STEPS):
    """Greedy decoding by hand with a DynamicCache: points enter on the first call only."""
    cache = DynamicCache(config=model.config)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    logits = model(input_ids=ids, attention_mask=mask, point_cloud=inputs["point_cloud"],
                   past_key_values=cache, use_cache=True).logits[:, -1]
    new, all_logits = [], []
    for _ in range(steps):
        all_logits.append(logits)
        token = logits.argmax(-1, keepdim=True)
        new.append(token)
        mask = torch.cat([mask, torch.ones_like(token)], dim=1)
        logits = model(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True).logits[:, -1]
    return torch.cat(new, dim=1), torch.stack(all_logits, dim=1)


@torch.no_grad()
def uncached_recompute(model, inputs, steps=STEPS):
    """Greedy decoding the slow way: the whole sequence (points included) through the model every step."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=mask, point_cloud=inputs["point_cloud"]).logits
        token = logits[:, -1].argmax(-1, keepdim=True)
        ids, mask = torch.cat([ids, token], dim=1), torch.cat([mask, torch.ones_like(token)], dim=1)
    return ids[:, N + 1:]


def test_greedy_generate_equals_a_cached_loop_and_an_uncached_recompute(model, inputs):
    out = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, pad_token_id=PAD,
                         output_logits=True, return_dict_in_generate=True)
    generated = out.sequences[:, N + 1:]
    loop_tokens, loop_logits = cached_loop(model, inputs)
    assert torch.equal(out.sequences[:, :N + 1], inputs["input_ids"])
    assert torch.equal(generated, loop_tokens)
    assert torch.equal(generated, uncached_recompute(model, inputs))
    torch.testing.assert_close(torch.stack(out.logits, dim=1), loop_logits, rtol=1e-5, atol=1e-5)
    no_cache = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, pad_token_id=PAD, use_cache=False)
    assert torch.equal(no_cache, out.sequences)
    assert len(set(map(tuple, generated.tolist()))) == 2 and len(set(generated[0].tolist())) > 3   # not degenerate


def test_generate_encodes_points_once_and_counts_positions_from_zero(model, inputs):
    encoder_calls, positions = [], []
    hooks = [model.point_encoder.register_forward_hook(lambda m, args, out: encoder_calls.append(out.shape)),
             model.model.register_forward_pre_hook(lambda m, args, kwargs: positions.append(kwargs["position_ids"]),
                                                   with_kwargs=True)]
    try:
        model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=PAD)
        assert encoder_calls == [torch.Size([2, N, model.config.hidden_size])]   # prefill only
        # generate's own cumsum over a mask with -1s would give negative positions; forward recounts them
        assert positions[0].tolist() == [list(range(N + 1))] * 2
        assert [p.tolist() for p in positions[1:]] == [[[N + 1 + k]] * 2 for k in range(3)]
        encoder_calls.clear()
        model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=PAD, use_cache=False)
        assert len(encoder_calls) == 4                                         # no cache: every step re-embeds
    finally:
        for hook in hooks:
            hook.remove()


def test_a_batch_of_two_equals_each_cloud_alone(model, inputs):
    batch = model.generate(**inputs, max_new_tokens=STEPS, do_sample=False, pad_token_id=PAD)
    with torch.no_grad():
        batch_logits = model(**inputs).logits
    for row in range(2):
        alone_inputs = {k: v[row:row + 1] for k, v in inputs.items()}
        alone = model.generate(**alone_inputs, max_new_tokens=STEPS, do_sample=False, pad_token_id=PAD)
        assert torch.equal(alone[0], batch[row])
        with torch.no_grad():
            torch.testing.assert_close(model(**alone_inputs).logits[0], batch_logits[row], rtol=1e-5, atol=1e-5)


def test_sampling_several_programs_per_cloud_expands_the_points(model, inputs):
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=5, do_sample=True, num_return_sequences=3, pad_token_id=PAD)
    assert out.shape == (6, N + 1 + 5)
    assert torch.equal(out[:3, :N + 1], inputs["input_ids"][:1].expand(3, -1))


# ---------------------------------------------------------------------------------------------
# Dtypes
# ---------------------------------------------------------------------------------------------
def test_bfloat16_model_runs_and_matches_its_manual_computation(model, inputs):
    bf16 = tiny_cadrecode().to(torch.bfloat16)
    assert bf16.point_encoder.projection.weight.dtype == torch.bfloat16
    with torch.no_grad():
        logits = bf16(**inputs).logits
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, manual_prefill_logits(bf16, inputs), rtol=0, atol=0)
    out = bf16.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=PAD)
    assert out.shape == (2, N + 1 + 4)
    with torch.no_grad():   # bf16 approximates fp32 (8-bit mantissa; this random tiny model amplifies: ~4%)
        reference = model(**inputs).logits
    assert (logits - reference).norm() < 0.1 * reference.norm()


def test_from_pretrained_in_bfloat16_keeps_the_point_encoder_in_float32(model, inputs, tmp_path):
    model.save_pretrained(tmp_path)
    bf16 = CADRecode.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert bf16.model.embed_tokens.weight.dtype == torch.bfloat16
    assert bf16.point_encoder.projection.weight.dtype == torch.float32          # as the original ran it
    assert torch.equal(bf16.point_encoder.frequencies.float(), 2.0 ** torch.arange(8.0))
    captured = []
    hook = bf16.model.register_forward_pre_hook(lambda m, args, kwargs: captured.append(kwargs["inputs_embeds"]),
                                                with_kwargs=True)
    try:
        with torch.no_grad():
            logits = bf16(**inputs).logits
    finally:
        hook.remove()
    embeds = captured[0]
    assert embeds.dtype == torch.bfloat16                                          # cast to the embedding dtype
    with torch.no_grad():
        expected_points = model.point_encoder(inputs["point_cloud"]).to(torch.bfloat16)
    assert torch.equal(embeds[:, :N], expected_points)
    assert torch.isfinite(logits).all()
    assert bf16.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=PAD).shape == (2, N + 4)


# ---------------------------------------------------------------------------------------------
# Prompts and code extraction
# ---------------------------------------------------------------------------------------------
def test_prepare_inputs_shapes_and_accepted_forms():
    single = clouds(1)[0]
    a = prepare_inputs(single, TinyTokenizer())
    b = prepare_inputs([single.numpy(), single.numpy()], TinyTokenizer())
    assert a["input_ids"].tolist() == [[PAD] * N + [START]]
    assert a["attention_mask"].tolist() == [[-1] * N + [1]]
    assert a["point_cloud"].dtype == torch.float32 and a["point_cloud"].shape == (1, N, 3)
    assert b["input_ids"].shape == b["attention_mask"].shape == (2, N + 1)
    assert torch.equal(b["point_cloud"][1], single)


def test_prepare_inputs_errors():
    with pytest.raises(ValueError, match="shape"):
        prepare_inputs(torch.zeros(2, N, 4), TinyTokenizer())
    with pytest.raises(ValueError, match="NaN"):
        prepare_inputs(torch.full((N, 3), float("nan")), TinyTokenizer())
    with pytest.raises(ValueError, match="same shape"):
        prepare_inputs([torch.zeros(N, 3), torch.zeros(N - 1, 3)], TinyTokenizer())
    with pytest.raises(ValueError, match="empty"):
        prepare_inputs([], TinyTokenizer())

    class NoSpecials(TinyTokenizer):
        ids = {}
    with pytest.raises(ValueError, match="no <\\|im_end\\|> token"):
        prepare_inputs(clouds(1), NoSpecials())


@pytest.mark.parametrize("text,code", [
    ("<|im_end|><|im_end|><|im_start|>r = cq.Workplane('XY').box(1, 2, 3)<|endoftext|><|im_end|>",
     "r = cq.Workplane('XY').box(1, 2, 3)"),
    ("<|im_start|>r = 1\nr = 2<|endoftext|>", "r = 1\nr = 2"),
    ("r = 1<|endoftext|>", "r = 1"),                                     # no start marker (only new tokens)
    ("<|im_start|>r = cq.Workplane('XY').box(1,", "r = cq.Workplane('XY').box(1,"),  # ran out of tokens
    ("<|im_start|>r = 3<|im_end|><|im_end|>", "r = 3"),                  # pad after a finished row
    ("", ""),
    ("<|im_start|><|endoftext|>", ""),
])
def test_extract_code(text, code):
    assert extract_code(text) == code


# ---------------------------------------------------------------------------------------------
# The real Qwen2 tokenizer and vocabulary
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen_tokenizer():
    from cadlab.lm.models import qwen25_tokenizer

    return qwen25_tokenizer()


@pytest.fixture(scope="module")
def qwen_vocab_model():
    """Tiny layers, full Qwen2 vocabulary (151,936), eos = <|endoftext|> as in Qwen2-1.5B."""
    return tiny_cadrecode(seed=3, vocab_size=151936, hidden_size=32, eos_token_id=151643)


def test_prompt_ids_with_the_real_qwen2_tokenizer(qwen_tokenizer):
    assert [qwen_tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] \
        == [151643, 151644, 151645]
    prompt = prepare_inputs(clouds(3), qwen_tokenizer)
    assert prompt["input_ids"].tolist() == [[151645] * N + [151644]] * 3
    assert prompt["attention_mask"].tolist() == [[-1] * N + [1]] * 3
    code = "import cadquery as cq\nr = cq.Workplane('XY').box(10, 20, 30)\n"
    code_ids = qwen_tokenizer(code)["input_ids"]
    sequence = prompt["input_ids"][0].tolist() + code_ids + [151643, 151645, 151645]
    assert extract_code(qwen_tokenizer.decode(sequence, skip_special_tokens=False)) == code


def test_generate_and_extract_with_the_real_vocabulary(qwen_vocab_model, qwen_tokenizer):
    prompt = prepare_inputs(clouds(2, seed=5), qwen_tokenizer)
    out = qwen_vocab_model.generate(**prompt, max_new_tokens=6, do_sample=False, pad_token_id=151645)
    loop_tokens, _ = cached_loop(qwen_vocab_model, prompt, steps=6)
    for row in range(2):
        new = out[row, N + 1:].tolist()
        if 151643 in new:                      # generate pads a finished row with <|im_end|>
            new = new[:new.index(151643)]
        assert new == loop_tokens[row, :len(new)].tolist()
        text = qwen_tokenizer.decode(out[row], skip_special_tokens=False)
        assert text.startswith("<|im_end|>" * N + "<|im_start|>")
        assert extract_code(text) == qwen_tokenizer.decode(new, skip_special_tokens=False)


# ---------------------------------------------------------------------------------------------
# STL folder -> programs
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def stl_folder(tmp_path):
    folder = tmp_path / "stl"
    folder.mkdir()
    trimesh.creation.box(extents=(2.0, 1.0, 0.5)).export(folder / "b_box.stl")
    trimesh.creation.cylinder(radius=3.0, height=10.0).export(folder / "a_cyl.stl")
    trimesh.creation.icosphere(subdivisions=2, radius=5.0).export(folder / "c_ball.STL")
    (folder / "notes.txt").write_text("not a mesh")
    return folder


def test_stl_dataset_gives_normalized_clouds_and_stems(stl_folder):
    dataset = STLDataset(stl_folder)
    assert len(dataset) == 3 and [dataset[i]["stem"] for i in range(3)] == ["a_cyl", "b_box", "c_ball"]
    item = dataset[1]
    expected = mesh_to_point_cloud(load_mesh(stl_folder / "b_box.stl"), n_points=N, seed=0)
    assert item["point_cloud"].dtype == torch.float32 and item["point_cloud"].shape == (N, 3)
    assert np.array_equal(item["point_cloud"].numpy(), expected)
    extent = item["point_cloud"].amax(0) - item["point_cloud"].amin(0)
    assert abs(float(extent.max()) - 2.0) < 0.05            # longest side spans [-1, 1]
    with pytest.raises(FileNotFoundError):
        STLDataset(stl_folder / "missing")
    with pytest.raises(ValueError, match="no .stl files"):
        STLDataset(stl_folder.parent)


def test_reconstruct_folder_writes_one_file_per_shape_and_sample(qwen_vocab_model, qwen_tokenizer, stl_folder,
                                                                 tmp_path):
    out_dir = tmp_path / "out"
    written = reconstruct_folder(qwen_vocab_model, qwen_tokenizer, stl_folder, out_dir, batch_size=2,
                                 max_new_tokens=5, progress=False)
    assert [p.name for p in written] == ["a_cyl+0.py", "b_box+0.py", "c_ball+0.py"]
    assert sorted(p.name for p in out_dir.iterdir()) == [p.name for p in written]
    # each file = the program generated for that shape alone (batching changes nothing)
    item = STLDataset(stl_folder)[2]
    alone = qwen_vocab_model.generate(**prepare_inputs(item["point_cloud"], qwen_tokenizer), max_new_tokens=5,
                                      do_sample=False, pad_token_id=151645)
    expected = extract_code(qwen_tokenizer.decode(alone[0], skip_special_tokens=False))
    assert (out_dir / "c_ball+0.py").read_text() == expected

    samples = reconstruct_folder(qwen_vocab_model, qwen_tokenizer, stl_folder, tmp_path / "k", batch_size=8,
                                 n_samples=2, max_new_tokens=3, do_sample=True, progress=False)
    assert [p.name for p in samples] == ["a_cyl+0.py", "a_cyl+1.py", "b_box+0.py", "b_box+1.py",
                                         "c_ball+0.py", "c_ball+1.py"]
    with pytest.raises(ValueError, match="do_sample=True"):
        reconstruct_folder(qwen_vocab_model, qwen_tokenizer, stl_folder, tmp_path / "x", n_samples=2)
