"""Starting, scaling and stopping: what Cloud Run does to the server's container."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from tests.server.conftest import Database, Launcher
from tests.server.pg import PostgresCluster
from tests.server.proc import ConnectionSampler, run_load


def schema(postgres: PostgresCluster, db: Database) -> tuple[set[str], list[tuple]]:
    return postgres.tables(db.name), postgres.query("SELECT version_num FROM alembic_version", dbname=db.name)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_to_the_server_stops_all_its_processes_within_10_seconds(
    start_server: Launcher, migrated_database: Database, workers: str
) -> None:
    server = start_server(migrated_database, MLFLOW_WORKERS=workers)
    server.wait_healthy()
    assert requests.get(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10).status_code == 200
    # One worker is the server process itself; more are uvicorn's supervisor, its workers and
    # multiprocessing's resource tracker.
    assert len(server.tree()) == (1 if workers == "1" else 1 + int(workers) + 1)

    # Cloud Run signals the container's main process only, and kills everything 10 s later.
    seconds = server.terminate(timeout=10)

    assert seconds < 10
    assert "Finished server process" in server.log()


def test_two_servers_starting_together_on_a_migrated_database_both_serve(
    start_server: Launcher, migrated_database: Database, postgres: PostgresCluster
) -> None:
    before = schema(postgres, migrated_database)
    # As when Cloud Run starts several instances at once, e.g. after a deployment.
    servers = [start_server(migrated_database), start_server(migrated_database)]

    for server in servers:
        server.wait_healthy()
        response = requests.post(f"{server.url}/api/2.0/mlflow/experiments/search", json={"max_results": 1}, timeout=10)
        assert response.status_code == 200
    assert schema(postgres, migrated_database) == before


def test_each_worker_keeps_to_two_pools_of_pool_size_plus_max_overflow_connections(
    start_server: Launcher, new_migrated_database: Callable[[], Database], postgres: PostgresCluster
) -> None:
    db = new_migrated_database()
    workers, pool_size, max_overflow = 2, 1, 1
    # Over TCP here, so that each connection can be traced to the worker process holding it.
    server = start_server(
        db,
        MLFLOW_BACKEND_STORE_URI=db.tcp_uri,
        MLFLOW_WORKERS=str(workers),
        MLFLOW_SQLALCHEMYSTORE_POOL_SIZE=str(pool_size),
        MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW=str(max_overflow),
    )
    server.wait_healthy()
    count, close = postgres.connection_counter(db.name)
    # Started, it holds none yet: the connections `mlflow server` opened while checking its stores
    # were closed before uvicorn took over the process.
    assert count() == 0

    api = f"{server.url}/api/2.0/mlflow"
    experiment_id = requests.post(f"{api}/experiments/create", json={"name": "load"}, timeout=10).json()[
        "experiment_id"
    ]
    run_id = requests.post(f"{api}/runs/create", json={"experiment_id": experiment_id}, timeout=10).json()["run"][
        "info"
    ]["run_id"]
    requests.post(f"{api}/registered-models/create", json={"name": "m"}, timeout=10).raise_for_status()

    def tracking_and_registry(session: requests.Session, i: int) -> requests.Response:
        # Both of a worker's stores busy at once: tracking (metrics, runs) and registry (models).
        match i % 3:
            case 0:
                body = {"run_id": run_id, "key": "m", "value": i, "timestamp": 0, "step": i}
                return session.post(f"{api}/runs/log-metric", json=body, timeout=30)
            case 1:
                return session.get(f"{api}/registered-models/search", params={"max_results": 5}, timeout=30)
            case _:
                return session.get(f"{api}/runs/get", params={"run_id": run_id}, timeout=30)

    try:
        with ConnectionSampler(server, postgres.port, count) as sampled:
            load = run_load(clients=16, seconds=6, request=tracking_and_registry)
    finally:
        close()

    assert load.ok > 100 and not load.failed, load
    budget_per_worker = 2 * (pool_size + max_overflow)
    worker_pids = {p.pid for p in server.tree()} - {server.proc.pid}
    assert len(worker_pids) == workers + 1  # + multiprocessing's resource tracker, which has none
    assert sampled.max_by_pid.get(server.proc.pid, 0) == 0  # the supervisor holds no connection
    assert all(sampled.max_by_pid.get(pid, 0) <= budget_per_worker for pid in worker_pids), sampled.max_by_pid
    assert sampled.max_on_server <= workers * budget_per_worker
    # The load did need more than one connection per worker (else the bound would prove nothing).
    assert sampled.max_total_sockets > workers
