"""The pure functions behind the notebooks' widget explorers (notebooks 01, 03, 05, 06).

Each explorer cell only wires widgets to one of these functions, so what a learner sees when a
slider moves is what is tested here.
"""

import numpy as np
import pytest
import torch

from cadlab.cad import pointcloud
from cadlab.lm import anatomy, kvcache
from cadlab.lm import parallel_decoding as parallel
from cadlab.lm.models import qwen25_config, tiny_qwen2

# ----------------------------------------------------------------------------- notebook 01


@pytest.fixture(scope="module")
def tiny_hidden(tiny):
    ids = torch.randint(3, 256, (1, 11), generator=torch.Generator().manual_seed(1))
    logits, hidden = anatomy.manual_forward(tiny, ids, return_hidden_states=True)
    return ids, logits, hidden


def test_lens_top_tokens_agrees_with_logit_lens_and_the_model(tiny, tiny_hidden):
    ids, logits, hidden = tiny_hidden
    for position in (0, 4, -1):
        lens = anatomy.logit_lens(tiny, hidden, position=position, k=3)
        for layer in range(len(hidden)):
            top, p = anatomy.lens_top_tokens(tiny, hidden, layer, position, k=3)
            assert top.tolist() == lens[layer].tolist()
            assert bool((p[:-1] >= p[1:]).all()) and 0 < float(p.sum()) <= 1 + 1e-6
    # after every layer the lens IS the model: its probabilities are softmax(logits)
    top, p = anatomy.lens_top_tokens(tiny, hidden, len(hidden) - 1, 4, k=5)
    expected = logits[0, 4].softmax(-1).topk(5)
    assert top.tolist() == expected.indices.tolist()
    torch.testing.assert_close(p, expected.values)


def test_lens_top_tokens_refuses_a_layer_or_position_that_does_not_exist(tiny, tiny_hidden):
    _, _, hidden = tiny_hidden
    with pytest.raises(ValueError, match="layer must be between 0"):
        anatomy.lens_top_tokens(tiny, hidden, len(hidden), 0)
    with pytest.raises(ValueError, match="position must index one of the 11 tokens"):
        anatomy.lens_top_tokens(tiny, hidden, 0, 11)


