# Validate the config before any job runs, and hand each stage exactly the keys it reads.
import json
import os

from snakemake.utils import validate

from simclr import config as simclr_config

try:
    # one line per problem, naming the key (Snakemake's own message below is longer)
    simclr_config.validate_params(config, "config")
except simclr_config.ParamsError as exc:
    raise WorkflowError(f"invalid config:\n{exc}") from None
validate(config, "../schemas/params.schema.yaml", set_default=True)

DATASET = f"data/{config['data']['source']}"


def all_cores():
    """--cores (torch then uses them all); 1 where none is given (--report; cluster profiles set threads)."""
    try:
        return workflow.cores
    except WorkflowError:
        return 1


CORES = all_cores()
MANIFEST = "data/manifest.json"


def stage_config(stage):
    """The keys `stage` reads, as JSON for `simclr <stage> --config` (and Snakemake's params trigger)."""
    return json.dumps(simclr_config.stage_params(config, stage), sort_keys=True)
