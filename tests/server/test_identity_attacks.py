"""An attacker with a valid IAP assertion (mallory) against every route that records an author or a
server tag, in every spelling Werkzeug and Starlette still route (method POST/post/Post, paths
/api, //api, ///api, /ajax-api), over HTTP/1.1 and h2c: each attack answers as the rules say, and
alice's data stays as alice left it.

The server here accepts non-canonical spellings (MLFLOW_IAP_TEST_NON_CANONICAL=accept, tests only)
so that the attacks reach the route rules themselves; a deployed server refuses them with a 400
before anything else (test_a_non_canonical_request_is_refused_400_up_front, on a default server).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from tests.server.conftest import Database, Launcher, migrate
from tests.server.iap_signer import AUDIENCE, IapSigner
from tests.server.proc import ServerProcess, image_module
from tests.server.raw_http import TRANSPORTS, Answer

ALICE = "alice@example.com"
MALLORY = "mallory@example.com"
METHOD_SPELLINGS = {"upper": str.upper, "lower": str.lower, "title": str.title}
PATH_SPELLINGS = {"/": "/api", "//": "//api", "///": "///api", "/ajax-api": "/ajax-api"}


@pytest.fixture(scope="module")
def server(module_launcher: Launcher, new_database: Callable[[], Database], signer: IapSigner) -> ServerProcess:
    db = new_database()
    migrate(db)
    server = module_launcher(
        db,
        MLFLOW_IAP_VERIFICATION="on",
        MLFLOW_IAP_AUDIENCE=AUDIENCE,
        MLFLOW_IAP_TEST_KEYS_URL=signer.keys_url,
        MLFLOW_IAP_TEST_NON_CANONICAL="accept",
    )
    server.wait_healthy()
    return server


@dataclass
class Api:
    """Canonical JSON requests as one user, for setting up and reading back."""

    server: ServerProcess
    signer: IapSigner
    email: str

    def __call__(self, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> dict[str, Any]:
        response = requests.request(
            method,
            f"{self.server.url}{path}",
            json=body,
            params=params or None,
            headers=self.signer.headers(self.email),
            timeout=30,
        )
        assert response.status_code == 200, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json()


def _tags(items: list[dict[str, str]]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in items}


@dataclass
class Victim:
    """Alice's data, made once per module through canonical requests as alice."""

    api: Api
    experiment_id: str = ""
    run_id: str = ""
    model_id: str = ""
    model: str = ""
    trace_id: str = ""
    dataset_id: str = ""
    source: str = ""
    created: dict[str, Any] = field(default_factory=dict)

    def make(self) -> Victim:
        api = self.api
        self.experiment_id = api("POST", "/api/2.0/mlflow/experiments/create", {"name": f"alice-{uuid.uuid4().hex}"})[
            "experiment_id"
        ]
        run = api(
            "POST",
            "/api/2.0/mlflow/runs/create",
            {"experiment_id": self.experiment_id, "tags": [{"key": "mlflow.user", "value": "x"}]},
        )
        self.run_id = run["run"]["info"]["run_id"]
        self.source = f"{run['run']['info']['artifact_uri']}/model"
        self.model_id = api("POST", "/api/2.0/mlflow/logged-models", {"experiment_id": self.experiment_id})["model"][
            "info"
        ]["model_id"]
        self.model = f"model-{uuid.uuid4().hex[:8]}"
        api("POST", "/api/2.0/mlflow/registered-models/create", {"name": self.model})
        for _ in range(2):
            api("POST", "/api/2.0/mlflow/model-versions/create", self.version_body(self.model))
        api(
            "POST", "/api/2.0/mlflow/registered-models/alias", {"name": self.model, "alias": "champion", "version": "1"}
        )
        api(
            "POST",
            "/api/2.0/mlflow/model-versions/transition-stage",
            {"name": self.model, "version": "1", "stage": "Production"},
        )
        self.trace_id = start_trace(api, self.experiment_id, ALICE)["trace"]["trace_info"]["trace_id"]
        self.dataset_id = api("POST", "/api/3.0/mlflow/datasets/create", {"name": f"ds-{uuid.uuid4().hex[:8]}"})[
            "dataset"
        ]["dataset_id"]
        return self

    def version_body(self, name: str, **more: Any) -> dict[str, Any]:
        return {"name": name, "source": self.source, "run_id": self.run_id, **more}

    def state(self) -> dict[str, Any]:
        """Everything an attack could have changed, as alice reads it."""
        api = self.api
        run = api("GET", "/api/2.0/mlflow/runs/get", run_id=self.run_id)["run"]
        model = api("GET", "/api/2.0/mlflow/logged-models/" + self.model_id)["model"]
        registered = api("GET", "/api/2.0/mlflow/registered-models/get", name=self.model)["registered_model"]
        versions = [
            api("GET", "/api/2.0/mlflow/model-versions/get", name=self.model, version=v)["model_version"]
            for v in ("1", "2")
        ]
        trace = api("GET", f"/api/3.0/mlflow/traces/{self.trace_id}")["trace"]["trace_info"]
        dataset = api("GET", f"/api/3.0/mlflow/datasets/{self.dataset_id}")["dataset"]
        return {
            "run": (run["info"]["user_id"], _tags(run["data"].get("tags", []))),
            "logged model": _tags(model["info"].get("tags", [])),
            "registered model": (_tags(registered.get("tags", [])), registered.get("aliases")),
            "versions": [(v.get("current_stage"), _tags(v.get("tags", []))) for v in versions],
            "trace": trace.get("trace_metadata", {}),
            "dataset": (dataset.get("created_by"), dataset.get("tags")),
        }


