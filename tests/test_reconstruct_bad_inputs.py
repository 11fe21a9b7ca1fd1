"""`cadlab reconstruct` answers every bad input with one line, before any model loads; valid parts pass.

``BAD_INPUTS`` is a corpus of command lines that must be refused, for both model paths (CAD-Recode,
the default, and Cadrille, ``--mode``): flags, model folders (foreign, damaged, missing), output paths,
and meshes (missing, unreadable, open, non-manifold). Each runs in-process through ``cadlab.cli.main``
in the test's own folder and must give a non-zero status, one error line on stderr naming the problem
(argparse's usage lines may come before it), no traceback, nothing written, and no model loaded: the
loaders are replaced by one that raises ``ModelLoaded``, so the whole corpus runs in seconds.

The second half checks the other side: meshes that are valid solids are accepted however they were
tessellated or scaled. CadQuery's own tessellation (as the course makes STL files) leaves zero-area
triangles at a sphere's and a cone's poles and along fillets; they are repaired and the repair is
reported. A valid mesh drawn at 1e-9 or 1e10 units is the same solid.

Placeholders in a command line: ``{tmp}`` the folder ``make_inputs`` fills, ``{weights}`` the shipped
checkpoints (``cadlab/weights``), ``{long}`` a description of 100,000 characters.
"""

import bisect
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh

from cadlab import cli
from cadlab.cad import cadrecode, cadrille, pointcloud, reconstruct_cli
from cadlab.cad.pointcloud import load_solid, mesh_to_point_cloud
from cadlab.cad.reconstruct import to_frame_of
from cadlab.paths import MINI_CADRECODE_DIR, MINI_CADRILLE_DIR

WEIGHTS = MINI_CADRECODE_DIR.parent
LONG_TEXT = "a plate 200 by 100 with four holes " * 2858          # 100,030 characters
SHARED_EDGE = "shared by more than two triangles"


def case(command: str, expect: str, marks=()):
    """One bad input: the command line (after ``cadlab reconstruct``) and a fragment its error line must hold."""
    return pytest.param(command, expect, id=command.replace("{tmp}/", "").replace("{weights}/", "")[:80],
                        marks=marks)


