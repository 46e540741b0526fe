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


PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_validate_over_params_yaml_and_hold_only_what_they_change(preset):
    base = config.load_params(ROOT / "params.yaml")
    params = config.load_params(ROOT / "params.yaml", preset)
    assert params["data"]["source"] in ("cifar10", "stl10", "folder")
    own = yaml.safe_load(preset.read_text())
    for key in all_keys(own):
        if not isinstance(config.get(own, key), dict):
            assert config.get(params, key) == config.get(own, key), key  # the preset's value wins
            assert config.get(base, key) != config.get(own, key), f"{key}: the same as params.yaml"
    changed = {k for k in all_keys(base) if config.get(base, k) != config.get(params, k)}
    assert changed <= all_keys(own)  # nothing else moved


def test_the_cpu_preset_is_the_measured_one():
    """Keys the CPU preset inherits must stay what README's Results measured (a changed default would move them)."""
    p = config.load_params(ROOT / "params.yaml", ROOT / "configs" / "cifar10-cpu.yaml")
    measured = {"model.arch": "resnet18", "model.width": 16, "model.input_size": 16, "model.stored_size": 32,
                "model.proj_dim": 128,
                "train.epochs": 7, "train.precision": "auto", "train.compile": False, "train.batch_size": 256,
                "train.images_per_class": None, "train.temperature": 0.2, "extract.precision": "fp32",
                "optim.name": "sgd", "optim.base_lr": 0.1, "optim.weight_decay": 1e-3, "optim.momentum": 0.9,
                "optim.warmup_epochs": 0, "augment.crop_scale": [0.2, 1.0], "augment.flip_p": 0.5,
                "augment.jitter_strength": 0.5, "augment.jitter_p": 0.8, "augment.gray_p": 0.2,
                "data.source": "folder", "probe.shots": 5, "probe.knn_k": 200}
    assert {k: config.get(p, k) for k in measured} == measured
    # its header cites solo-learn's CIFAR temperature: the one tests/test_recipes.py checks for cifar10-resnet18
    solo = config.load_params(ROOT / "params.yaml", ROOT / "configs" / "cifar10-resnet18.yaml")
    assert config.get(p, "train.temperature") == config.get(solo, "train.temperature") == 0.2


def test_the_b9_preset_is_appendix_b9():
    """Keys the B.9 preset inherits from params.yaml must still be B.9's (a changed default would move it)."""
    p = config.load_params(ROOT / "params.yaml", ROOT / "configs" / "cifar10-b9-resnet50.yaml")
    b9 = {"model.arch": "resnet50", "model.width": 64, "model.input_size": 32, "model.proj_dim": 128,
          "train.batch_size": 1024, "train.epochs": 1000, "train.temperature": 0.5, "optim.name": "lars",
          "optim.base_lr": 1.0, "optim.weight_decay": 1e-6, "optim.trust_coefficient": 0.001, "optim.clip_lr": False,
          "optim.momentum": 0.9, "optim.warmup_epochs": 10, "augment.crop_scale": [0.08, 1.0], "augment.flip_p": 0.5,
          "augment.jitter_strength": 0.5, "augment.jitter_p": 0.8, "augment.gray_p": 0.2}
    assert {k: config.get(p, k) for k in b9} == b9


def test_merge_lays_a_preset_over_params_section_by_section():
    merged = config.merge({"a": {"x": 1, "y": 2}, "b": 3}, {"a": {"y": 5}})
    assert merged == {"a": {"x": 1, "y": 5}, "b": 3}


def test_presets_exist():
    names = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert {"cifar10-b9-resnet50.yaml", "cifar10-resnet18.yaml"} <= names


def test_bad_value_is_one_line_naming_the_key():
    with pytest.raises(ParamsError) as err:
        config.validate_params({"train": {"batch_size": "big"}})
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and "train.batch_size" in lines[0] and "'big'" in lines[0]


