"""`lmstack submit --env` never carries a credential into a job's runtime_env (the Jobs API and the
dashboard show it): refused in one line before anything is uploaded."""

import subprocess
import sys

import pytest

from lmstack.cluster.jobs import runtime_env


@pytest.mark.parametrize("name", ["AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN", "HF_TOKEN",
                                  "LMSTACK_API_KEY", "WANDB_API_KEY", "DB_PASSWORD", "GOOGLE_APPLICATION_CREDENTIALS"])
def test_credentials_are_refused(name):
    with pytest.raises(ValueError, match=f"--env {name}: a job's environment is shown"):
        runtime_env(env_vars={name: "x"})


def test_plain_settings_pass():
    env = runtime_env(env_vars={"AWS_REGION": "us-west-2", "OMP_NUM_THREADS": "4", "MONKEY": "1"})["env_vars"]
    assert env["AWS_REGION"] == "us-west-2" and env["MONKEY"] == "1"


def test_cli_refuses_before_submitting(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data:\n  paths: [x.txt]\n")
    out = subprocess.run([sys.executable, "-m", "lmstack", "submit", str(recipe), "--address", "http://127.0.0.1:9",
                          "--env", "AWS_SECRET_ACCESS_KEY=abc"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("lmstack submit: error: --env AWS_SECRET_ACCESS_KEY")
    assert "abc" not in out.stderr
