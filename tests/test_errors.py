"""Bad input a user can fix is one `error: <file or key>: ...` line and exit 1, before any work and
with nothing half-written; anything unexpected keeps its traceback."""

import pytest

from conftest import make_layout
from simclr import cli


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """A small valid layout, its manifest, and default params."""
    base = tmp_path_factory.mktemp("errors")
    root = make_layout(base / "ds", per_class=2)
    (base / "params.yaml").write_text("runtime: {device: cpu}\n")
    assert cli.main(["validate", str(root), "--manifest", str(base / "manifest.json"),
                     "--params", str(base / "params.yaml")]) == 0
    return base


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error: ")]


def extract_args(base, manifest, model, out):
    return ["extract", "--params", base / "params.yaml", "--manifest", manifest, "--model", model, "--out-dir", out]


def test_truncated_model_file_is_named(validated, capsys, tmp_path):
    model = tmp_path / "simclr.pt"
    model.write_bytes(b"PK\x03\x04 truncated")
    code, errors = run(capsys, *extract_args(validated, validated / "manifest.json", model, tmp_path / "f"))
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith(f"error: {model}: expected a model written by simclr pretrain, cannot load it")
    assert not (tmp_path / "f").exists()


def test_missing_model_file_is_named(validated, capsys, tmp_path):
    code, errors = run(capsys, *extract_args(validated, validated / "manifest.json", tmp_path / "nope.pt", tmp_path / "f"))
    assert code == 1 and errors == [f"error: {tmp_path / 'nope.pt'}: expected a model written by simclr pretrain, "
                                    "found no such file"]


def test_a_model_of_another_kind_is_named(validated, capsys, tmp_path):
    import torch

    model = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, model)
    code, errors = run(capsys, *extract_args(validated, validated / "manifest.json", model, tmp_path / "f"))
    assert code == 1 and errors == [f"error: {model}: expected a model written by simclr pretrain, "
                                    "found no 'model', 'params', 'manifest_hash' in it"]


def test_a_model_from_an_older_pretrain_is_named(validated, capsys, tmp_path):
    """A model file whose weights predate the official head (Linear with a bias, no final BN)."""
    import json

    import torch

    from simclr import config, model as model_lib

    params = config.validate_params({"model": {"input_size": 8, "width": 8, "proj_dim": 16}})
    state = model_lib.build(params, 0).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("head.4.")}
    state["head.3.bias"] = torch.zeros(16)
    manifest = json.loads((validated / "manifest.json").read_text())
    model = tmp_path / "old.pt"
    torch.save({"model": state, "params": {k: params[k] for k in ("model", "augment", "train", "optim")},
                "manifest_hash": manifest["content_hash"]}, model)
    code, errors = run(capsys, *extract_args(validated, validated / "manifest.json", model, tmp_path / "f"))
    assert code == 1 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: {model}: its weights do not fit the model its params describe "
                                "(written by an older version of pretrain?): ")
    assert errors[0].endswith("; rerun pretrain") and "head.4" in errors[0]
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize("text, found", [("{not json", "found text that is not JSON"), ("[1, 2]", "found a JSON list"),
                                         ('{"classes": []}', "found no 'content_hash', 'root', 'splits' in it")])
def test_manifest_that_is_not_a_manifest_is_named(validated, capsys, tmp_path, text, found):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(text)
    for argv in (extract_args(validated, manifest, tmp_path / "m.pt", tmp_path / "f"),
                 ["pretrain", "--params", validated / "params.yaml", "--manifest", manifest,
                  "--model", tmp_path / "m.pt", "--live-dir", tmp_path / "live", "--checkpoint-dir", tmp_path / "ck"]):
        code, errors = run(capsys, *argv)
        assert code == 1 and len(errors) == 1, errors
        assert errors[0].startswith(f"error: {manifest}: expected a dataset manifest (simclr validate), {found}")
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "live").exists()