def test_bad_enum_names_choices_and_value():
    with pytest.raises(ParamsError, match=r"data.source: expected one of \['digits', 'cifar10', 'stl10', 'folder'\], found 'imagenet'"):
        config.validate_params({"data": {"source": "imagenet"}})


def test_unknown_key_is_named_with_the_nearest_valid_key():
    with pytest.raises(ParamsError, match=r"train.batchsize: unknown key; did you mean train.batch_size\?"):
        config.validate_params({"train": {"batchsize": 3}})
    with pytest.raises(ParamsError, match=r"train.base_lr: unknown key; did you mean optim.base_lr\?"):
        config.validate_params({"train": {"base_lr": 0.1}})  # the key exists, in another section
    with pytest.raises(ParamsError, match=r"optim.zzz: unknown key \(see"):
        config.validate_params({"optim": {"zzz": 1}})  # nothing near: no guess


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


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_takes_one_training_step_on_cpu(preset):
    """The preset's model, augmentation, loss and optimiser, one step on 8 random images in chunks of 4
    (batch and chunk shrunk, no torch.compile, fp32: bf16 convolutions crawl on CPUs without bf16 units).
    A CPU smoke run, not the recipe's scale."""
    import torch

    from simclr import model, optim
    from simclr.pretrain import train_step, view_maker

    params = config.load_params(ROOT / "params.yaml", preset)
    smoke = {"train": {"batch_size": 8, "chunk_size": 4, "compile": False, "precision": "fp32"}}
    params = config.validate_params(config.merge(params, smoke))
    net = model.build(params, 0)
    opt = optim.build(net, params["optim"], 8)
    size = params["model"]["input_size"]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, 3, size, size), dtype=torch.uint8, generator=gen)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    loss = train_step(net, opt, images, optim.peak_lr(params["optim"], 8), params["train"], 4, view_maker(params, gen))
    assert torch.isfinite(loss)
    # every parameter that got a gradient moved (inside a residual branch nothing does at step one:
    # its last norm layer starts at zero, as in the official code)
    moved = {name for name, p in net.named_parameters() if not torch.equal(before[name], p)}
    assert {name for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0} <= moved
    last = "head.2.weight" if params["model"]["head"] == "mlp" else "head.3.weight"
    assert {"encoder.conv1.weight", "head.0.weight", last} <= moved


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_simclr_preset_prints_the_dvc_options_of_exactly_its_keys(preset, capsys):
    from simclr import cli

    assert cli.main(["preset", str(preset), "--params", str(ROOT / "params.yaml")]) == 0
    words = capsys.readouterr().out.split()  # as the shell splits $(simclr preset ...)
    assert words[::2] == ["-S"] * (len(words) // 2)
    rebuilt = {}
    for word in words[1::2]:
        key, value = word.split("=", 1)
        section, name = key.split(".")
        rebuilt.setdefault(section, {})[name] = yaml.safe_load(value)  # dvc parses -S values as YAML
    assert rebuilt == yaml.safe_load(preset.read_text())


def test_simclr_preset_refuses_a_preset_that_does_not_validate(tmp_path, capsys):
    from simclr import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    assert cli.main(["preset", str(bad), "--params", str(ROOT / "params.yaml")]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"error: {ROOT / 'params.yaml'} + {bad}: train.epoch: unknown key"), out.err


def test_images_per_class_is_a_balanced_seeded_subset():
    """train.images_per_class: at most N train images of each class, the same draw for the same seed,
    another for another seed; null keeps every image."""
    import torch

    from simclr.pretrain import per_class_subset

    labels = torch.tensor([0] * 5 + [1] * 2 + [2] * 7)
    picked = per_class_subset(labels, 3, seed=0)
    assert torch.equal(picked, picked.sort().values)
    assert [int((labels[picked] == c).sum()) for c in range(3)] == [3, 2, 3]
    assert torch.equal(picked, per_class_subset(labels, 3, seed=0))
    assert any(not torch.equal(picked, per_class_subset(labels, 3, seed=s)) for s in range(1, 6))
    assert torch.equal(per_class_subset(labels, None, seed=0), torch.arange(len(labels)))
