"""params.yaml: loading, schema defaults, validation, and which keys each stage is given.

The schema (workflow/schemas/params.schema.yaml, shipped in the package as params.schema.yaml)
documents every key once. STAGE_PARAMS is the one place that says which keys a stage reads; a
stage is handed exactly those (plus `runtime` where it runs models), so reading any other key fails
at once, and dvc.yaml's `params:` and the Snakefile's `params:` are checked against it by the tests.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import UserError

# Keys each stage reads and tracks (a section name means the whole section). extract takes the
# model's architecture, input size and seed from the model file, not from params.
STAGE_PARAMS: dict[str, list[str]] = {
    "prepare": ["data"],
    "validate": ["validate"],
    "pretrain": ["model", "augment", "train", "optim"],
    "extract": ["extract"],
    "probe": ["probe"],
}
# Stages that are also given the `runtime` section (how they run; never tracked, never fingerprinted).
RUNTIME_STAGES = ("pretrain", "extract")

# What pretrain logs through DVCLive each epoch (plots/metrics/<name>.tsv; peak_rss_mib: the process's
# peak resident memory so far, ru_maxrss); knn_top1 only on
# the epochs of train.knn_every and the last.
LIVE_METRICS = ("loss", "lr", "epoch_time_s", "views_per_s", "gpu_peak_mib", "peak_rss_mib")


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
    **{f"train.{key}": (f"moved to runtime.{key} (how a run executes: no stage tracks it, so changing it "
                        "reruns nothing)") for key in ("device", "threads", "gpus", "checkpoint_every", "resume")},
}


def _inconsistent(p: dict) -> list[str]:
    """Values each valid alone but not together: (key, problem) lines, checked before any work."""
    out = []
    train, aug, probe = p["train"], p["augment"], p["probe"]
    for key in ("crop_scale", "crop_ratio"):
        low, high = aug[key]
        if low > high:
            out.append(f"augment.{key}: expected [min, max] with min <= max, found {aug[key]}")
    if train["chunk_size"] is not None and train["chunk_size"] > train["batch_size"]:
        out.append(f"train.chunk_size: expected at most train.batch_size ({train['batch_size']}), "
                   f"found {train['chunk_size']}")
    if train["batch_size"] % p["runtime"]["gpus"]:
        out.append(f"train.batch_size: expected a multiple of runtime.gpus ({p['runtime']['gpus']}), "
                   f"found {train['batch_size']}")
    if p["optim"]["warmup_epochs"] > train["epochs"]:
        out.append(f"optim.warmup_epochs: expected at most train.epochs ({train['epochs']}), "
                   f"found {p['optim']['warmup_epochs']}")
    if probe["c_min"] > probe["c_max"]:
        out.append(f"probe.c_min: expected at most probe.c_max ({probe['c_max']}), found {probe['c_min']}")
    if p["data"]["source"] == "folder" and not p["data"]["folder"]:
        out.append("data.folder: expected a path when data.source is 'folder', found null")
    return out


class ParamsError(UserError):
    """A params file that is missing, unreadable or does not match the schema."""


@lru_cache(maxsize=1)
def load_schema() -> dict:
    """The params schema, parsed once per process (read-only: nothing here changes it)."""
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


def all_keys(schema: dict, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows (sections and their keys)."""
    out = []
    for key, sub in schema.get("properties", {}).items():
        out.append(prefix + key)
        out += all_keys(sub, f"{prefix}{key}.")
    return out


def nearest_key(key: str, schema: dict) -> str | None:
    """The valid key an unknown one was probably meant to be: the closest dotted key, or a key of the
    same name in another section (train.base_lr -> optim.base_lr)."""
    import difflib

    known = [k for k in all_keys(schema) if k.count(".") == key.count(".")]
    same_leaf = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
    if same_leaf:
        return same_leaf[0]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    return close[0] if close else None


def _key_of(error: jsonschema.ValidationError) -> str:
    path = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # the offending key is not in the path; name it
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        path = path + [extra[0]] if extra else path
    return ".".join(path) or "<top level>"


