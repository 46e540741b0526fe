"""params.yaml: loading, schema defaults, validation, and which keys each stage reads.

The schema (workflow/schemas/params.schema.yaml, shipped in the package as params.schema.yaml)
documents every key once. STAGE_PARAMS is the one place that says which keys a stage reads;
dvc.yaml's `params:` and the Snakefile's `params:` are checked against it by the tests.
"""
from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

# Keys each stage reads (a section name means the whole section).
STAGE_PARAMS: dict[str, list[str]] = {
    "prepare": ["data"],
    "validate": ["validate"],
    "pretrain": ["model", "augment", "train", "optim"],
    "extract": ["model.arch", "model.input_size", "model.norm", "train.seed", "train.device", "train.threads", "extract"],
    "probe": ["probe"],
}

# What pretrain logs through DVCLive each epoch (plots/metrics/<name>.tsv); knn_top1 only on
# the epochs of train.knn_every and the last.
LIVE_METRICS = ("loss", "lr", "epoch_time_s", "views_per_s", "gpu_peak_mib")


def live_metrics(params: dict) -> list[str]:
    """The per-epoch metric files a pretrain run with these params writes."""
    train = params["train"]
    knn = train["knn_every"] > 0
    return [*LIVE_METRICS, *(["knn_top1"] if knn else [])]


# Names an earlier version of params.yaml used, and what replaced them.
RENAMED = {
    "train.accumulate_steps": (
        "train.accumulate_steps was replaced: set train.batch_size to the effective batch "
        "(old batch_size x accumulate_steps) and train.chunk_size to the old batch_size"
    ),
}


class ParamsError(ValueError):
    """A params file that is missing, unreadable or does not match the schema."""


def load_schema() -> dict:
    text = resources.files("simclr").joinpath("params.schema.yaml").read_text()
    return yaml.safe_load(text)


def _fill_defaults(schema: dict, value: Any) -> Any:
    """Return value with the schema's defaults filled in for absent object keys (recursively)."""
    if schema.get("type") != "object" or not isinstance(value, dict):
        return value
    out = dict(value)
    for key, sub in schema.get("properties", {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _fill_defaults(sub, out[key])
    return out


def _key_of(error: jsonschema.ValidationError) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # the offending key is not in the path; name it
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        path = path + [extra[0]] if extra else path
    return ".".join(path) or "<top level>"


def validate_params(params: Any, source: str = "params.yaml") -> dict:
    """Fill defaults and validate; raise ParamsError with one line per problem naming the key."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, found {type(params).__name__}")
    problems = []
    for old, why in RENAMED.items():
        section, key = old.split(".")
        if isinstance(params.get(section), dict) and key in params[section]:
            problems.append(f"{source}: {old}: {why}")
    schema = load_schema()
    filled = _fill_defaults(schema, params)
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path))):
        key = _key_of(error)
        if error.validator == "additionalProperties" and key in RENAMED:
            continue  # already explained above
        if error.validator == "additionalProperties":
            msg = "unknown key (see workflow/schemas/params.schema.yaml for the keys there are)"
        elif error.validator == "enum":
            msg = f"expected one of {error.validator_value}, found {error.instance!r}"
        else:
            msg = f"{error.message}"
        problems.append(f"{source}: {key}: {msg}")
    train = filled.get("train", {})
    if not problems and train.get("chunk_size") is not None and train["chunk_size"] > train["batch_size"]:
        problems.append(
            f"{source}: train.chunk_size: expected at most train.batch_size ({train['batch_size']}), "
            f"found {train['chunk_size']}"
        )
    if not problems and filled["probe"]["c_min"] > filled["probe"]["c_max"]:
        problems.append(f"{source}: probe.c_min: expected at most probe.c_max, found {filled['probe']['c_min']}")
    if not problems and filled["data"]["source"] == "folder" and not filled["data"]["folder"]:
        problems.append(f"{source}: data.folder: expected a path when data.source is 'folder', found null")
    if problems:
        raise ParamsError("\n".join(problems))
    return filled


def load_params(path: str | Path = "params.yaml") -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read params file: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return validate_params(raw, str(path))


def get(params: dict, dotted: str) -> Any:
    value: Any = params
    for part in dotted.split("."):
        value = value[part]
    return value


def select(params: dict, keys: list[str]) -> dict:
    """The nested sub-dict of params holding exactly `keys` (dotted or whole sections)."""
    out: dict = {}
    for dotted in keys:
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = copy.deepcopy(get(params, dotted))
    return out


def stage_params(params: dict, stage: str) -> dict:
    return select(params, STAGE_PARAMS[stage])


def from_json(text: str, stage: str) -> dict:
    """Params handed over by Snakemake: the stage's keys as JSON, validated like params.yaml."""
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"--config: not valid JSON: {exc.msg}") from None
    filled = validate_params(given, "--config")
    missing = [k for k in STAGE_PARAMS[stage] if not _has(given, k)]
    if missing:
        raise ParamsError(f"--config: missing {', '.join(missing)} for stage {stage}")
    return filled


def _has(params: dict, dotted: str) -> bool:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