def start_trace(api: Callable[..., dict[str, Any]], experiment_id: str, claimed: str) -> dict[str, Any]:
    return api("POST", "/api/3.0/mlflow/traces", trace_body(experiment_id, claimed))


def trace_body(experiment_id: str, claimed: str) -> dict[str, Any]:
    return {
        "trace": {
            "trace_info": {
                "trace_id": f"tr-{uuid.uuid4().hex}",
                "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
                "request_time": "2026-01-01T00:00:00Z",
                "state": "OK",
                "trace_metadata": {"mlflow.trace.user": claimed},
            }
        }
    }


@pytest.fixture(scope="module")
def alice(server: ServerProcess, signer: IapSigner) -> Api:
    return Api(server, signer, ALICE)


@pytest.fixture(scope="module")
def victim(alice: Api) -> Victim:
    return Victim(alice).make()


@pytest.fixture(scope="module")
def untouched(victim: Victim) -> dict[str, Any]:
    state = victim.state()
    assert state["run"][0] == ALICE and state["run"][1]["mlflow.user"] == ALICE
    assert state["registered model"][0]["mlflow.alias.champion.changed_by"] == ALICE
    assert state["versions"][0][1]["mlflow.stage.changed_by"] == ALICE
    assert state["trace"]["mlflow.trace.user"] == ALICE
    return state


