"""The README's examples, run as written against the README's run command."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from readiness import wait_for_ready

from predictq.redis_server import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
START_TIMEOUT_S = 120
BLOCK_TIMEOUT_S = 240


def _bash_blocks() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    # The first block is the quickstart itself (make run / make test): that is what runs here.
    assert blocks[0].startswith("make run"), "the README should open with its two commands"
    return blocks[1:]


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory):
    """`predictq up` (what `make run` runs) in a fresh copy of the repo's data and examples."""
    workdir = tmp_path_factory.mktemp("readme")
    for folder in ("data", "examples"):
        shutil.copytree(REPO / folder, workdir / folder)
    (workdir / ".venv").symlink_to(Path(sys.prefix))
    port = free_port()
    env = {
        **os.environ,
        "PREDICTQ_PORT": str(port),
        "PREDICTQ_LOCAL_REDIS_PORT": str(free_port()),
        "PREDICTQ_API_WORKERS": "1",
        "PREDICTQ_WORKER_CONCURRENCY": "1",
    }
    env.pop("PREDICTQ_REDIS_URL", None)
    env.pop("PREDICTQ_DATA_DIR", None)
    log = open(workdir / "stack.log", "w")  # noqa: SIM115 - closed in teardown
    process = subprocess.Popen(
        [sys.executable, "-m", "predictq.cli", "up"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_ready(f"http://127.0.0.1:{port}", START_TIMEOUT_S, process=process, log_path=workdir / "stack.log")
    except BaseException:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        log.close()
        raise
    yield workdir, port
    process.send_signal(signal.SIGINT)
    try:
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


SEPARATOR = "=====README-BLOCK====="


def _run(blocks: list[str], workdir: Path, port: int) -> list[str]:
    """Run the blocks in one shell, as a reader following the README would."""
    script = f"\necho {SEPARATOR}\n".join(blocks).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        env={**os.environ, "PREDICTQ_PORT": str(port)},
    )
    assert done.returncode == 0, f"README examples failed:\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert '"status": 500' not in done.stdout and '"status":500' not in done.stdout, done.stdout
    return done.stdout.split(SEPARATOR)


def test_every_readme_example_runs(running_stack) -> None:
    """Each bash example in the README runs verbatim (port aside) and gives what the text says."""
    workdir, port = running_stack
    outputs = _run(_bash_blocks(), workdir, port)
    assert len(outputs) == 9, outputs
    predict, invalid, models, batch, uploads, retrain, rollback, train, client = outputs

    assert '"kind":"above_training_max"' in predict.replace(" ", "")
    assert '"kind":"unknown_category"' in predict.replace(" ", "")
    assert '"kind":"missing"' in predict.replace(" ", "")
    assert '"status":422' in invalid.replace(" ", "") and '"field":"bill_length_mm"' in invalid.replace(" ", "")
    assert '"active_version"' in models and '"status":"ok"' in models and '"status":"ready"' in models
    assert '"openapi":"3.1' in models.replace(" ", "") and '"/predict"' in models
    assert '"status":"succeeded"' in batch and '"result_url"' in batch
    assert '"predictions":[' in batch.replace(" ", "")
    assert "penguin_id," in batch and ",prediction," in batch  # the CSV result
    assert uploads.count('"status":"queued"') == 2
    assert '"kind":"retrain"' in retrain and '"promoted":' in retrain
    assert '"active_version":' in rollback
    assert train.count('"version":') == 2

    assert client.count("penguin_id  prediction  probability") == 1 and "\np015 " in client
    assert "status     succeeded" in client and "progress   15/15 rows" in client
    assert "promoted: version " in client and "reason: " in client  # promoted, or not promoted, and why
    assert "*  " in client and "KEY METRIC" in client
    assert client.rstrip().splitlines()[-1].startswith("active version: ")
    assert (workdir / "predictions.csv").read_text().startswith("penguin_id,island,")
    assert (workdir / "result.csv").read_text().count("\n") == 16  # header and 15 rows