BAD_INPUTS = [
    # ---- flags (CAD-Recode)
    case("{tmp}/box.stl --seed 18446744073709551616", "argument --seed: expected a seed from 0 to"),
    case("{tmp}/box.stl --seed -1", "argument --seed"),
    case("{tmp}/box.stl --temperature 1e-45", "argument --temperature: expected 0 (greedy) or a temperature"),
    case("{tmp}/box.stl --temperature nan", "argument --temperature: expected a finite number"),
    case("{tmp}/box.stl --temperature -0.5", "argument --temperature"),
    case("{tmp}/box.stl --temperature 0", "--temperature 0 is greedy decoding"),
    case("{tmp}/box.stl --grammar json", "argument --grammar: invalid choice: 'json'"),
    case("{tmp}/box.stl --grammar box --model {weights}/mini-cadrille", "only the mini CAD-Recode writes"),
    case("{tmp}/box.stl --model cadrille --mode pc --grammar box", "argument --grammar: invalid choice: 'box'"),
    case("{tmp}/box.stl --samples 0", "argument --samples: must be from 1 to 64"),
    case("{tmp}/box.stl --samples 65", "argument --samples: must be from 1 to 64"),
    case("{tmp}/box.stl --samples 2.5", "argument --samples: must be a whole number"),
    case("{tmp}/box.stl --fit-seconds -1", "argument --fit-seconds: expected a number of at least 0"),
    case("{tmp}/box.stl --fit-seconds inf", "argument --fit-seconds: expected a finite number"),
    case("{tmp}/box.stl --max-new-tokens 0", "argument --max-new-tokens: expected a whole number of at least 1"),
    case("{tmp}/box.stl --max-new-tokens many", "argument --max-new-tokens: expected a whole number"),
    case("{tmp}/box.stl --max-new-tokens 100000", "more than the model's context of 1024 tokens"),
    case("{tmp}/box.stl --beams 4", "unrecognized arguments: --beams"),
    case("", "the following arguments are required: PART.stl"),
    # ---- output paths (checked before the mesh and the model)
    case("{tmp}/box.stl -o {tmp}/afile", "is a file, not a folder"),
    case("{tmp}/box.stl -o {tmp}/afile/inside", "is a file"),
    case("{tmp}/box.stl -o {tmp}/taken", "taken/box.py is a folder"),
    case("{tmp}/box.stl -o {tmp}/taken_stl", "taken_stl/box_pred.stl is a folder"),
    case("{tmp}/box.stl -o /sys/cadlab-reconstruct", "cannot create the folder /sys/cadlab-reconstruct"),
    case("{tmp}/box.stl --model cadrille --mode pc -o {tmp}/afile", "is a file, not a folder"),
    case("{tmp}/box.stl --model cadrille --mode img -o {tmp}/taken", "taken/box.py is a folder"),
    case("--model cadrille --mode text --text 'a disc' -o {tmp}/taken_text", "taken_text/text.py is a folder"),
    # ---- the mesh (one check for both models: cadlab.cad.pointcloud.load_solid)
    case("{tmp}/missing.stl", "no mesh file at"),
    case("{tmp}/a_folder.stl", "is not a file"),
    case("{tmp}/notes.stl", "contains no triangles"),
    case("{tmp}/empty.stl", "is empty (0 bytes)"),
    case("{tmp}/part.step", "unsupported suffix '.step'"),
    case("{tmp}/flat.stl", "zero area"),
    case("{tmp}/cloud.ply", "contains no triangles"),
    case("{tmp}/garbage.ply", "could not be read as PLY"),
    case("{tmp}/nan.obj", "NaN or infinite coordinates"),
    case("{tmp}/open.stl", "its surface is open"),
    case("{tmp}/open.stl --model cadrille --mode pc", "its surface is open"),
    case("{tmp}/open.stl --model cadrille --mode img", "its surface is open"),
    case("{tmp}/two_boxes_on_an_edge.stl", SHARED_EDGE),
    case("{tmp}/two_boxes_on_an_edge.stl --model cadrille --mode pc", SHARED_EDGE),
    case("{tmp}/missing.stl --model cadrille --mode pc", "no mesh file at"),
    # ---- the model: the kind of checkpoint, damaged weights, missing folders
    case("{tmp}/box.stl --model {weights}/mini-cadrille", "holds a Cadrille checkpoint, not a CAD-Recode checkpoint: "
         "add --mode pc"),
    case("{tmp}/box.stl --model {weights}/mini-cadrecode --mode pc", "holds a CAD-Recode checkpoint, not a Cadrille "
         "checkpoint: drop --mode"),
    case("{tmp}/box.stl --model {tmp}/broken-cadrille --mode pc", "model.safetensors is damaged"),
    case("{tmp}/box.stl --model {tmp}/broken-cadrecode", "model.safetensors is damaged"),
    case("{tmp}/box.stl --model {tmp}/smollm2", "a plain language model (LlamaForCausalLM)"),
    case("{tmp}/box.stl --model {tmp}/smollm2 --mode pc", "a plain language model (LlamaForCausalLM)"),
    case("{tmp}/box.stl --model {weights}/babygpt", "a babyGPT checkpoint"),
    case("{tmp}/box.stl --model {tmp}/folder", "has no config.json"),
    case("{tmp}/box.stl --model {tmp}/folder --mode pc", "has no config.json"),
    case("{tmp}/box.stl --model {tmp}/nowhere", "it is not a folder"),
    case("{tmp}/box.stl --model {tmp}/nowhere --mode img", "it is not a folder"),
    case("{tmp}/box.stl --model {tmp}/box.stl", "it is not a folder"),
    case("{tmp}/box.stl --model nobody/no-such-model", "not a hub id in your Hugging Face cache"),
    # ---- Cadrille's own arguments
    case("--model cadrille --mode text --text {long}", "--text is too long: "),
    case("--model cadrille --mode text --text '<|video_pad|>'", "--text cannot be used as a description"),
    case("--model cadrille --mode text", "--mode text needs a description"),
    case("--model cadrille --mode text --text ' '", "--mode text needs a description"),
    case("{tmp}/box.stl --model cadrille --mode text --text 'a disc'", "--mode text reads --text, not a part file"),
    case("{tmp}/box.stl --model cadrille --mode pc --text 'a disc'", "--text is for --mode text only"),
    case("--model cadrille --mode pc", "--mode pc needs a part"),
    case("{tmp}/box.stl --model cadrille --mode cad", "argument --mode: invalid choice: 'cad'"),
    case("{tmp}/box.stl --model cadrille --mode pc --max-new-tokens 0", "argument --max-new-tokens: expected a whole"),
    case("{tmp}/box.stl --model cadrille --mode pc --max-new-tokens 5000", "more than the model's context of 1024"),
    case("{tmp}/box.stl --model cadrille --mode pc --seed 3", "unrecognized arguments: --seed 3"),
]