def test_attention_weights_equal_the_library_eager_attention(tiny_hidden):
    ids, _, hidden = tiny_hidden
    eager = tiny_qwen2(attn_implementation="eager")          # the same seed-0 weights as the fixture
    with torch.no_grad():
        library = eager(ids, output_attentions=True).attentions
    for layer in range(len(library)):
        ours = anatomy.attention_weights(eager, hidden, layer)
        assert ours.shape == (eager.config.num_attention_heads, 11, 11)
        torch.testing.assert_close(ours, library[layer][0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(ours.sum(-1), torch.ones(ours.shape[:2]))
        assert float(ours.triu(1).abs().max()) == 0.0           # causal: nothing above the diagonal
    with pytest.raises(ValueError, match="layer must be between 0 and 1"):
        anatomy.attention_weights(eager, hidden, 2)

# ----------------------------------------------------------------------------- notebook 03


def test_published_cache_configs_give_the_known_bytes_per_token():
    qwen05 = kvcache.published_cache_config("Qwen2.5-0.5B-Instruct")
    # the same formula inputs as the full config the notebooks use
    assert kvcache.kv_cache_bytes(qwen05, 1) == kvcache.kv_cache_bytes(qwen25_config(), 1) == 24 * 2 * 2 * 64 * 2
    qwen15 = kvcache.published_cache_config("Qwen2-1.5B (CAD-Recode v1.5's backbone)")
    assert kvcache.kv_cache_bytes(qwen15, 1) == 28 * 2 * 2 * 128 * 2 == 28_672
    # CAD-Recode's longest sequence (257-token prompt + 768 new tokens), one shape, bf16
    assert kvcache.kv_cache_bytes(qwen15, 1025) == 29_388_800
    for entry in kvcache.PUBLISHED_CACHE_CONFIGS.values():
        assert entry["source"] and entry["hidden_size"] == entry["num_attention_heads"] * entry["head_dim"]
    with pytest.raises(KeyError, match="known: Qwen2.5-0.5B-Instruct"):
        kvcache.published_cache_config("Qwen3")


def test_published_parameter_counts_are_what_the_configs_build():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    for entry in kvcache.PUBLISHED_CACHE_CONFIGS.values():
        config = Qwen2Config(vocab_size=151936, hidden_size=entry["hidden_size"], num_hidden_layers=entry["num_hidden_layers"],
                             intermediate_size={896: 4864, 1536: 8960}[entry["hidden_size"]],
                             num_attention_heads=entry["num_attention_heads"],
                             num_key_value_heads=entry["num_key_value_heads"], tie_word_embeddings=True)
        with torch.device("meta"):
            model = Qwen2ForCausalLM(config)
        assert sum(anatomy.parameter_breakdown(model).values()) == entry["parameters"]


def test_cache_memory_curve_is_the_formula_linear_in_tokens_and_batch():
    config = qwen25_config()
    curve = kvcache.cache_memory_curve(config, [0, 1, 1000, 32_768], batch=4, dtype=torch.float32)
    assert curve["tokens"] == [0, 1, 1000, 32_768]
    assert curve["bytes"] == [kvcache.kv_cache_bytes(config, t, 4, torch.float32) for t in curve["tokens"]]
    assert curve["bytes"][3] == 4 * 2 * 384 * 2**20                  # 384 MiB per sequence in bf16
    assert curve["mha_bytes"] == [7 * b for b in curve["bytes"]]     # 14 query heads share 2 KV heads
    single = kvcache.cache_memory_curve(config, [1000], batch=1, dtype=torch.float32)
    assert 4 * single["bytes"][0] == curve["bytes"][2]

# ----------------------------------------------------------------------------- notebook 05


@pytest.mark.parametrize("block_size, refine_iter", [(6, 1), (6, 2), (9, 4), (5, 5)])
def test_explore_block_staircase_seed_and_lossless_jacobi(tiny, block_size, refine_iter):
    ids = torch.randint(3, 256, (1, 7), generator=torch.Generator().manual_seed(2))
    report = parallel.explore_block(tiny, ids, block_size=block_size, refine_iter=refine_iter, placeholder_id=2)
    greedy, _ = parallel.greedy_generate(tiny, ids, max_new_tokens=block_size)
    assert report["greedy"].tolist() == greedy[0, 7:].tolist()
    assert all(k <= i + 1 for i, k in enumerate(report["first_final"]))        # the Jacobi guarantee
    # the seed's block is the staircase's row `refine_iter` (up to its EOS cut), lossy beyond the guarantee
    seed = report["seed"].tolist()
    assert seed == report["states"][refine_iter, :len(seed)].tolist()
    assert report["seed_correct"] >= min(report["guaranteed"], len(seed))
    assert sum(report["accepted_per_pass"]) == block_size and report["accepted_after_refine"] >= report["guaranteed"]
    if refine_iter == block_size:
        assert report["seed_correct"] == len(seed)


def test_explore_block_checks_its_arguments(tiny):
    ids = torch.tensor([[5, 6, 7]])
    with pytest.raises(ValueError, match="refine_iter"):
        parallel.explore_block(tiny, ids, block_size=4, refine_iter=0, placeholder_id=2)

# ----------------------------------------------------------------------------- notebook 06


@pytest.fixture(scope="module")
def plate_surface():
    import trimesh

    box = trimesh.creation.box((2.0, 1.4, 0.2))
    surface, _ = trimesh.sample.sample_surface(box, 4096, seed=0)
    return surface.astype(np.float32)


def test_fourier_feature_column_matches_the_encoder_layout():
    points = torch.rand(1, 20, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = pointcloud.FourierPointEncoder(1).fourier_features(points)[0]
    for axis_index, axis in enumerate("xyz"):
        for j in range(8):
            for kind, fn in (("sin", torch.sin), ("cos", torch.cos)):
                column = pointcloud.fourier_feature_column(axis, j, kind)
                torch.testing.assert_close(features[:, column], fn(points[0, :, axis_index] * 2.0 ** j))
    with pytest.raises(ValueError, match="j must be between 0 and 7"):
        pointcloud.fourier_feature_column("x", 8)


def test_explore_cloud_fps_covers_better_than_random_and_feature_is_the_encoders(plate_surface):
    fps = pointcloud.explore_cloud(plate_surface, 64, "farthest-point", axis="y", j=3, kind="cos")
    random = pointcloud.explore_cloud(plate_surface, 64, "random", seed=0)
    order = pointcloud.farthest_point_sampling(torch.from_numpy(plate_surface), 64)
    assert np.array_equal(fps["points"], plate_surface[order.numpy()])
    assert fps["coverage"] < random["coverage"]
    assert len({tuple(p) for p in random["points"]}) == 64                        # without replacement
    assert np.array_equal(random["points"], pointcloud.explore_cloud(plate_surface, 64, "random", seed=0)["points"])
    features = pointcloud.FourierPointEncoder(1).fourier_features(torch.from_numpy(fps["points"])[None])[0]
    np.testing.assert_allclose(fps["feature"], features[:, fps["column"]].numpy(), atol=1e-6)
    assert fps["frequency"] == 8
    more = pointcloud.explore_cloud(plate_surface, 256, "farthest-point")
    assert more["coverage"] < fps["coverage"]                                     # more points, smaller gaps
    with pytest.raises(ValueError, match="method must be one of"):
        pointcloud.explore_cloud(plate_surface, 64, "grid")
    with pytest.raises(ValueError, match="n_points must be between 1 and the 4096"):
        pointcloud.explore_cloud(plate_surface, 5000)


def test_every_lesson_with_an_explorer_is_driven_by_the_browser_test():
    """tests/browser/ runs without Chromium only in CI; this checks, everywhere, that it covers each
    explorer: every lesson whose cells build widgets is in its NEEDS, with one control per explorer."""
    import importlib.util
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("browser_test", root / "tests/browser/test_explorers_in_jupyterlab.py")
    browser = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(browser)
    with_explorers = {}
    for lesson in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(lesson.read_text())["cells"]
        count = sum(browser.is_explorer(c) for c in cells)
        widget_cells = sum(c["cell_type"] == "code" and "ipywidgets" in "".join(c["source"]) for c in cells)
        assert count == widget_cells, f"{lesson.name}: a widget cell the browser test would not recognise"
        if count:
            with_explorers[lesson.name] = count
    assert {name: len(browser.NEEDS[name][1]) for name in with_explorers if name in browser.NEEDS} == with_explorers
    assert set(browser.NEEDS) == set(with_explorers)
