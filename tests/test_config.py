from pathlib import Path

import pytest
import yaml

from simclr import config
from simclr.config import ParamsError

ROOT = Path(__file__).resolve().parents[1]


def all_keys(d, prefix=""):
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= all_keys(v, prefix + k + ".")
    return out


def test_params_yaml_is_valid_and_spells_out_every_key():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    filled = config.load_params(ROOT / "params.yaml")
    # DVC tracks params by the keys written in params.yaml, so none may be left to defaults
    assert all_keys(filled) == all_keys(raw)


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_validate_against_the_schema(preset):
    params = config.load_params(preset)
    assert params["data"]["source"] in ("cifar10", "folder")


def test_presets_exist():
    names = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert {"cifar10-b9-resnet50.yaml", "cifar10-resnet18.yaml"} <= names


def test_bad_value_is_one_line_naming_the_key():
    with pytest.raises(ParamsError) as err:
        config.validate_params({"train": {"batch_size": "big"}})
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and "train.batch_size" in lines[0] and "'big'" in lines[0]


def test_bad_enum_names_choices_and_value():
    with pytest.raises(ParamsError, match=r"data.source: expected one of \['digits', 'cifar10', 'folder'\], found 'imagenet'"):
        config.validate_params({"data": {"source": "imagenet"}})


def test_unknown_key_is_named():
    with pytest.raises(ParamsError, match=r"train.batchsize: unknown key"):
        config.validate_params({"train": {"batchsize": 3}})


def test_every_problem_reported():
    with pytest.raises(ParamsError) as err:
        config.validate_params({"train": {"epochs": 0, "temperature": -1}, "model": {"arch": "vgg"}})
    text = str(err.value)
    assert "train.epochs" in text and "train.temperature" in text and "model.arch" in text


def test_old_accumulation_name_explains_the_new_ones():
    with pytest.raises(ParamsError, match=r"train.accumulate_steps was replaced: set train.batch_size"):
        config.validate_params({"train": {"accumulate_steps": 4, "batch_size": 64}})


def test_chunk_larger_than_batch_rejected():
    with pytest.raises(ParamsError, match=r"train.chunk_size: expected at most train.batch_size \(64\), found 128"):
        config.validate_params({"train": {"batch_size": 64, "chunk_size": 128}})


def test_folder_source_needs_a_folder():
    with pytest.raises(ParamsError, match=r"data.folder: expected a path"):
        config.validate_params({"data": {"source": "folder"}})


def test_missing_and_unparsable_params_files(tmp_path):
    with pytest.raises(ParamsError, match=r"nope.yaml: params file not found"):
        config.load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match=r"bad.yaml: not valid YAML"):
        config.load_params(bad)


def test_select_picks_only_the_named_keys():
    params = config.validate_params({})
    sub = config.select(params, ["model.arch", "probe"])
    assert sub == {"model": {"arch": "resnet18"}, "probe": params["probe"]}


@pytest.mark.parametrize("key", ["device", "threads", "gpus", "checkpoint_every", "resume"])
def test_moved_runtime_keys_say_where_they_went(key):
    with pytest.raises(ParamsError, match=rf"train.{key}: moved to runtime.{key} \(how a run executes"):
        config.validate_params({"train": {key: config.validate_params({})["runtime"][key]}})


@pytest.mark.parametrize("params, message", [
    ({"augment": {"crop_scale": [1.0, 0.2]}}, r"augment.crop_scale: expected \[min, max\] with min <= max, found \[1.0, 0.2\]"),
    ({"augment": {"crop_ratio": [1.5, 0.5]}}, r"augment.crop_ratio: expected \[min, max\] with min <= max"),
    ({"train": {"batch_size": 10}, "runtime": {"gpus": 4}}, r"train.batch_size: expected a multiple of runtime.gpus \(4\), found 10"),
    ({"train": {"epochs": 2}, "optim": {"warmup_epochs": 5}}, r"optim.warmup_epochs: expected at most train.epochs \(2\), found 5"),
    ({"probe": {"c_min": 10, "c_max": 1}}, r"probe.c_min: expected at most probe.c_max \(1\), found 10"),
])
def test_values_inconsistent_with_each_other_are_rejected(params, message):
    with pytest.raises(ParamsError, match=message):
        config.validate_params(params)


@pytest.mark.parametrize("stage", list(config.STAGE_PARAMS))
def test_a_stage_is_given_its_tracked_keys_and_runtime_only(stage):
    params = config.validate_params({})
    given = config.given(params, stage)
    expected = set(config.STAGE_PARAMS[stage]) | ({"runtime"} if stage in config.RUNTIME_STAGES else set())
    assert set(given) == {k.split(".")[0] for k in expected}
    # Snakemake's hand-over gives the same
    import json
    from_snakemake = config.from_json(json.dumps(config.stage_params(params, stage)), stage,
                                      json.dumps(params["runtime"]))
    assert from_snakemake == given