def typed(params: Any, schema: dict | None = None) -> Any:
    """Snakemake's --config hands every value as text (train='{epochs: 2}' gives {'epochs': '2'}):
    read each text value the schema does not allow as a string as YAML instead (2, 0.5, true, null,
    [0.2, 1.0]). Anything else is left for validate_params to report."""
    schema = load_schema() if schema is None else schema
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if isinstance(params, dict) and "properties" in schema:
        return {k: typed(v, schema["properties"][k]) if k in schema["properties"] else v for k, v in params.items()}
    if isinstance(params, list) and "items" in schema:
        return [typed(v, schema["items"]) for v in params]
    if isinstance(params, str) and "string" not in kinds and "enum" not in schema:
        try:
            value = yaml.safe_load(params)
        except yaml.YAMLError:
            return params
        return typed(value, schema) if isinstance(value, list) else value
    return params


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
            near = nearest_key(key, schema)
            msg = (f"unknown key; did you mean {near}?" if near else "unknown key") + \
                " (see workflow/schemas/params.schema.yaml for the keys there are)"
        elif error.validator == "enum":
            msg = f"expected one of {error.validator_value}, found {error.instance!r}"
        else:
            msg = f"{error.message}"
        problems.append(f"{source}: {key}: {msg}")
    if not problems:
        problems = [f"{source}: {line}" for line in _inconsistent(filled)]
    if problems:
        raise ParamsError("\n".join(problems))
    return filled


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read params file: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None


def merge(base: dict, over: dict) -> dict:
    """base with over's keys laid on top, section by section (as `snakemake --configfile` merges a preset)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_preset(path: str | Path) -> dict:
    """A preset file: sections holding only the keys it changes."""
    over = read_yaml(Path(path))
    if not isinstance(over, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (a preset), found {type(over).__name__}")
    return over


def set_params_args(preset: dict, prefix: str = "") -> list[str]:
    """`-S key=value` words for `dvc exp run`, one per leaf key; values in YAML flow style with no
    spaces, so that the shell's word splitting of $(simclr preset ...) keeps each one whole."""
    out = []
    for key, value in preset.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out += set_params_args(value, dotted + ".")
            continue
        text = json.dumps(value, separators=(",", ":"))
        if any(c.isspace() for c in text):
            raise ParamsError(f"{dotted}: expected a value without spaces for `dvc exp run -S`, found {text}")
        out += ["-S", f"{dotted}={text}"]
    return out


def load_params(path: str | Path = "params.yaml", *presets: str | Path) -> dict:
    """params.yaml, with each preset (only the keys it changes) laid over it in turn, validated."""
    raw = read_yaml(Path(path))
    for preset in presets:
        raw = merge(raw if isinstance(raw, dict) else {}, load_preset(preset))
    return validate_params(raw, " + ".join(str(p) for p in (path, *presets)))


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
    """The keys `stage` tracks: what dvc.yaml and the Snakefile list, and what the stage is given."""
    return select(params, STAGE_PARAMS[stage])


def given(params: dict, stage: str) -> dict:
    """What `stage` is handed: its tracked keys, plus the runtime section where it runs models."""
    return select(params, STAGE_PARAMS[stage] + (["runtime"] if stage in RUNTIME_STAGES else []))


def parse_json(text: str, flag: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"{flag}: not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ParamsError(f"{flag}: expected a JSON object, found {type(value).__name__}")
    return value


def from_json(text: str, stage: str, runtime: str | None = None) -> dict:
    """Params handed over by Snakemake: the stage's keys as JSON (--config) and the runtime section
    (--runtime, schema defaults when absent), validated like params.yaml."""
    params = parse_json(text, "--config")
    missing = [k for k in STAGE_PARAMS[stage] if not has(params, k)]
    if missing:
        raise ParamsError(f"--config: missing {', '.join(missing)} for stage {stage}")
    if runtime is not None:
        params["runtime"] = parse_json(runtime, "--runtime")
    return given(validate_params(params, "--config"), stage)


def has(params: dict, dotted: str) -> bool:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
