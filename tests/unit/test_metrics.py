"""GET /metrics through the test client: request, row and warning counters, model info, jobs and queues."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import pytest
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from api.metrics import fresh_multiprocess_dir
from predictq.cli import main
from shared.settings import Settings
from shared.training import TrainedModel
from worker.celery_app import BATCH_QUEUE, TRAINING_QUEUE

PENGUINS_CSV = Path(__file__).resolve().parents[2] / "data" / "penguins.csv"
TOKEN = "s3cret"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PENGUIN = {
    "island": "Biscoe",
    "bill_length_mm": 45.1,
    "bill_depth_mm": 14.5,
    "flipper_length_mm": 210,
    "body_mass_g": 4500,
    "sex": "male",
    "year": 2008,
}
PREDICT = {"endpoint": "predict.predict", "method": "POST", "status": "200"}

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Jobs on fakeredis and Celery's memory broker; the active model re-read on every request."""
    return Settings(
        data_dir=tmp_path,
        broker_url="memory://",
        redis_url="redis://unused",
        admin_token=TOKEN,
        model_check_interval_s=0,
        dataset_path=PENGUINS_CSV,
        prometheus_multiproc_dir=None,
    )


@pytest.fixture
def version(species_model: TrainedModel, save_model: Callable[..., str]) -> str:
    """The active version: the species forest."""
    return save_model(species_model)