# --- the attacks ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    """`body(victim)` is mallory's request; `status` the answer the rules give; `check(victim, answer)`
    what must hold of what was made (mallory's own records)."""

    method: str
    path: str  # below /api (or /ajax-api)
    body: Callable[[Victim], dict[str, Any]]
    status: int
    check: Callable[[Victim, Answer], None] | None = None
    ajax_only: bool = False


def server_tag_refused(answer: Answer) -> None:
    assert "is recorded by the server" in answer.json()["message"]


def recorded_run(victim: Victim, answer: Answer) -> None:
    info, tags = answer.json()["run"]["info"], _tags(answer.json()["run"]["data"]["tags"])
    assert (info["user_id"], tags["mlflow.user"], tags["mlflow.user.client_claimed"]) == (MALLORY, MALLORY, ALICE)


def recorded_logged_model(victim: Victim, answer: Answer) -> None:
    tags = _tags(answer.json()["model"]["info"]["tags"])
    assert (tags["mlflow.user"], tags["mlflow.user.client_claimed"]) == (MALLORY, ALICE)


def recorded_version(victim: Victim, answer: Answer) -> None:
    tags = _tags(answer.json()["model_version"]["tags"])
    assert (tags["mlflow.user"], tags["mlflow.user.client_claimed"]) == (MALLORY, ALICE)


def recorded_dataset(victim: Victim, answer: Answer) -> None:
    dataset = answer.json()["dataset"]
    assert dataset["created_by"] == MALLORY
    assert json.loads(dataset["tags"])["mlflow.user.client_claimed"] == ALICE


def recorded_dataset_update(victim: Victim) -> None:
    assert victim.api("GET", f"/api/3.0/mlflow/datasets/{victim.dataset_id}")["dataset"]["last_updated_by"] == MALLORY


def recorded_trace(victim: Victim, answer: Answer) -> None:
    metadata = answer.json()["trace"]["trace_info"]["trace_metadata"]
    assert (metadata["mlflow.trace.user"], metadata["mlflow.trace.user.client_claimed"]) == (MALLORY, ALICE)


def recorded_assessment(victim: Victim, answer: Answer) -> None:
    assessment = answer.json()["assessment"]
    assert assessment["source"]["source_id"] == MALLORY
    assert assessment["metadata"]["mlflow.user.client_claimed"] == ALICE


def recorded_secret(victim: Victim, answer: Answer) -> None:
    assert answer.json()["secret"]["created_by"] == MALLORY


def recorded_promptlab_run(victim: Victim, answer: Answer) -> None:
    assert answer.json()["run"]["info"]["user_id"] == MALLORY


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


PROMPTLAB = {
    "prompt_template": "say {{ x }}",
    "prompt_parameters": [{"key": "x", "value": "hi"}],
    "model_route": "nowhere",
    "model_input": "say hi",
    "mlflow_version": "3.17.2",
}

ATTACKS: dict[str, Attack] = {
    "runs/create claims alice": Attack(
        "POST",
        "2.0/mlflow/runs/create",
        lambda v: {
            "experiment_id": v.experiment_id,
            "user_id": ALICE,
            "tags": [{"key": "mlflow.user", "value": ALICE}],
        },
        200,
        recorded_run,
    ),
    "runs/create-promptlab-run claims alice": Attack(
        "POST",
        "2.0/mlflow/runs/create-promptlab-run",
        lambda v: {"experiment_id": v.experiment_id, "user_id": ALICE, **PROMPTLAB},
        200,
        recorded_promptlab_run,
        ajax_only=True,
    ),
    "runs/set-tag mlflow.user": Attack(
        "POST",
        "2.0/mlflow/runs/set-tag",
        lambda v: {"run_id": v.run_id, "key": "mlflow.user", "value": MALLORY},
        403,
    ),
    "runs/delete-tag mlflow.user": Attack(
        "POST",
        "2.0/mlflow/runs/delete-tag",
        lambda v: {"run_id": v.run_id, "key": "mlflow.user"},
        403,
    ),
    "runs/log-batch mlflow.user": Attack(
        "POST",
        "2.0/mlflow/runs/log-batch",
        lambda v: {"run_id": v.run_id, "tags": [{"key": "mlflow.user", "value": MALLORY}]},
        403,
    ),
    "logged-models create claims alice": Attack(
        "POST",
        "2.0/mlflow/logged-models",
        lambda v: {"experiment_id": v.experiment_id, "tags": [{"key": "mlflow.user", "value": ALICE}]},
        200,
        recorded_logged_model,
    ),
    "logged-models PATCH tags mlflow.user": Attack(
        "PATCH",
        "2.0/mlflow/logged-models/{model_id}/tags",
        lambda v: {"tags": [{"key": "mlflow.user", "value": MALLORY}]},
        403,
    ),
    "logged-models DELETE tag mlflow.user": Attack(
        "DELETE",
        "2.0/mlflow/logged-models/{model_id}/tags/mlflow.user",
        lambda v: {},
        403,
    ),
    "datasets/create claims alice": Attack(
        "POST",
        "3.0/mlflow/datasets/create",
        lambda v: {"name": _unique("ds"), "created_by": ALICE, "tags": json.dumps({"mlflow.user": ALICE})},
        200,
        recorded_dataset,
    ),
    "datasets PATCH tags mlflow.user": Attack(
        "PATCH",
        "3.0/mlflow/datasets/{dataset_id}/tags",
        lambda v: {"tags": json.dumps({"mlflow.user": MALLORY})},
        403,
    ),
    "datasets records claim alice": Attack(
        "POST",
        "3.0/mlflow/datasets/{dataset_id}/records",
        lambda v: {"records": json.dumps([{"inputs": {"q": _unique("q")}, "tags": {"mlflow.user": ALICE}}])},
        200,
        lambda v, answer: recorded_dataset_update(v),
    ),
    "traces start claims alice": Attack(
        "POST",
        "3.0/mlflow/traces",
        lambda v: trace_body(v.experiment_id, ALICE),
        200,
        recorded_trace,
    ),
    "assessments create as alice": Attack(
        "POST",
        "3.0/mlflow/traces/{trace_id}/assessments",
        lambda v: {
            "assessment": {
                "trace_id": v.trace_id,
                "assessment_name": "quality",
                "source": {"source_type": "HUMAN", "source_id": ALICE},
                "feedback": {"value": True},
            }
        },
        200,
        recorded_assessment,
    ),
    "gateway secret created_by alice": Attack(
        "POST",
        "3.0/mlflow/gateway/secrets/create",
        lambda v: {
            "secret_name": _unique("key"),
            "secret_value": {"api_key": "sk-test"},
            "provider": "openai",
            "created_by": ALICE,
        },
        200,
        recorded_secret,
    ),
    "model-versions/create claims alice": Attack(
        "POST",
        "2.0/mlflow/model-versions/create",
        lambda v: v.version_body(v.model, tags=[{"key": "mlflow.user", "value": ALICE}]),
        200,
        recorded_version,
    ),
    "model-versions/set-tag stage changed_by": Attack(
        "POST",
        "2.0/mlflow/model-versions/set-tag",
        lambda v: {"name": v.model, "version": "1", "key": "mlflow.stage.changed_by", "value": MALLORY},
        403,
    ),
    "model-versions/delete-tag mlflow.user": Attack(
        "DELETE",
        "2.0/mlflow/model-versions/delete-tag",
        lambda v: {"name": v.model, "version": "1", "key": "mlflow.user"},
        403,
    ),
    "registered-models/set-tag alias changed_by": Attack(
        "POST",
        "2.0/mlflow/registered-models/set-tag",
        lambda v: {"name": v.model, "key": "mlflow.alias.champion.changed_by", "value": MALLORY},
        403,
    ),
    "registered-models/delete-tag alias changed_by": Attack(
        "DELETE",
        "2.0/mlflow/registered-models/delete-tag",
        lambda v: {"name": v.model, "key": "mlflow.alias.champion.changed_by"},
        403,
    ),
    "registered-models/alias over 226 characters": Attack(
        "POST",
        "2.0/mlflow/registered-models/alias",
        lambda v: {"name": v.model, "alias": "a" * 227, "version": "2"},
        400,
    ),
}


def _path(attack: Attack, victim: Victim, prefix: str) -> str:
    return f"{prefix}/{attack.path.format(model_id=victim.model_id, dataset_id=victim.dataset_id, trace_id=victim.trace_id)}"


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize("path_spelling", list(PATH_SPELLINGS))
@pytest.mark.parametrize("method_spelling", list(METHOD_SPELLINGS))
@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_attack_in_any_spelling_answers_as_the_rules_say(
    server: ServerProcess,
    signer: IapSigner,
    victim: Victim,
    untouched: dict[str, Any],
    name: str,
    method_spelling: str,
    path_spelling: str,
    transport: str,
) -> None:
    attack = ATTACKS[name]
    prefix = PATH_SPELLINGS[path_spelling]
    method = METHOD_SPELLINGS[method_spelling](attack.method)
    body = json.dumps(attack.body(victim)).encode()
    headers = {**signer.headers(MALLORY), "Content-Type": "application/json"}
    answer = TRANSPORTS[transport](server.port, method, _path(attack, victim, prefix), headers, body)
    if attack.ajax_only and not prefix.endswith("ajax-api"):
        assert answer.status == 404, answer.body[:300]  # Flask has no such route: nothing ran
    else:
        assert answer.status == attack.status, answer.body[:500]
        if attack.status == 403:
            server_tag_refused(answer)
        if attack.check is not None:
            attack.check(victim, answer)


def test_the_victims_data_is_as_she_left_it_after_every_attack(victim: Victim, untouched: dict[str, Any]) -> None:
    """Runs after the matrix (pytest keeps definition order within a module)."""
    assert victim.state() == untouched


# --- records made after the change ---------------------------------------------------------------


def test_an_alias_moved_by_mallory_records_mallory(server: ServerProcess, signer: IapSigner, victim: Victim) -> None:
    mallory = Api(server, signer, MALLORY)
    name = _unique("aliased")
    victim.api("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
    victim.api("POST", "/api/2.0/mlflow/model-versions/create", victim.version_body(name))
    for transport in TRANSPORTS:
        for spelling in METHOD_SPELLINGS.values():
            body = json.dumps({"name": name, "alias": "best", "version": "1"}).encode()
            headers = {**signer.headers(MALLORY), "Content-Type": "application/json"}
            answer = TRANSPORTS[transport](
                server.port, spelling("POST"), "//api/2.0/mlflow/registered-models/alias", headers, body
            )
            assert answer.status == 200, answer.body
    tags = _tags(mallory("GET", "/api/2.0/mlflow/registered-models/get", name=name)["registered_model"]["tags"])
    assert tags["mlflow.alias.best.changed_by"] == MALLORY


def test_archive_existing_versions_records_who_archived_each(
    server: ServerProcess, signer: IapSigner, victim: Victim
) -> None:
    name = _unique("archived")
    victim.api("POST", "/api/2.0/mlflow/registered-models/create", {"name": name})
    for _ in range(3):
        victim.api("POST", "/api/2.0/mlflow/model-versions/create", victim.version_body(name))
    for version in ("1", "2"):
        victim.api(
            "POST",
            "/api/2.0/mlflow/model-versions/transition-stage",
            {"name": name, "version": version, "stage": "Production"},
        )
    body = {"name": name, "version": "3", "stage": "Production", "archive_existing_versions": True}
    answer = TRANSPORTS["h2c"](
        server.port,
        "post",
        "///ajax-api/2.0/mlflow/model-versions/transition-stage",
        {**signer.headers(MALLORY), "Content-Type": "application/json"},
        json.dumps(body).encode(),
    )
    assert answer.status == 200, answer.body
    for version, stage in [("1", "Archived"), ("2", "Archived"), ("3", "Production")]:
        stored = victim.api("GET", "/api/2.0/mlflow/model-versions/get", name=name, version=version)["model_version"]
        assert (stored["current_stage"], _tags(stored["tags"])["mlflow.stage.changed_by"]) == (stage, MALLORY), version


# --- what gets in --------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_two_assertions_are_refused_like_a_bad_one(
    server: ServerProcess, signer: IapSigner, victim: Victim, transport: str
) -> None:
    body = json.dumps({"run_id": victim.run_id, "key": "note", "value": "two"}).encode()
    for first, second in [(MALLORY, ALICE), (ALICE, ALICE)]:
        headers = [
            ("x-goog-iap-jwt-assertion", signer.assertion(first)),
            ("x-goog-iap-jwt-assertion", signer.assertion(second)),
        ]
        answer = _send_with_repeated_headers(transport, server.port, headers, body)
        assert answer.status == 403, answer.body
        assert answer.json() == {
            "error_code": "PERMISSION_DENIED",
            "message": "IAP assertion refused: 2 assertions, IAP sends one",
        }
    assert "note" not in victim.state()["run"][1]


def _send_with_repeated_headers(transport: str, port: int, headers: list[tuple[str, str]], body: bytes) -> Answer:
    import http.client

    from tests.server import raw_http

    path = "/api/2.0/mlflow/runs/set-tag"
    if transport == "http1":
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.putrequest("POST", path)
        for name, value in [*headers, ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return Answer(response.status, response.read())
    return raw_http.h2c(port, "POST", path, {"content-type": "application/json"}, body, extra=headers)


@pytest.mark.parametrize("transport", ["http1", "h2c"])
def test_a_body_over_the_cap_is_refused_with_one_json_line_on_any_route(
    server: ServerProcess, signer: IapSigner, transport: str
) -> None:
    import httpx

    big = b'{"experiment_ids": ["0"], "filter": "' + b" " * (17 * 2**20) + b'"}'
    headers = {**signer.headers(ALICE), "Content-Type": "application/json"}
    with httpx.Client(http1=transport == "http1", http2=transport == "h2c", timeout=60) as client:
        for path, content in [
            ("/api/2.0/mlflow/runs/search", big),
            ("//ajax-api/2.0/mlflow/runs/search", big),
            ("/v1/traces", big),
            # No Content-Length: a body streamed in chunks is counted as it comes.
            ("/api/2.0/mlflow/runs/search", (big[i : i + 2**20] for i in range(0, len(big), 2**20))),
        ]:
            otlp = {"X-Mlflow-Experiment-Id": "0"} if path == "/v1/traces" else {}
            response = client.post(f"{server.url}{path}", content=content, headers={**headers, **otlp})
            assert response.status_code == 413, (path, response.text[:300])
            assert response.json()["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
            assert "\n" not in response.text


@pytest.mark.parametrize("encoding", ["protobuf", "protobuf gzip", "json", "json deflate"])
def test_otlp_spans_record_the_caller_as_the_traces_user(
    server: ServerProcess, signer: IapSigner, victim: Victim, encoding: str
) -> None:
    """MLflow makes a span's `user.id` attribute its trace's mlflow.trace.user; the body keeps its format."""
    import gzip
    import os
    import zlib

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    trace_id, span_id = os.urandom(16), os.urandom(8)
    if encoding.startswith("protobuf"):
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add()
        span.trace_id, span.span_id, span.name = trace_id, span_id, "root"
        span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
        attribute = span.attributes.add()
        attribute.key, attribute.value.string_value = "user.id", ALICE
        body, content_type = request.SerializeToString(), "application/x-protobuf"
    else:
        span_json = {
            "traceId": trace_id.hex(),
            "spanId": span_id.hex(),
            "name": "root",
            "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000001000000000",
            "attributes": [{"key": "user.id", "value": {"stringValue": ALICE}}],
        }
        # The key spelled with a JSON escape: still "user.id" once parsed, as MLflow parses it.
        text = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span_json]}]}]})
        body = text.replace('"user.id"', '"user\\u002eid"').encode()
        content_type = "application/json"
    headers = {**signer.headers(MALLORY), "Content-Type": content_type, "X-Mlflow-Experiment-Id": victim.experiment_id}
    if encoding.endswith("gzip"):
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif encoding.endswith("deflate"):
        body, headers["Content-Encoding"] = zlib.compress(body), "deflate"
    answer = TRANSPORTS["h2c"](server.port, "POST", "/v1/traces", headers, body)
    assert answer.status == 200, answer.body
    metadata = victim.api("GET", f"/api/3.0/mlflow/traces/tr-{trace_id.hex()}")["trace"]["trace_info"]["trace_metadata"]
    assert metadata["mlflow.trace.user"] == MALLORY


