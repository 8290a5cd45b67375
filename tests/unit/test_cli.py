"""The `predictq train` command, run through click's CliRunner against a data dir in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from predictq.cli import main
from shared.storage import LocalStorage
from shared.store import ModelStore


@pytest.fixture
def runner(tmp_path: Path) -> CliRunner:
    return CliRunner(env={"PREDICTQ_DATA_DIR": str(tmp_path)})


@pytest.fixture
def cli_store(tmp_path: Path) -> ModelStore:
    """The store the command writes to (PREDICTQ_DATA_DIR)."""
    return ModelStore(LocalStorage(tmp_path))


def train(runner: CliRunner, penguins_csv: Path, *args: str) -> Result:
    return runner.invoke(main, ["train", "--data", str(penguins_csv), "--param", "n_estimators=20", *args])


def test_train_saves_and_activates_a_version(runner: CliRunner, cli_store: ModelStore, penguins_csv: Path) -> None:
    """`predictq train` fits on the table, prints the outcome as JSON and activates the version."""
    result = train(runner, penguins_csv, "--target", "species")

    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["promoted"] is True
    assert outcome["task"] == "classification"
    assert cli_store.active_version() == outcome["version"]
    manifest = cli_store.manifest(outcome["version"])
    assert manifest["estimator"]["params"]["n_estimators"] == 20
    assert manifest["training_data"]["path"] == str(penguins_csv)
    assert manifest["out_of_range_policy"] == "warn"


def test_train_options_reach_the_model(runner: CliRunner, cli_store: ModelStore, penguins_csv: Path) -> None:
    """--task, --estimator, --ignore, --categorical and --out-of-range end up in the manifest."""
    result = runner.invoke(
        main,
        [
            "train", "--data", str(penguins_csv), "--target", "body_mass_g", "--task", "regression",
            "--estimator", "linear", "--ignore", "year, island", "--categorical", "flipper_length_mm",
            "--out-of-range", "clip",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    manifest = cli_store.manifest(json.loads(result.stdout)["version"])
    assert manifest["estimator"]["name"] == "ridge"
    assert manifest["feature_schema"]["ignored"] == ["island", "year"]
    kinds = {f["name"]: f["kind"] for f in manifest["feature_schema"]["features"]}
    assert kinds["flipper_length_mm"] == "categorical"
    assert manifest["out_of_range_policy"] == "clip"


def test_config_file_supplies_options(
    runner: CliRunner, cli_store: ModelStore, penguins_csv: Path, tmp_path: Path
) -> None:
    """A TOML --config gives defaults that command-line options override."""
    config = tmp_path / "train.toml"
    config.write_text(
        f'data = "{penguins_csv}"\ntarget = "sex"\nestimator = "random_forest"\nout_of_range = "reject"\n'
        "[params]\nn_estimators = 10\nmax_depth = 3\n"
    )

    result = runner.invoke(main, ["train", "--config", str(config), "--param", "n_estimators=20"])

    assert result.exit_code == 0, result.output
    manifest = cli_store.manifest(json.loads(result.stdout)["version"])
    assert manifest["target"] == "sex"
    assert manifest["out_of_range_policy"] == "reject"
    assert (manifest["estimator"]["params"]["n_estimators"], manifest["estimator"]["params"]["max_depth"]) == (20, 3)


def test_dotted_estimator_path_is_allowed_and_if_better_keeps_it_out(
    runner: CliRunner, cli_store: ModelStore, penguins_csv: Path
) -> None:
    """The command line may name a class; a dummy model does not replace the active forest."""
    forest = json.loads(train(runner, penguins_csv, "--target", "species").stdout)["version"]

    result = runner.invoke(
        main,
        [
            "train", "--data", str(penguins_csv), "--target", "species",
            "--estimator", "sklearn.dummy.DummyClassifier", "--activate", "if_better",
        ],
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    outcome = json.loads(result.stdout)
    assert outcome["promoted"] is False
    assert cli_store.active_version() == forest
    assert len(cli_store.versions()) == 2


def test_if_missing_does_nothing_when_a_model_is_active(
    runner: CliRunner, cli_store: ModelStore, penguins_csv: Path
) -> None:
    """--if-missing trains only when no model is active."""
    first = train(runner, penguins_csv, "--target", "species", "--if-missing")
    assert first.exit_code == 0, first.output

    again = train(runner, penguins_csv, "--target", "species", "--if-missing")

    assert again.exit_code == 0
    assert "nothing to train" in again.output
    assert len(cli_store.versions()) == 1


def test_training_error_is_a_clean_failure(runner: CliRunner, cli_store: ModelStore, penguins_csv: Path) -> None:
    """A bad target exits 1 with the reason and no traceback, and saves nothing."""
    result = train(runner, penguins_csv, "--target", "wingspan")

    assert result.exit_code == 1
    assert "Target column 'wingspan' is not in the data" in result.output
    assert "Traceback" not in result.output
    assert cli_store.versions() == []


def test_missing_data_file_is_a_clean_failure(runner: CliRunner, tmp_path: Path) -> None:
    """A data path that does not exist is reported, not raised."""
    result = runner.invoke(main, ["train", "--data", str(tmp_path / "nope.csv"), "--target", "species"])

    assert result.exit_code == 1
    assert "no such file" in result.output