# --------------------------------------------------------------------------------------------
# The inputs the corpus names
# --------------------------------------------------------------------------------------------
def two_boxes_on_an_edge() -> trimesh.Trimesh:
    """Two unit cubes that touch along one vertical edge: closed, but that edge has four triangles."""
    a = trimesh.creation.box(bounds=[[0, 0, 0], [1, 1, 1]])
    b = trimesh.creation.box(bounds=[[1, 1, 0], [2, 2, 1]])
    return trimesh.util.concatenate([a, b])


def cadquery_stl(workplane, path: Path) -> Path:
    """An STL of a CadQuery solid tessellated as the course does it: ``tessellate(0.001, 0.1)``, the
    vertices and triangles into a trimesh as they are (``process=False``)."""
    vertices, faces = workplane.val().tessellate(0.001, 0.1)
    mesh = trimesh.Trimesh(np.array([(v.x, v.y, v.z) for v in vertices]), np.array(faces), process=False)
    mesh.export(path)
    return path


def damaged_copy(source: Path, target: Path) -> None:
    """``source``'s small files, and its model.safetensors cut to half its length (an interrupted copy)."""
    target.mkdir()
    for path in source.iterdir():
        if path.name != "model.safetensors" and path.is_file() and path.stat().st_size < 5_000_000:
            shutil.copy(path, target)
    data = (source / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[:len(data) // 2])


def make_inputs(folder: Path) -> None:
    """Meshes good and bad, damaged and foreign model folders, and outputs in the way (see ``BAD_INPUTS``)."""
    trimesh.creation.box(extents=(2.0, 1.0, 0.5)).export(folder / "box.stl")
    sheet = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0.2]], [[0, 1, 2], [1, 3, 2]])
    sheet.export(folder / "open.stl")
    two_boxes_on_an_edge().export(folder / "two_boxes_on_an_edge.stl")
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]], process=False).export(folder / "flat.stl")
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]], [[0, 1, 2]], process=False).export(folder / "nan.obj")
    trimesh.PointCloud(np.random.default_rng(0).random((20, 3))).export(folder / "cloud.ply")
    (folder / "garbage.ply").write_text("this is not a mesh\n")
    (folder / "empty.stl").write_bytes(b"")
    (folder / "notes.stl").write_text("solid nonsense\nthis is not a mesh\n")
    (folder / "part.step").write_text("ISO-10303-21;")
    (folder / "a_folder.stl").mkdir()
    (folder / "folder").mkdir()
    (folder / "afile").write_text("not a folder\n")
    for name, blocked in (("taken", "box.py"), ("taken_stl", "box_pred.stl"), ("taken_text", "text.py")):
        (folder / name / blocked).mkdir(parents=True)
    damaged_copy(MINI_CADRILLE_DIR, folder / "broken-cadrille")
    damaged_copy(MINI_CADRECODE_DIR, folder / "broken-cadrecode")
    from transformers import LlamaConfig, LlamaForCausalLM   # a plain language model, as SmolLM2 is

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(folder / "smollm2")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    make_inputs(folder)
    return folder


class ModelLoaded(Exception):
    """Raised in place of loading a model: a bad input got that far."""


@pytest.fixture()
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise ModelLoaded

    for owner, name in ((cadrecode, "load_cadrecode"), (cadrille, "load_cadrille"),
                        (cadrecode.CADRecode, "from_pretrained"), (cadrille.Cadrille, "from_pretrained")):
        monkeypatch.setattr(owner, name, refuse)


def files_under(*folders: Path) -> dict:
    """Every path under ``folders``, files with their size and modification time (what a refused command must not
    change). A folder's own time is left out: trying whether it accepts a file (and removing it) touches it."""
    return {str(p): "folder" if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
            for folder in folders for p in folder.rglob("*")}


def reconstruct(argv, capsys):
    """``cadlab reconstruct ARGV`` in-process: (status, stdout, stderr)."""
    status = cli.main(["reconstruct", *map(str, argv)])
    out, err = capsys.readouterr()
    return status, out, err


