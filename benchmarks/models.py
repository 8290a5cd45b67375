"""The two models every figure is measured on, trained by predictq's own `predictq train`."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import processes
from benchmarks.servers import predictq_command
from benchmarks.synthetic import TARGET

log = logging.getLogger(__name__)

TRAINING_TIMEOUT_S = 900
# Label -> extra `predictq train` arguments. "default" passes no estimator at all, so it is
# whatever predictq trains when a user does not choose (a 100-tree random forest today).
MODEL_CHOICES = {"logistic": ["--estimator", "logistic"], "default": []}


@dataclass(frozen=True)
class TrainedVersion:
    """One trained model version in its own data directory."""

    label: str
    data_dir: Path
    version: str
    estimator: str
    estimator_params: dict
    metrics: dict
    training_wall_s: float

    @property
    def model_path(self) -> Path:
        """predictq's saved pipeline: what the textbook app and the in-process figures load."""
        return self.data_dir / "models" / self.version / "model.joblib"

    @property
    def description(self) -> str:
        trees = self.estimator_params.get("n_estimators")
        return f"{self.estimator} ({trees} trees)" if trees else self.estimator

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "version": self.version,
            "estimator": self.estimator,
            "description": self.description,
            "metrics": self.metrics,
            "training_wall_s": round(self.training_wall_s, 2),
        }


def train_model(label: str, table_csv: Path, data_dir: Path) -> TrainedVersion:
    """Run ``predictq train`` on ``table_csv`` into ``data_dir`` and read back what it saved."""
    env = processes.child_environment(PREDICTQ_DATA_DIR=data_dir, PREDICTQ_LOG_LEVEL="WARNING")
    argv = [*predictq_command(), "train", "--data", str(table_csv), "--target", TARGET, *MODEL_CHOICES[label]]
    started = time.perf_counter()
    completed = processes.run(argv, timeout_s=TRAINING_TIMEOUT_S, env=env)
    wall_s = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"predictq train ({label}) failed: {completed.stderr.strip() or completed.stdout.strip()}")
    version = json.loads(completed.stdout)["version"]
    manifest = json.loads((data_dir / "models" / version / "manifest.json").read_text())
    trained = TrainedVersion(
        label=label,
        data_dir=data_dir,
        version=version,
        estimator=manifest["estimator"]["name"],
        estimator_params=manifest["estimator"]["params"],
        metrics=manifest["metrics"]["holdout"],
        training_wall_s=wall_s,
    )
    log.info("trained %s: %s in %.1f s, holdout %s", label, trained.description, wall_s, trained.metrics)
    return trained