@pytest.fixture
def redis_client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def app(settings: Settings, redis_client: fakeredis.FakeRedis, version: str) -> Iterator[Flask]:
    app = create_app(settings, redis_client=redis_client)
    app.testing = True
    yield app
    drain(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def drain(app: Flask) -> None:
    """Empty the memory broker's queues: they are process-global."""
    celery = app.extensions["predictq"].celery
    with celery.connection_for_read() as connection:
        for queue in (BATCH_QUEUE, TRAINING_QUEUE):
            while connection.default_channel.basic_get(queue, no_ack=True) is not None:
                pass


def scrape(client: FlaskClient) -> Samples:
    """Every sample of GET /metrics, by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    families = text_string_to_metric_families(response.get_data(as_text=True))
    return {(s.name, frozenset(s.labels.items())): s.value for family in families for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def test_predictions_count_requests_latency_and_rows(client: FlaskClient, version: str) -> None:
    """After N predictions of two rows, the request counter and latency count grow by N and rows by 2N."""
    before = scrape(client)
    assert value(before, "predictq_http_requests_total", **PREDICT) is None

    for _ in range(3):
        assert client.post("/predict", json={"instances": [PENGUIN, PENGUIN]}).status_code == 200

    after = scrape(client)
    assert value(after, "predictq_http_requests_total", **PREDICT) == 3
    assert value(after, "predictq_http_request_duration_seconds_count", **PREDICT) == 3
    assert value(after, "predictq_predicted_rows_total", model_version=version) == 6


def test_out_of_range_value_counts_a_warning_by_kind_and_feature(client: FlaskClient) -> None:
    """A flipper above the training maximum and an unseen sex each count one warning; clean rows count none."""
    client.post("/predict", json={"instances": [PENGUIN]})
    assert not any(name == "predictq_input_warnings_total" for name, _ in scrape(client))

    odd = {**PENGUIN, "flipper_length_mm": 462, "sex": "unknown"}
    assert client.post("/predict", json={"instances": [odd, PENGUIN]}).status_code == 200

    warnings = {
        (dict(labels)["feature"], dict(labels)["kind"]): count
        for (name, labels), count in scrape(client).items()
        if name == "predictq_input_warnings_total"
    }
    assert warnings == {("flipper_length_mm", "above_training_max"): 1, ("sex", "unknown_category"): 1}


def test_requests_are_labelled_by_endpoint_not_path(client: FlaskClient) -> None:
    """Two unknown job ids count under one endpoint label; an unknown URL counts as unmatched."""
    client.get("/jobs/no-such-job-1")
    client.get("/jobs/no-such-job-2")
    client.get("/no/such/page")

    samples = scrape(client)
    assert value(samples, "predictq_http_requests_total", endpoint="jobs.show_job", method="GET", status="404") == 2
    assert value(samples, "predictq_http_requests_total", endpoint="unmatched", method="GET", status="404") == 1
    assert not any("no-such-job" in str(labels) for _, labels in samples)


def test_invented_methods_share_one_label(client: FlaskClient) -> None:
    """Fifty made-up methods add one series labelled "other", not fifty."""
    for i in range(50):
        assert client.open("/predict", method=f"BREW{i}").status_code == 405

    samples = scrape(client)
    methods = {dict(labels)["method"] for name, labels in samples if name == "predictq_http_requests_total"}
    assert "other" in methods
    assert not any(method.startswith("BREW") for method in methods)
    assert value(samples, "predictq_http_requests_total", endpoint="unmatched", method="other", status="405") == 50


def test_model_info_shows_the_active_version(
    client: FlaskClient, version: str, species_model: TrainedModel, save_model: Callable[..., str]
) -> None:
    """predictq_model_info names the active version, and the new one once another is activated."""
    assert value(scrape(client), "predictq_model_info", version=version) == 1

    newer = save_model(species_model, activate=False)
    assert client.post(f"/models/{newer}/activate", headers=ADMIN).status_code == 200

    samples = scrape(client)
    assert value(samples, "predictq_model_info", version=newer) == 1
    assert value(samples, "predictq_model_info", version=version) is None


def test_jobs_by_kind_and_status_follow_created_and_cancelled_jobs(client: FlaskClient) -> None:
    """Three batch jobs with one cancelled, and a retrain: queued and cancelled counts say so; the rest are 0."""
    job_ids = [client.post("/jobs", json={"instances": [PENGUIN]}).get_json()["job_id"] for _ in range(3)]
    assert client.delete(f"/jobs/{job_ids[0]}").status_code == 200
    assert client.post("/retrain", json={}, headers=ADMIN).status_code == 202

    samples = scrape(client)
    jobs = {
        (dict(labels)["kind"], dict(labels)["status"]): count
        for (name, labels), count in samples.items()
        if name == "predictq_jobs"
    }
    assert jobs[("batch", "queued")] == 2
    assert jobs[("batch", "cancelled")] == 1
    assert jobs[("retrain", "queued")] == 1
    assert sum(jobs.values()) == 4
    assert len(jobs) == 10  # every kind and status, zeros included
    assert value(samples, "predictq_redis_up") == 1


def test_queue_depth_is_the_number_of_waiting_messages(client: FlaskClient, redis_client: fakeredis.FakeRedis) -> None:
    """predictq_queue_depth is the length of each Celery list on the broker, priority lists included."""
    redis_client.rpush(BATCH_QUEUE, "m1", "m2", "m3")
    redis_client.rpush(f"{BATCH_QUEUE}\x06\x166", "urgent")
    redis_client.rpush(TRAINING_QUEUE, "t1")

    samples = scrape(client)
    assert value(samples, "predictq_queue_depth", queue=BATCH_QUEUE) == 4
    assert value(samples, "predictq_queue_depth", queue=TRAINING_QUEUE) == 1


def test_metrics_answer_without_redis(settings: Settings, version: str) -> None:
    """With no Redis configured /metrics still answers: request and model metrics, no job or queue counts."""
    app = create_app(settings.model_copy(update={"redis_url": None, "broker_url": None}))
    client = app.test_client()
    client.post("/predict", json={"instances": [PENGUIN]})

    samples = scrape(client)
    assert value(samples, "predictq_http_requests_total", **PREDICT) == 1
    assert value(samples, "predictq_model_info", version=version) == 1
    assert not names(samples) & {"predictq_jobs", "predictq_queue_depth", "predictq_redis_up"}


def test_metrics_answer_when_redis_is_down(settings: Settings, version: str) -> None:
    """An unreachable Redis makes predictq_redis_up 0 rather than failing the scrape, and /predict never needs it."""
    server = fakeredis.FakeServer()
    server.connected = False  # every command raises ConnectionError
    down = fakeredis.FakeRedis(server=server)
    client = create_app(settings, redis_client=down).test_client()

    assert client.post("/predict", json={"instances": [PENGUIN]}).status_code == 200
    samples = scrape(client)
    assert value(samples, "predictq_redis_up") == 0
    assert value(samples, "predictq_predicted_rows_total", model_version=version) == 1
    assert "predictq_jobs" not in names(samples)


def test_apps_keep_their_own_counts(settings: Settings, redis_client: fakeredis.FakeRedis, version: str) -> None:
    """Two apps in one process (as in these tests) each count only their own requests."""
    first = create_app(settings, redis_client=redis_client).test_client()
    second = create_app(settings, redis_client=redis_client).test_client()

    first.post("/predict", json={"instances": [PENGUIN]})

    assert value(scrape(first), "predictq_http_requests_total", **PREDICT) == 1
    assert value(scrape(second), "predictq_http_requests_total", **PREDICT) is None


@pytest.fixture
def multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int], None]]:
    """prometheus-client in multiprocess mode, files in tmp_path, as under `predictq serve`.

    The library picks its mode when imported; this switches it for one test. Calling the
    result makes metric objects created afterwards write as process ``pid`` would.
    """
    directory = tmp_path / "prometheus"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))

    def become(pid: int) -> None:
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: pid))

    yield become
    values.close_all_multiprocess_files()


def test_multiprocess_mode_sums_every_worker_process(
    multiprocess_dir: Callable[[int], None],
    settings: Settings,
    redis_client: fakeredis.FakeRedis,
    tmp_path: Path,
    version: str,
) -> None:
    """Each worker process writes its own file; /metrics of any one of them reports the sum."""
    settings = settings.model_copy(update={"prometheus_multiproc_dir": tmp_path / "prometheus"})
    multiprocess_dir(101)
    first = create_app(settings, redis_client=redis_client).test_client()
    first.post("/predict", json={"instances": [PENGUIN, PENGUIN]})
    multiprocess_dir(102)
    second = create_app(settings, redis_client=redis_client).test_client()
    second.post("/predict", json={"instances": [PENGUIN]})

    samples = scrape(second)
    assert value(samples, "predictq_http_requests_total", **PREDICT) == 2
    assert value(samples, "predictq_http_request_duration_seconds_count", **PREDICT) == 2
    assert sum(v for (name, _), v in samples.items() if name == "predictq_predicted_rows_total") == 3
    files = sorted(p.name for p in (tmp_path / "prometheus").iterdir())
    assert files == ["counter_101.db", "counter_102.db", "histogram_101.db", "histogram_102.db"]
    assert "predictq_jobs" in names(samples)  # read from Redis as in single-process mode


def test_serve_runs_gunicorn_with_the_config_and_an_emptied_metrics_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`predictq serve` empties the configured multiprocess dir, exports it, and loads api.gunicorn_conf."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_99.db").write_bytes(b"stale")
    started = {}
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.update(argv=argv, env=env))

    result = CliRunner(env={"PREDICTQ_DATA_DIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(directory)}).invoke(
        main, ["serve", "--workers", "3"]
    )

    assert result.exit_code == 0, result.output
    assert started["env"]["PROMETHEUS_MULTIPROC_DIR"] == str(directory)
    assert list(directory.iterdir()) == []
    argv = started["argv"]
    assert argv[argv.index("--config") + 1] == "python:api.gunicorn_conf"
    assert argv[argv.index("--workers") + 1] == "3"
    assert argv[argv.index("--threads") + 1] == "2"
    assert argv[-1] == "api:create_app()"


def test_serve_defaults_to_one_process_per_core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PREDICTQ_API_WORKERS, gunicorn gets one process per core this process may use."""
    started = {}
    monkeypatch.setattr(os, "execve", lambda path, argv, env: started.update(argv=argv))

    result = CliRunner(env={"PREDICTQ_DATA_DIR": str(tmp_path), "PREDICTQ_API_THREADS": "3"}).invoke(main, ["serve"])

    assert result.exit_code == 0, result.output
    argv = started["argv"]
    assert argv[argv.index("--workers") + 1] == str(len(os.sched_getaffinity(0)))
    assert argv[argv.index("--threads") + 1] == "3"


def test_fresh_multiprocess_dir_is_a_new_temporary_one_by_default() -> None:
    """Without a configured directory each run gets a new, empty temporary one."""
    first, second = fresh_multiprocess_dir(None), fresh_multiprocess_dir(None)
    try:
        assert first != second
        assert first.is_dir()
        assert list(first.iterdir()) == []
    finally:
        first.rmdir()
        second.rmdir()


def test_gunicorn_hooks_tidy_the_multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """child_exit drops a dead worker's live gauges, on_exit the run's files; gunicorn logs through predictq's."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    for name in ("gauge_livesum_7.db", "gauge_livesum_8.db", "counter_7.db"):
        (directory / name).write_bytes(b"")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    conf = importlib.reload(importlib.import_module("api.gunicorn_conf"))

    conf.child_exit(None, SimpleNamespace(pid=7))
    assert sorted(p.name for p in directory.iterdir()) == ["counter_7.db", "gauge_livesum_8.db"]
    conf.on_exit(None)
    assert not directory.exists()
    assert conf.logconfig_dict["loggers"]["gunicorn.error"] == {"level": "INFO", "handlers": [], "propagate": True}
    assert conf.logconfig_dict["root"]["handlers"] == ["predictq"]
