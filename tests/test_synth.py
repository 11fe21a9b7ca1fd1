"""The program generator: deterministic, on the grid, covers every operation, and its programs run."""

import numpy as np
import pytest

from cadlab.synth import (GRID, OPERATIONS, build_dataset, generate_program, normalize_program, normalized_program,
                          operations, program_numbers, validate)


def test_deterministic_by_seed():
    assert [generate_program(s) for s in range(20)] == [generate_program(s) for s in range(20)]
    assert len({generate_program(s) for s in range(50)}) == 50


def test_cad_recode_shape_of_a_program():
    for seed in range(50):
        lines = generate_program(seed).splitlines()
        assert lines[0] == "import cadquery as cq"
        assert any(line.startswith("r=") for line in lines) and lines[-1].startswith("r=")


def test_integer_coordinates_on_the_grid():
    for seed in range(300):
        numbers = program_numbers(generate_program(seed))
        assert numbers and all(isinstance(n, int) for n in numbers), seed
        assert all(-GRID <= n <= GRID for n in numbers), seed


def test_all_operation_kinds_appear():
    seen = set()
    counts = []
    for seed in range(300):
        code = generate_program(seed)
        seen |= operations(code)
        counts.append(code.count("=r.union(") + 1)
    assert seen == set(OPERATIONS)
    assert set(counts) == {1, 2, 3}


def test_bad_seed_is_a_clear_error():
    with pytest.raises(TypeError, match="seed"):
        generate_program("7")


def test_small_batch_executes_with_high_acceptance():
    accepted = 0
    for seed in range(40):
        mesh, reason = validate(generate_program(seed))
        if mesh is not None:
            accepted += 1
            assert mesh.is_watertight and mesh.volume > 0
            assert np.abs(mesh.bounds).max() <= GRID
    assert accepted >= 36, f"only {accepted}/40 programs were valid"


def test_dataset_builder_and_cache(tmp_path):
    from cadlab.pointcloud import mesh_to_point_cloud

    data = build_dataset(6, start=100, cache_dir=tmp_path, progress=False)
    assert len(data["codes"]) + data["rejected"] == 6
    assert data["points"].shape == (len(data["codes"]), 256, 3) and data["points"].dtype == np.float32
    # normalized as CAD-Recode's inputs: the longest side spans [-1, 1]
    spans = data["points"].max(axis=1) - data["points"].min(axis=1)
    assert np.all(spans.max(axis=1) <= 2.0 + 1e-5) and np.all(spans.max(axis=1) > 1.8)
    # the programs are the generator's, normalized to fill the grid: code units = 100 x point units (to 1%)
    for code, seed, points in zip(data["codes"], data["seeds"], data["points"]):
        raw, _ = validate(generate_program(seed))
        assert code == normalize_program(generate_program(seed), raw.bounds) == normalized_program(seed)[0]
        mesh, _ = validate(code)
        in_code_units = mesh_to_point_cloud(mesh, seed=seed, normalize=False)   # same samples, not rescaled
        assert np.abs(points * (GRID - 1) - in_code_units).max() < 2.5
    files = list(tmp_path.iterdir())
    assert len(files) == 1
    cached = build_dataset(6, start=100, cache_dir=tmp_path, progress=False)
    assert cached["codes"] == data["codes"] and cached["seeds"] == data["seeds"]
    assert np.array_equal(cached["points"], data["points"]) and cached["rejected"] == data["rejected"]


def test_dataset_builder_counts_rejections(monkeypatch, tmp_path):
    import cadlab.synth as synth

    monkeypatch.setattr(synth, "generate_program", lambda seed: "import cadquery as cq\nr = 1\n" if seed % 2 else
                        "import cadquery as cq\nr = cq.Workplane('XY').box(10, 20, 30)\n")
    data = synth.build_dataset(4, cache_dir=None, progress=False)
    assert data["rejected"] == 2 and data["seeds"] == [0, 2]
    assert set(data["reasons"]) == {1, 3} and all(r.startswith("invalid") for r in data["reasons"].values())


def test_normalize_program_centres_and_fills_the_grid():
    from cadlab.metrics import chamfer_distance

    checked = 0
    for seed in range(12):
        code = generate_program(seed)
        raw, _ = validate(code)
        if raw is None:
            continue
        normalized = normalize_program(code, raw.bounds)
        numbers = program_numbers(normalized)
        assert all(isinstance(n, int) for n in numbers), normalized   # local sketch coordinates may pass 100
        mesh, reason = validate(normalized)
        assert mesh is not None, reason
        lo, hi = mesh.bounds
        assert np.all(np.abs((lo + hi) / 2) <= 1.0), (seed, mesh.bounds)     # centred, to rounding
        assert abs((hi - lo).max() - 2 * (GRID - 1)) <= 2.0, (seed, mesh.bounds)  # longest side 198
        # the same shape: in the unit frame the two solids coincide (Chamfer x1000 well under 1)
        assert chamfer_distance(raw, mesh) * 1000 < 1.0, seed
        checked += 1
    assert checked >= 10


def test_normalize_program_leaves_names_and_import_alone():
    code = "import cadquery as cq\nw0=cq.Workplane('YZ',origin=(2,-4,10))\nr=w0.box(10,20,30).union(w0.cylinder(5,3))\n"
    out = normalize_program(code, [[-5, -10, -15], [5, 10, 15]])     # centre 0, longest side 30 -> s = 6.6
    assert out == ("import cadquery as cq\nw0=cq.Workplane('YZ',origin=(13,-26,66))\n"
                   "r=w0.box(66,132,198).union(w0.cylinder(33,20))\n")


def test_normalize_program_refuses_degenerate_bounds():
    with pytest.raises(ValueError, match="positive size"):
        normalize_program("import cadquery as cq\nr=1\n", [[0, 0, 0], [0, 0, 0]])