def test_an_otlp_body_that_inflates_past_the_limit_is_refused(
    server: ServerProcess, signer: IapSigner, victim: Victim
) -> None:
    import gzip

    bomb = gzip.compress(b"user.id" + b"\0" * (80 * 2**20))
    headers = {
        **signer.headers(MALLORY),
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "gzip",
        "X-Mlflow-Experiment-Id": victim.experiment_id,
    }
    response = requests.post(f"{server.url}/v1/traces", data=bomb, headers=headers, timeout=60)
    assert response.status_code == 413, response.text[:300]
    assert response.json()["error_code"] == "RESOURCE_LIMIT_EXCEEDED"


# --- OTLP: what MLflow reads is what the stamp read ------------------------------------------------


def _otlp_span_json(trace_id: bytes, attributes: list[dict[str, Any]]) -> dict[str, Any]:
    import os

    span = {
        "traceId": trace_id.hex(),
        "spanId": os.urandom(8).hex(),
        "name": "root",
        "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": attributes,
    }
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


def _send_otlp(transport: str, port: int, headers: list[tuple[str, str]], body: bytes) -> Answer:
    """POST /v1/traces with `headers` sent as they are (repeated names included)."""
    import http.client

    from tests.server import raw_http

    if transport == "http1":
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.putrequest("POST", "/v1/traces")
            for name, value in [*headers, ("Content-Length", str(len(body)))]:
                connection.putheader(name, value)
            connection.endheaders(body)
            response = connection.getresponse()
            return Answer(response.status, response.read())
        finally:
            connection.close()
    return raw_http.h2c(port, "POST", "/v1/traces", {}, body, extra=[(k.lower(), v) for k, v in headers])


