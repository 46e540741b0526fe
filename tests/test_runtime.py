"""How runs execute on a CPU shared with other work."""
import os
import subprocess
import sys


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