def check_refusal(status, err: str, expect: str) -> None:
    """A non-zero status, and stderr = (argparse's usage lines, then) one error line holding ``expect``."""
    assert status not in (0, None), f"accepted (status {status}); stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines, "no message on stderr"
    assert lines[-1].startswith("cadlab reconstruct") and "error:" in lines[-1], err
    assert expect in lines[-1], err
    if len(lines) > 1:                              # only argparse's usage may come before the error line
        assert lines[0].startswith("usage:") and not any("error:" in line for line in lines[:-1]), err


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, expect", BAD_INPUTS)
def test_a_bad_input_is_refused_in_one_line_before_any_work(command, expect, inputs, tmp_path, monkeypatch, capsys,
                                                            no_model):
    monkeypatch.chdir(tmp_path)                    # the default output folder (-o .) is here, and is watched
    argv = [LONG_TEXT if word == "{long}" else word.format(tmp=inputs, weights=WEIGHTS)
            for word in shlex.split(command)]
    before = files_under(inputs, tmp_path)
    try:
        status, out, err = reconstruct(argv, capsys)
    except ModelLoaded:
        pytest.fail(f"the model was loaded for a bad input: {capsys.readouterr().err}")
    check_refusal(status, err, expect)
    assert out == ""
    assert files_under(inputs, tmp_path) == before, "a refused command wrote something"


def test_the_statuses_say_what_kind_of_problem(inputs, capsys, no_model):
    """2 for arguments (flags, outputs), 1 for inputs that cannot be used (the mesh, the model)."""
    assert reconstruct([inputs / "box.stl", "--seed", "-1"], capsys)[0] == 2
    assert reconstruct([inputs / "box.stl", "-o", inputs / "afile"], capsys)[0] == 2
    assert reconstruct([inputs / "open.stl", "-o", inputs / "out"], capsys)[0] == 1
    assert reconstruct([inputs / "box.stl", "--model", inputs / "broken-cadrille", "--mode", "pc"], capsys)[0] == 1


def test_the_corpus_is_large_and_covers_both_models():
    commands = [p.values[0] for p in BAD_INPUTS]
    assert len(commands) >= 50
    assert sum("--mode" in c for c in commands) >= 15 and sum("--mode" not in c for c in commands) >= 30


