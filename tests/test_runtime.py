"""How runs execute on a CPU shared with other work."""
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_openmp_waits_passively_unless_the_user_chose(tmp_path):
    """A spinning OpenMP pool collapses CPU training on a shared machine (README, Runtime): simclr sets
    OMP_WAIT_POLICY=PASSIVE before torch starts, and leaves a policy the user set alone."""
    code = "import simclr, torch, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"


def test_precision_auto_takes_bf16_only_where_the_device_has_bf16_units(monkeypatch):
    """train/extract.precision auto: bf16 with AVX-512 BF16 or AMX (or a bf16 GPU), else fp32: bf16 without
    the units is emulated and slower than fp32 (docs/results.md, CPU speed: the AVX2-only run)."""
    import torch

    from simclr import runtime as rt

    cpu = torch.device("cpu")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    for avx512_bf16, amx, want in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v, raising=False)
        assert rt.resolve_precision("auto", cpu) == want
        assert rt.resolve_precision("fp32", cpu) == "fp32" and rt.resolve_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN held below its bf16 kernels
    assert rt.resolve_precision("auto", cpu) == "fp32"
    for gpu_bf16, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda v=gpu_bf16: v)
        assert rt.resolve_precision("auto", torch.device("cuda")) == want
    logged = []
    params = {"train": {"precision": "auto", "seed": 3}, "model": {}}
    out = rt.with_precision(params, "train", cpu, logged.append)
    assert out["train"] == {"precision": "fp32", "seed": 3} and params["train"]["precision"] == "auto"
    assert logged == ["train.precision auto: fp32 on cpu (no bf16 units)"]


def test_precision_rejects_an_unknown_value_naming_the_key():
    import pytest

    from simclr.config import validate_params
    from simclr.errors import UserError

    assert validate_params({"train": {"precision": "auto"}, "extract": {"precision": "auto"}})["train"]["precision"] == "auto"
    with pytest.raises(UserError, match=r"train\.precision.*fp16"):
        validate_params({"train": {"precision": "fp16"}})