def test_features_that_are_not_npz_are_named(capsys, tmp_path):
    (tmp_path / "simclr.npz").write_text("hello")
    code, errors = run(capsys, "probe", "--params", tmp_path / "none.yaml", "--features-dir", tmp_path,
                       "--metrics", tmp_path / "probe.json", "--plots-dir", tmp_path / "plots")
    assert code == 1 and errors == [f"error: {tmp_path / 'none.yaml'}: params file not found"]
    (tmp_path / "p.yaml").write_text("{}\n")
    code, errors = run(capsys, "probe", "--params", tmp_path / "p.yaml", "--features-dir", tmp_path,
                       "--metrics", tmp_path / "probe.json", "--plots-dir", tmp_path / "plots")
    assert code == 1 and len(errors) == 1
    assert errors[0].startswith(f"error: {tmp_path / 'simclr.npz'}: expected features written by simclr extract, "
                                "cannot read it as .npz")
    assert not (tmp_path / "probe.json").exists()


def test_inconsistent_params_stop_pretrain_before_any_work(validated, capsys, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("augment: {crop_scale: [1.0, 0.2]}\nruntime: {device: cpu}\n")
    code, errors = run(capsys, "pretrain", "--params", params, "--manifest", validated / "manifest.json",
                       "--model", tmp_path / "m.pt", "--live-dir", tmp_path / "live", "--checkpoint-dir", tmp_path / "ck")
    assert code == 1
    assert errors == [f"error: {params}: augment.crop_scale: expected [min, max] with min <= max, found [1.0, 0.2]"]
    assert not any(tmp_path.glob("*/")) and not (tmp_path / "m.pt").exists()


def test_an_image_gone_since_validate_is_named(capsys, tmp_path):
    root = make_layout(tmp_path / "ds", classes=("ant", "bee"), per_class=2)  # not yet in the decode cache
    (tmp_path / "params.yaml").write_text("runtime: {device: cpu}\nmodel: {input_size: 8}\n")
    assert cli.main(["validate", str(root), "--manifest", str(tmp_path / "manifest.json"),
                     "--params", str(tmp_path / "params.yaml")]) == 0
    gone = root / "train" / "bee" / "001.png"
    gone.rename(tmp_path / "elsewhere.png")
    argv = ["pretrain", "--params", tmp_path / "params.yaml", "--manifest", tmp_path / "manifest.json",
            "--model", tmp_path / "m.pt", "--live-dir", tmp_path / "live", "--checkpoint-dir", tmp_path / "ck"]
    code, errors = run(capsys, *argv)
    assert code == 1 and errors == [f"error: {root / 'train'}: expected the 4 images the manifest lists, found 3; "
                                    "the dataset changed since validate: run validate again"]
    gone.write_bytes(b"not an image any more")  # the same count, but one file no longer decodes
    code, errors = run(capsys, *argv)
    assert code == 1 and len(errors) == 1 and errors[0].startswith(f"error: {gone}: cannot decode image")
    assert not (tmp_path / "m.pt").exists()


def test_unexpected_errors_keep_their_traceback(monkeypatch, tmp_path):
    from simclr import probe

    def boom(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(probe, "probe", boom)
    (tmp_path / "p.yaml").write_text("{}\n")
    with pytest.raises(RuntimeError, match="simulated"):
        cli.main(["probe", "--params", str(tmp_path / "p.yaml"), "--features-dir", str(tmp_path),
                  "--metrics", str(tmp_path / "m.json"), "--plots-dir", str(tmp_path / "plots")])


def test_version_and_stage_help(capsys):
    from simclr import __version__

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"simclr {__version__}"
    for stage in ("prepare", "validate", "pretrain", "extract", "probe"):
        with pytest.raises(SystemExit):
            cli.main([stage, "--help"])
        text = capsys.readouterr().out
        assert "Reads params" in text and ("writes" in text)
    parser = cli.parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for option in action._actions:
            assert option.help, f"{action.prog} {option.option_strings or option.dest}: no help text"