def test_the_real_process_exits_with_one_line(inputs, tmp_path):
    """End to end, as a learner runs it: a damaged Cadrille (once a SafetensorError traceback)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "cadlab.cli", "reconstruct", str(inputs / "box.stl"), "--model",
                           str(inputs / "broken-cadrille"), "--mode", "pc", "-o", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    check_refusal(done.returncode, done.stderr, "model.safetensors is damaged")
    assert done.returncode == 1 and done.stdout == "" and not (tmp_path / "out").exists()


def test_a_long_description_is_measured_with_the_tokenizer_alone(tmp_path, capsys, no_model):
    """The limit in the message is the context less the chat template; a description within it passes the check."""
    status, _, err = reconstruct(["--model", "cadrille", "--mode", "text", "--text", LONG_TEXT], capsys)
    limit = int(err.split("may take at most ")[1].split(" ")[0])
    assert status == 2 and "reads at most 1024 tokens" in err and 900 < limit < 1024
    tokenizer, words = cadrille.load_cadrille_processor().tokenizer, LONG_TEXT.split(" ")

    def length(n):                                 # tokens of the first n words
        return len(tokenizer(" ".join(words[:n]), add_special_tokens=False)["input_ids"])

    n = bisect.bisect_right(range(len(words)), limit, key=length) - 1      # the most words within the limit
    assert length(n) <= limit < length(n + 1)
    with pytest.raises(ModelLoaded):               # accepted: it got as far as loading the model
        reconstruct(["--model", "cadrille", "--mode", "text", "--text", " ".join(words[:n]), "-o", tmp_path], capsys)
    status, _, err = reconstruct(["--model", "cadrille", "--mode", "text", "--text", " ".join(words[:n + 1])], capsys)
    assert status == 2 and "--text is too long" in err


# --------------------------------------------------------------------------------------------
# Valid parts are accepted
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cadquery_parts(tmp_path_factory) -> dict:
    import cadquery as cq

    folder = tmp_path_factory.mktemp("cadquery")
    parts = {"sphere": cq.Workplane().sphere(10),
             "cone": cq.Workplane().add(cq.Solid.makeCone(10, 0, 20)),
             "filleted_box": cq.Workplane().box(20, 10, 5).edges().fillet(1.5)}
    return {name: cadquery_stl(part, folder / f"{name}.stl") for name, part in parts.items()}


@pytest.mark.parametrize("name, dropped", [("sphere", 2), ("cone", 1), ("filleted_box", 8)])
def test_cadquery_tessellations_are_repaired_and_accepted(name, dropped, cadquery_parts, tmp_path, capsys, no_model):
    path = cadquery_parts[name]
    raw = trimesh.load(path, process=True)        # merged as before: the poles' and fillets' slivers leave it open
    assert not raw.is_watertight
    mesh = load_solid(path)
    assert mesh.is_watertight and len(mesh.faces) == len(raw.faces) - dropped
    assert mesh.metadata["repairs"] == [f"dropped {dropped} zero-area triangle{'s' * (dropped > 1)}"]
    assert mesh.area == pytest.approx(raw.area)
    for model in ([], ["--model", "cadrille", "--mode", "pc"]):
        with pytest.raises(ModelLoaded):           # both models take it: the CLI got as far as loading the model
            reconstruct([path, "-o", tmp_path / "out", *model], capsys)
        err = capsys.readouterr().err
        assert f"repaired {path}: dropped {dropped} zero-area triangle" in err and "error" not in err


def test_an_open_mesh_is_refused_as_open(tmp_path):
    box = trimesh.creation.box()
    box.update_faces(np.arange(len(box.faces) - 1))          # one triangle missing: a hole
    box.export(tmp_path / "holed.stl")
    with pytest.raises(ValueError, match=r"not a closed solid: its surface is open \(3 edges border a single"):
        load_solid(tmp_path / "holed.stl")


def test_four_triangles_on_an_edge_are_non_manifold_not_open(tmp_path):
    two_boxes_on_an_edge().export(tmp_path / "two.stl")
    with pytest.raises(ValueError) as refused:
        load_solid(tmp_path / "two.stl")
    message = str(refused.value)
    assert f"it is not manifold (1 edge is {SHARED_EDGE}" in message and "open" not in message


@pytest.mark.parametrize("scale", [1e-9, 1e10])
def test_a_valid_mesh_at_any_scale_is_accepted(scale, cadquery_parts, tmp_path):
    """The repair compares positions relative to the part's size, so the unit does not matter."""
    for name in ("sphere", "filleted_box"):
        reference = load_solid(cadquery_parts[name])
        mesh = trimesh.load(cadquery_parts[name], process=False)
        mesh.apply_scale(scale)
        mesh.export(tmp_path / f"{name}.stl")
        scaled = load_solid(tmp_path / f"{name}.stl")
        assert len(scaled.faces) == len(reference.faces) and scaled.metadata["repairs"] == reference.metadata["repairs"]
        np.testing.assert_allclose(scaled.bounds, reference.bounds * scale, rtol=1e-6)    # the file's coordinates
        np.testing.assert_allclose(mesh_to_point_cloud(scaled), mesh_to_point_cloud(reference), atol=1e-5)
        prediction = trimesh.creation.box(extents=(200.0, 100.0, 50.0))     # in code units, laid over the input
        np.testing.assert_allclose(to_frame_of(prediction, scaled).bounds.mean(axis=0), scaled.bounds.mean(axis=0),
                                   atol=1e-6 * scale)


def test_a_large_file_gets_a_note_before_the_slow_step(inputs, monkeypatch, capsys, no_model):
    monkeypatch.setattr(reconstruct_cli, "LARGE_MESH_BYTES", 100)
    with pytest.raises(ModelLoaded):
        reconstruct([inputs / "box.stl", "-o", inputs / "out"], capsys)
    err = capsys.readouterr().err
    assert err.startswith(f"cadlab reconstruct: note: {inputs / 'box.stl'} is 0 MB") and "8,192 surface" in err
    assert not (inputs / "out").exists()


def test_load_mesh_keeps_the_files_coordinates_and_reports_no_repair_for_a_clean_mesh(inputs):
    mesh = pointcloud.load_mesh(inputs / "box.stl")
    assert mesh.metadata["repairs"] == [] and len(mesh.faces) == 12 and len(mesh.vertices) == 8
    np.testing.assert_array_equal(mesh.bounds, [[-1, -0.5, -0.25], [1, 0.5, 0.25]])