def _alice_claimed_in_otlp_protobuf(trace_id: bytes) -> bytes:
    import os

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = trace_id, os.urandom(8), "root"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
    attribute = span.attributes.add()
    attribute.key, attribute.value.string_value = "user.id", ALICE
    return request.SerializeToString()


@pytest.mark.parametrize("transport", list(TRANSPORTS))
@pytest.mark.parametrize("twice", ["content-type", "content-encoding"])
def test_otlp_format_headers_sent_twice_are_refused(
    server: ServerProcess, signer: IapSigner, victim: Victim, twice: str, transport: str
) -> None:
    """MLflow reads the first Content-Type/-Encoding; a stamp that read another one left user.id as
    sent (JSON read as protobuf; gzip read as plain bytes): mallory's trace recorded alice."""
    import gzip
    import os

    trace_id = os.urandom(16)
    headers = [(k, v) for k, v in signer.headers(MALLORY).items()] + [("X-Mlflow-Experiment-Id", victim.experiment_id)]
    if twice == "content-type":
        text = json.dumps(_otlp_span_json(trace_id, [{"key": "user.id", "value": {"stringValue": ALICE}}]))
        body = text.replace('"user.id"', '"user\\u002eid"').encode()
        headers += [("Content-Type", "application/json"), ("Content-Type", "application/x-protobuf")]
    else:
        body = gzip.compress(_alice_claimed_in_otlp_protobuf(trace_id))
        headers += [("Content-Type", "application/x-protobuf"), ("Content-Encoding", "gzip"), ("Content-Encoding", "")]
    answer = _send_otlp(transport, server.port, headers, body)
    assert answer.status == 400, answer.body
    assert answer.json() == {"error_code": "INVALID_PARAMETER_VALUE", "message": f"2 {twice} headers; send one"}
    response = requests.get(
        f"{server.url}/api/3.0/mlflow/traces/tr-{trace_id.hex()}", headers=signer.headers(ALICE), timeout=30
    )
    assert response.status_code == 404, response.text[:300]


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
@pytest.mark.parametrize("tag", ["mlflow.trace.user", "mlflow.user", "mlflow.alias.champion.changed_by"])
def test_an_otlp_span_cannot_set_a_server_tag_on_anyones_trace(
    server: ServerProcess, signer: IapSigner, victim: Victim, tag: str, encoding: str
) -> None:
    """MLflow writes a root span's `mlflow.traceTag.KEY` attribute as tag KEY of the span's trace,
    an existing trace too (alice's, here)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    trace_id = bytes.fromhex(victim.trace_id.removeprefix("tr-"))
    attributes = [{"key": f"mlflow.traceTag.{tag}", "value": {"stringValue": MALLORY}}]
    body, content_type = json.dumps(_otlp_span_json(trace_id, attributes)).encode(), "application/json"
    if encoding == "protobuf":
        from google.protobuf.json_format import ParseDict

        as_proto = _otlp_span_json(trace_id, attributes)
        span = as_proto["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
        span["traceId"], span["spanId"] = (
            base64.b64encode(trace_id).decode(),
            base64.b64encode(bytes.fromhex(span["spanId"])).decode(),
        )
        body, content_type = (
            ParseDict(as_proto, ExportTraceServiceRequest()).SerializeToString(),
            "application/x-protobuf",
        )
    before = victim.api("GET", f"/api/3.0/mlflow/traces/{victim.trace_id}")["trace"]["trace_info"].get("tags", {})
    headers = [
        *signer.headers(MALLORY).items(),
        ("X-Mlflow-Experiment-Id", victim.experiment_id),
        ("Content-Type", content_type),
    ]
    answer = _send_otlp("h2c", server.port, headers, body)
    assert answer.status == 403, answer.body
    assert f"would set tag {tag}, which the server records" in answer.json()["message"]
    after = victim.api("GET", f"/api/3.0/mlflow/traces/{victim.trace_id}")["trace"]["trace_info"].get("tags", {})
    assert after == before


# --- memory: what a handler parses, bounded ------------------------------------------------------


def _route_rules() -> Any:
    """docker/route_rules.py, the limits the server applies."""
    return image_module("route_rules")


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_a_body_of_many_small_json_values_is_refused_on_any_route(
    server: ServerProcess, signer: IapSigner, transport: str
) -> None:
    """15 MiB of `[{},{},...]` (under the byte cap) grew the server by 420 MiB when parsed: two at once
    were past the container's 1 GiB. Refused before any parser sees it, on Flask and FastAPI routes."""
    import httpx

    limit = _route_rules().MAX_JSON_VALUES

    dense = b'{"experiment_ids": [' + b"{}," * (5 * 2**20) + b"{}]}"
    headers = {**signer.headers(ALICE), "Content-Type": "application/json"}
    with httpx.Client(http1=transport == "http1", http2=transport == "h2c", timeout=60) as client:
        for path in [
            "/api/2.0/mlflow/runs/search",
            "/ajax-api/2.0/mlflow/runs/set-tag",
            "/v1/traces",
            "/ajax-api/3.0/jobs/search",
        ]:
            otlp = {"X-Mlflow-Experiment-Id": "0"} if path == "/v1/traces" else {}
            response = client.post(f"{server.url}{path}", content=dense, headers={**headers, **otlp})
            assert response.status_code == 413, (path, response.text[:300])
            assert response.json()["error_code"] == "RESOURCE_LIMIT_EXCEEDED"
            assert f"over {limit}" in response.json()["message"]
        at_limit = b'{"experiment_ids": ["0"], "x": [' + b"{}," * (limit // 2 - 8) + b"{}]}"
        response = client.post(f"{server.url}/api/2.0/mlflow/runs/search", content=at_limit, headers=headers)
        assert response.status_code == 200, response.text[:300]


def test_a_graphql_query_is_bounded_by_its_own_cap(server: ServerProcess, signer: IapSigner) -> None:
    """graphql-core keeps every token of a query: 15 MiB of `{ a a a ...}` took 4.6 GiB and 5 minutes."""
    cap = _route_rules().GRAPHQL_MAX_BODY

    headers = {**signer.headers(ALICE), "Content-Type": "application/json"}
    huge = json.dumps({"query": "{" + " a" * (cap // 2) + "}"})
    response = requests.post(f"{server.url}/graphql", data=huge, headers=headers, timeout=60)
    assert response.status_code == 413, response.text[:300]
    assert response.json()["message"] == f"request body over {cap} bytes for this route"
    query = {"query": 'query { mlflowGetExperiment(input: {experimentId: "0"}) { experiment { name } } }'}
    response = requests.post(f"{server.url}/graphql", json=query, headers=signer.headers(ALICE), timeout=60)
    assert response.status_code == 200, response.text[:300]
    assert response.json()["data"]["mlflowGetExperiment"]["experiment"]["name"] == "Default"


@pytest.mark.parametrize("shape", ["attributes", "one array attribute"])
def test_an_otlp_protobuf_body_of_many_small_values_is_refused(
    server: ServerProcess, signer: IapSigner, shape: str
) -> None:
    """15.7 MiB of one-byte span attributes (protobuf, no `{[,` to count) grew the server by 413 MiB."""
    import os

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    limit = _route_rules().MAX_JSON_VALUES
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = os.urandom(16), os.urandom(8), "root"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_001_000_000_000
    if shape == "attributes":
        for n in range(limit + 1):
            span.attributes.add().key = str(n)
    else:
        attribute = span.attributes.add()
        attribute.key = "many"
        for _ in range(limit + 1):
            attribute.value.array_value.values.add().bool_value = True
    headers = {**signer.headers(MALLORY), "Content-Type": "application/x-protobuf", "X-Mlflow-Experiment-Id": "0"}
    response = requests.post(f"{server.url}/v1/traces", data=request.SerializeToString(), headers=headers, timeout=60)
    assert response.status_code == 413, response.text[:300]
    assert f"over {limit}" in response.json()["message"]


# --- review queues: the owner and who completed an item ---------------------------------------------


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_a_review_queues_owner_cannot_be_reassigned_by_new_owner(
    server: ServerProcess, signer: IapSigner, victim: Victim, transport: str
) -> None:
    """new_owner wrote any name into created_by: mallory took alice's queue, and made alice the
    creator of a queue of hers."""
    mallory = Api(server, signer, MALLORY)
    queues = {
        ALICE: victim.api(
            "POST",
            "/api/3.0/mlflow/review-queues/create",
            {"experiment_id": victim.experiment_id, "name": _unique("q"), "queue_type": "CUSTOM"},
        ),
        MALLORY: mallory(
            "POST",
            "/api/3.0/mlflow/review-queues/create",
            {"experiment_id": victim.experiment_id, "name": _unique("q"), "queue_type": "CUSTOM"},
        ),
    }
    headers = {**signer.headers(MALLORY), "Content-Type": "application/json"}
    for owner, new_owner in [(ALICE, MALLORY), (MALLORY, ALICE)]:
        queue_id = queues[owner]["review_queue"]["queue_id"]
        for method, path in [
            ("POST", "/api/3.0/mlflow/review-queues/update"),
            ("post", "//ajax-api/3.0/mlflow/review-queues/update"),
        ]:
            body = json.dumps({"queue_id": queue_id, "new_owner": new_owner}).encode()
            answer = TRANSPORTS[transport](server.port, method, path, headers, body)
            assert answer.status == 403, answer.body
            assert "new_owner cannot be set" in answer.json()["message"]
        stored = victim.api("GET", "/api/3.0/mlflow/review-queues/get", queue_id=queue_id)["review_queue"]
        assert stored["created_by"] == owner


def test_a_review_item_is_completed_by_the_caller_whatever_completed_by_says(
    server: ServerProcess, signer: IapSigner, victim: Victim
) -> None:
    queue = victim.api(
        "POST",
        "/api/3.0/mlflow/review-queues/create",
        {"experiment_id": victim.experiment_id, "name": _unique("q"), "queue_type": "CUSTOM", "users": [MALLORY]},
    )["review_queue"]
    victim.api(
        "POST",
        "/api/3.0/mlflow/review-queues/items/add",
        {"queue_id": queue["queue_id"], "item_type": "TRACE", "item_ids": [victim.trace_id]},
    )
    body = json.dumps(
        {"queue_id": queue["queue_id"], "item_id": victim.trace_id, "status": "COMPLETE", "completed_by": ALICE}
    ).encode()
    headers = {**signer.headers(MALLORY), "Content-Type": "application/json"}
    answer = TRANSPORTS["h2c"](server.port, "post", "//api/3.0/mlflow/review-queues/items/set-status", headers, body)
    assert answer.status == 200, answer.body
    assert answer.json()["item"]["completed_by"] == MALLORY


# --- traces: updating someone's trace keeps its recorded user ---------------------------------------


@pytest.mark.parametrize("transport", list(TRANSPORTS))
def test_re_sending_alices_trace_keeps_alice_as_its_user(
    server: ServerProcess, signer: IapSigner, victim: Victim, transport: str
) -> None:
    """MLflow's start_trace (v3) updates a trace that exists, merging its metadata: mallory sending
    alice's trace id made mallory its user."""
    trace_id = start_trace(victim.api, victim.experiment_id, ALICE)["trace"]["trace_info"]["trace_id"]
    body = trace_body(victim.experiment_id, ALICE)
    body["trace"]["trace_info"]["trace_id"] = trace_id
    headers = {**signer.headers(MALLORY), "Content-Type": "application/json"}
    for method, path in [("POST", "/api/3.0/mlflow/traces"), ("post", "//ajax-api/3.0/mlflow/traces")]:
        answer = TRANSPORTS[transport](server.port, method, path, headers, json.dumps(body).encode())
        assert answer.status == 200, answer.body
    metadata = victim.api("GET", f"/api/3.0/mlflow/traces/{trace_id}")["trace"]["trace_info"]["trace_metadata"]
    assert metadata["mlflow.trace.user"] == ALICE
    assert "mlflow.trace.user.client_claimed" not in metadata
    mallorys = trace_body(victim.experiment_id, ALICE)
    answer = TRANSPORTS[transport](
        server.port, "POST", "/api/3.0/mlflow/traces", headers, json.dumps(mallorys).encode()
    )
    recorded_trace(victim, answer)  # a new trace is still the caller's


def test_ending_alices_v2_trace_keeps_alice_as_its_user(
    server: ServerProcess, signer: IapSigner, victim: Victim
) -> None:
    started = victim.api(
        "POST", "/api/2.0/mlflow/traces", {"experiment_id": victim.experiment_id, "timestamp_ms": 1_700_000_000_000}
    )
    request_id = started["trace_info"]["request_id"]
    end = {
        "request_id": request_id,
        "timestamp_ms": 1_700_000_001_000,
        "status": "OK",
        "request_metadata": [{"key": "mlflow.trace.user", "value": MALLORY}],
    }
    answer = TRANSPORTS["h2c"](
        server.port,
        "patch",
        f"//api/2.0/mlflow/traces/{request_id}",
        {**signer.headers(MALLORY), "Content-Type": "application/json"},
        json.dumps(end).encode(),
    )
    assert answer.status == 200, answer.body
    metadata = victim.api("GET", f"/api/3.0/mlflow/traces/{request_id}")["trace"]["trace_info"]["trace_metadata"]
    assert metadata["mlflow.trace.user"] == ALICE


def test_large_bodies_are_held_in_memory_a_few_at_a_time(server: ServerProcess, signer: IapSigner) -> None:
    """Eight 16 MiB uploads, each one byte short, held 127 MiB (sixty would pass the container's 1 GiB):
    past LARGE_BODY_BYTES a body waits for one of LARGE_BODIES_AT_ONCE places before more is read."""
    import socket
    import time

    from tests.server.proc import PeakRss

    rules = _iap_identity_limits()
    body = b'{"experiment_ids": ["0"], "filter": "' + b" " * (16 * 2**20 - 64) + b'"}'
    head = (
        f"POST /api/2.0/mlflow/runs/search HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nx-goog-iap-jwt-assertion: {signer.assertion(MALLORY)}\r\n\r\n"
    ).encode()
    held = []
    baseline = server.rss_bytes()
    with PeakRss(server) as peak:
        for _ in range(8):
            connection = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            connection.setblocking(False)
            request, sent, progressed = memoryview(head + body[:-1]), 0, time.monotonic()
            while sent < len(request) and time.monotonic() - progressed < 1:  # until the server stops reading
                try:
                    sent += connection.send(request[sent:])
                    progressed = time.monotonic()
                except BlockingIOError:
                    time.sleep(0.05)
            held.append(connection)
        time.sleep(2)
    for connection in held:
        connection.close()
    allowed = rules.LARGE_BODIES_AT_ONCE * rules.MAX_BODY_BYTES + 8 * (rules.LARGE_BODY_BYTES + 2**20) + 16 * 2**20
    assert peak.peak - baseline < allowed, f"{(peak.peak - baseline) / 2**20:.0f} MiB held"
    large = b'{"experiment_ids": ["0"], "padding": "' + b" " * (2 * rules.LARGE_BODY_BYTES) + b'"}'
    headers = {**signer.headers(ALICE), "Content-Type": "application/json"}
    response = requests.post(f"{server.url}/api/2.0/mlflow/runs/search", data=large, headers=headers, timeout=120)
    assert (response.status_code, response.text[:300]) == (200, "{}")  # the places were given back


def _iap_identity_limits() -> Any:
    return image_module("iap_identity")
