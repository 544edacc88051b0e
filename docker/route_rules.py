"""The one enforcement point for identity rules: a table of the routes MLflow will run, keyed by the
route's endpoint (the view function Werkzeug or Starlette has chosen, never the request's path
text), each with its treatment. iap_identity.py looks a request up here once the framework has
routed it; a permissions layer can look up the same endpoint (`flask_treatment`, `fastapi_treatment`,
the `Call` a treatment gets) and add its own check.

A treatment reads the request as MLflow's handler will (the endpoint's protobuf message, parsed
with MLflow's own `parse_dict`, so `userId` and `user_id` are one field) and either lets it run,
rewrites it so that every author field is the verified caller (the client's claim kept beside it
where a place exists), or refuses it. An endpoint this table does not know is refused: a route a
new MLflow adds runs only once someone has reviewed it and listed it here
(tests/server/test_route_inventory.py fails until then).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

USER_TAG = "mlflow.user"
CLAIMED_TAG = "mlflow.user.client_claimed"
STAGE_TAG = "mlflow.stage.changed_by"
ALIAS_TAG = "mlflow.alias.{alias}.changed_by"
TRACE_USER = "mlflow.trace.user"
TRACE_CLAIMED = "mlflow.trace.user.client_claimed"
OTLP_USER_ATTRIBUTE = "user.id"
"""The span attribute MLflow's store copies into a trace's TRACE_USER (sqlalchemy_store.log_spans)."""
OTLP_TRACE_TAG_PREFIX = "mlflow.traceTag."
"""A root span's attribute `mlflow.traceTag.KEY` becomes the trace's tag KEY (sqlalchemy_store.log_spans)."""
MAX_TAG_KEY = 250
"""MLflow's MAX_MODEL_REGISTRY_TAG_KEY_LENGTH: an alias whose changed_by tag would not fit is refused."""
MAX_JSON_VALUES = 2**18
"""Most JSON values (counted as the body's `{`, `[` and `,` bytes, an upper bound) a body read into
memory may hold: parsed, each costs a Python object of ~60-100 bytes, so a 16 MiB body of `[{},{},...]`
grew the server by 420 MiB. Legitimate requests hold far fewer (MLflow's log-batch: 1000 metrics)."""
GRAPHQL_MAX_BODY = 64 * 1024
"""graphql-core keeps every token of a query (~300 bytes of memory per byte: 4.6 GiB for 15 MiB);
MLflow's UI sends queries of a few KiB."""
_SERVER_TAGS = frozenset({USER_TAG, CLAIMED_TAG, STAGE_TAG, TRACE_USER, TRACE_CLAIMED})
_ALIAS_TAG = re.compile(r"mlflow\.alias\..*\.changed_by", re.S)


def is_server_tag(key: object) -> bool:
    """Tags the server records from the verified identity; no client sets or deletes them, anywhere."""
    return isinstance(key, str) and (key in _SERVER_TAGS or bool(_ALIAS_TAG.fullmatch(key)))


class Refusal(Exception):
    """The request must not run; `status` and MLflow's `error_code` say how it is answered."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def forbidden(message: str) -> Refusal:
    return Refusal(403, "PERMISSION_DENIED", message)


def _server_tag_refusal(key: str) -> Refusal:
    return forbidden(
        f"tag {key} is recorded by the server from IAP's verified identity; clients cannot set or delete it"
    )


@dataclass(frozen=True)
class Call:
    """One request, as the route it will run: who (verified), which endpoint, its path variables."""

    identity: str
    endpoint: str
    view_args: Mapping[str, Any] = field(default_factory=dict)


Rewrite = Callable[[Any, Call], None]
"""Checks and edits the parsed request message in place; raises Refusal."""
After = Callable[[Any, Call, Mapping[str, Any]], None]
"""Runs once MLflow has answered 200: (request message, call, state the rewrite left in `notes`)."""


@dataclass(frozen=True)
class Treatment:
    """What happens to a request for one endpoint.

    reviewed: someone has read the handler and listed what it writes (the inventory test's list);
    rewrite: applied to the request's protobuf message before MLflow parses it;
    rewrite_json: the same, for the few handlers that read plain JSON;
    before/after: the registry's record-after-the-change hooks (iap_identity runs them);
    streams_body: the body is streamed to storage, not read into memory (no cap);
    max_body / binary_body: the memory a handler's parsing may take (see MAX_JSON_VALUES).
    """

    reason: str
    rewrite: Rewrite | None = None
    rewrite_json: Callable[[dict[str, Any], Call], None] | None = None
    before: Callable[[Any, Call], dict[str, Any]] | None = None
    after: After | None = None
    streams_body: bool = False
    refuse: bool = False
    max_body: int | None = None
    """A body larger than this is refused (413) before the handler parses it."""
    binary_body: bool = False
    """The body is bytes, not JSON: MAX_JSON_VALUES does not apply."""

    @property
    def writes_identity(self) -> bool:
        return any((self.rewrite, self.rewrite_json, self.after, self.refuse))


PASS = Treatment("reviewed: records no author and no server tag")
STRICT = Treatment("not reviewed: refused until listed in route_rules.py", refuse=True)


# --- rewrites: each edits the parsed protobuf request ---------------------------------------------


def _claim_from_tags(tags: Any) -> str | None:
    return next((t.value for t in tags if t.key == USER_TAG and t.value), None)


def _restamp_tags(tags: Any, identity: str, claimed: str | None) -> None:
    """Drops every server tag from a repeated {key, value} field, then records identity (and the claim)."""
    kept = [(t.key, t.value) for t in tags if not is_server_tag(t.key)]
    del tags[:]
    for key, value in [*kept, (USER_TAG, identity), *([(CLAIMED_TAG, claimed)] if claimed else [])]:
        tag = tags.add()
        tag.key, tag.value = key, value


def stamp_created_run(msg: Any, call: Call) -> None:
    claimed = _claim_from_tags(msg.tags) or msg.user_id or None
    _restamp_tags(msg.tags, call.identity, claimed)
    msg.user_id = call.identity


def stamp_created_tags(msg: Any, call: Call) -> None:
    """Logged models, model versions: no user field; the user is tag mlflow.user."""
    _restamp_tags(msg.tags, call.identity, _claim_from_tags(msg.tags))


def refuse_server_tags(msg: Any, call: Call) -> None:
    for tag in getattr(msg, "tags", []):
        if is_server_tag(tag.key):
            raise _server_tag_refusal(tag.key)


def refuse_server_key(field_name: str) -> Rewrite:
    def check(msg: Any, call: Call) -> None:
        for key in (getattr(msg, field_name, None), call.view_args.get(field_name)):
            if is_server_tag(key):
                raise _server_tag_refusal(str(key))

    return check


def _json_tags(text: str) -> dict[str, Any]:
    try:
        tags = json.loads(text) if text else {}
    except ValueError as e:
        raise Refusal(400, "INVALID_PARAMETER_VALUE", "tags must be a JSON object") from e
    if not isinstance(tags, dict):
        raise Refusal(400, "INVALID_PARAMETER_VALUE", "tags must be a JSON object")
    return tags


def stamp_created_dataset(msg: Any, call: Call) -> None:
    """MLflow takes an evaluation dataset's created_by from its tag mlflow.user (a JSON string here)."""
    tags = _json_tags(msg.tags)
    claimed = tags.get(USER_TAG) or msg.created_by or None
    tags = {k: v for k, v in tags.items() if not is_server_tag(k)}
    tags[USER_TAG] = call.identity
    if isinstance(claimed, str) and claimed:
        tags[CLAIMED_TAG] = claimed
    msg.tags = json.dumps(tags)
    msg.created_by = call.identity


def stamp_dataset_records(msg: Any, call: Call) -> None:
    """Each record's tag mlflow.user becomes its created_by and the dataset's last_updated_by."""
    try:
        records = json.loads(msg.records) if msg.records else []
    except ValueError as e:
        raise Refusal(400, "INVALID_PARAMETER_VALUE", "records must be a JSON list") from e
    if not isinstance(records, list):
        raise Refusal(400, "INVALID_PARAMETER_VALUE", "records must be a JSON list")
    for record in records:
        if not isinstance(record, dict):
            continue
        tags: dict[str, Any] = record["tags"] if isinstance(record.get("tags"), dict) else {}
        claimed = tags.get(USER_TAG)
        tags = {k: v for k, v in tags.items() if not is_server_tag(k)}
        tags[USER_TAG] = call.identity
        if isinstance(claimed, str) and claimed and claimed != call.identity:
            tags[CLAIMED_TAG] = claimed
        record["tags"] = tags
    msg.records = json.dumps(records)


def refuse_server_json_tags(msg: Any, call: Call) -> None:
    for key in _json_tags(msg.tags):
        if is_server_tag(key):
            raise _server_tag_refusal(key)


def _stamp_assessment(assessment: Any, identity: str) -> None:
    """A person's assessment is the caller's; a judge's or code's source names the judge, not a person."""
    from mlflow.protos.assessments_pb2 import AssessmentSource

    if not assessment.HasField("source"):
        return
    if assessment.source.source_type in (AssessmentSource.HUMAN, AssessmentSource.SOURCE_TYPE_UNSPECIFIED):
        claimed = assessment.source.source_id
        assessment.source.source_id = identity
        if claimed and claimed != identity:
            assessment.metadata[CLAIMED_TAG] = claimed


def stamp_assessment(msg: Any, call: Call) -> None:
    _stamp_assessment(msg.assessment, call.identity)


def stamp_trace_v3(msg: Any, call: Call) -> None:
    """A new trace's user is the caller. MLflow's start_trace also updates a trace that exists (its
    spans may have come first), merging the metadata: there the recorded user stays as it is
    (mallory re-sending alice's trace made it mallory's)."""
    info = msg.trace.trace_info
    metadata = info.trace_metadata
    claimed = metadata.get(TRACE_USER)
    metadata.pop(TRACE_CLAIMED, None)
    metadata.pop(TRACE_USER, None)
    if _recorded_trace_user(info.trace_id) is None:
        metadata[TRACE_USER] = call.identity
        if claimed and claimed != call.identity:
            metadata[TRACE_CLAIMED] = claimed
    for assessment in info.assessments:
        _stamp_assessment(assessment, call.identity)
    refuse_server_tags_in_map(info.tags)


def _recorded_trace_user(trace_id: str) -> str | None:
    """The user recorded on trace `trace_id` (None: no such trace, or none recorded yet)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_tracking_store

    if not trace_id:
        return None
    try:
        info = _get_tracking_store().get_trace_info(trace_id)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return info.trace_metadata.get(TRACE_USER)


def keep_trace_user_v2(msg: Any, call: Call) -> None:
    """Ending a trace leaves its recorded user as it is (mallory ending alice's trace made it hers)."""
    kept = [(m.key, m.value) for m in msg.request_metadata if m.key not in (TRACE_USER, TRACE_CLAIMED)]
    del msg.request_metadata[:]
    for key, value in kept:
        item = msg.request_metadata.add()
        item.key, item.value = key, value
    refuse_server_tags(msg, call)


def refuse_server_tags_in_map(tags: Any) -> None:
    for key in tags:
        if is_server_tag(key):
            raise _server_tag_refusal(key)


def stamp_trace_v2(msg: Any, call: Call) -> None:
    claimed = next((m.value for m in msg.request_metadata if m.key == TRACE_USER and m.value), None)
    _restamp_metadata(msg.request_metadata, call.identity, claimed)
    refuse_server_tags(msg, call)


def _restamp_metadata(metadata: Any, identity: str, claimed: str | None) -> None:
    kept = [(m.key, m.value) for m in metadata if m.key not in (TRACE_USER, TRACE_CLAIMED)]
    del metadata[:]
    for key, value in [*kept, (TRACE_USER, identity), *([(TRACE_CLAIMED, claimed)] if claimed else [])]:
        item = metadata.add()
        item.key, item.value = key, value


def stamp_field(name: str) -> Rewrite:
    """created_by / updated_by: the caller, whatever the client sent (no place for its claim)."""

    def stamp(msg: Any, call: Call) -> None:
        setattr(msg, name, call.identity)

    return stamp


def check_alias(msg: Any, call: Call) -> None:
    key = ALIAS_TAG.format(alias=msg.alias)
    if len(key) > MAX_TAG_KEY:
        raise Refusal(
            400,
            "INVALID_PARAMETER_VALUE",
            f"alias is {len(msg.alias)} characters; at most {MAX_TAG_KEY - len(ALIAS_TAG.format(alias=''))} "
            "(the server records who changed it in tag mlflow.alias.ALIAS.changed_by)",
        )


def _registry() -> Any:
    from mlflow.server.handlers import _get_model_registry_store

    return _get_model_registry_store()


def record_alias_change(msg: Any, call: Call, notes: Mapping[str, Any]) -> None:
    from mlflow.entities.model_registry import RegisteredModelTag

    _registry().set_registered_model_tag(msg.name, RegisteredModelTag(ALIAS_TAG.format(alias=msg.alias), call.identity))


def versions_to_archive(msg: Any, call: Call) -> dict[str, Any]:
    """Before a transition with archive_existing_versions: the versions now in the target stage."""
    from mlflow.entities.model_registry.model_version_stages import get_canonical_stage

    if not msg.archive_existing_versions:
        return {"archived": []}
    try:
        stage = get_canonical_stage(msg.stage)
    except Exception:
        return {"archived": []}  # MLflow refuses the request itself
    if stage not in ("Staging", "Production"):
        return {"archived": []}
    quote = "'" if "'" not in msg.name else '"'
    if quote in msg.name:
        raise Refusal(
            400, "INVALID_PARAMETER_VALUE", "a model name with both quote characters cannot archive versions here"
        )
    found = _registry().search_model_versions(f"name = {quote}{msg.name}{quote}", max_results=10_000)
    return {"archived": [v.version for v in found if v.current_stage == stage and str(v.version) != str(msg.version)]}


def record_transition(msg: Any, call: Call, notes: Mapping[str, Any]) -> None:
    from mlflow.entities.model_registry import ModelVersionTag

    store = _registry()
    for version in [msg.version, *notes.get("archived", [])]:
        store.set_model_version_tag(msg.name, str(version), ModelVersionTag(STAGE_TAG, call.identity))


def refuse_new_owner(msg: Any, call: Call) -> None:
    """new_owner writes any name into the queue's created_by (mallory took alice's queue, and named
    alice the creator of hers); who may reassign it is for a permissions layer to decide."""
    if msg.HasField("new_owner"):
        raise forbidden(
            "a review queue's owner (created_by) is who created it; new_owner cannot be set until permissions decide who may reassign it"
        )


def stamp_promptlab_run(request: dict[str, Any], call: Call) -> None:
    """create-promptlab-run reads plain JSON: its user_id is the caller. (MLflow 3.17 hands its
    `tags` to the store as dicts, which fails: no client can set a tag here, so there is no place
    for the claim.)"""
    tags = request.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, dict) and is_server_tag(tag.get("key")):
            raise _server_tag_refusal(tag["key"])
    request["user_id"] = call.identity


# --- the table -----------------------------------------------------------------------------------


def _t(reason: str, rewrite: Rewrite | None = None, **kwargs: Any) -> Treatment:
    return Treatment(reason, rewrite=rewrite, **kwargs)


FLASK: dict[str, Treatment] = {
    # Authors recorded from the verified identity.
    "_create_run": _t("user_id and tag mlflow.user", stamp_created_run),
    "_create_logged_model": _t("tag mlflow.user", stamp_created_tags),
    "_create_model_version": _t("tag mlflow.user", stamp_created_tags),
    "_create_dataset_handler": _t("created_by, from tag mlflow.user", stamp_created_dataset),
    "_start_trace_v3": _t("metadata mlflow.trace.user, human assessments' source_id", stamp_trace_v3),
    "_deprecated_start_trace_v2": _t("metadata mlflow.trace.user", stamp_trace_v2),
    "_deprecated_end_trace_v2": _t("metadata mlflow.trace.user: kept as recorded at the start", keep_trace_user_v2),
    "_upsert_dataset_records_handler": _t("records' created_by, dataset's last_updated_by", stamp_dataset_records),
    "_create_assessment": _t("human source_id", stamp_assessment),
    "_update_assessment": _t("human source_id", stamp_assessment),
    "_create_issue": _t("created_by", stamp_field("created_by")),
    "_create_gateway_secret": _t("created_by", stamp_field("created_by")),
    "_update_gateway_secret": _t("updated_by", stamp_field("updated_by")),
    "_create_gateway_endpoint": _t("created_by", stamp_field("created_by")),
    "_update_gateway_endpoint": _t("updated_by", stamp_field("updated_by")),
    "_create_gateway_model_definition": _t("created_by", stamp_field("created_by")),
    "_update_gateway_model_definition": _t("updated_by", stamp_field("updated_by")),
    "_attach_model_to_gateway_endpoint": _t("created_by", stamp_field("created_by")),
    "_create_gateway_endpoint_binding": _t("created_by", stamp_field("created_by")),
    "_create_budget_policy": _t("created_by", stamp_field("created_by")),
    "_update_budget_policy": _t("updated_by", stamp_field("updated_by")),
    "serve_create_promptlab_run": Treatment(
        "user_id and tag mlflow.user (plain JSON)", rewrite_json=stamp_promptlab_run
    ),
    "_set_registered_model_alias": _t("alias changed_by, recorded after", check_alias, after=record_alias_change),
    "_delete_registered_model_alias": _t("alias changed_by, recorded after", check_alias, after=record_alias_change),
    "_transition_stage": _t(
        "stage changed_by on the version and every version it archives, recorded after",
        before=versions_to_archive,
        after=record_transition,
    ),
    # The server's tags: set or deleted by no client.
    "_set_tag": _t("server tags", refuse_server_key("key")),
    "_delete_tag": _t("server tags", refuse_server_key("key")),
    "_log_batch": _t("server tags", refuse_server_tags),
    "_set_model_version_tag": _t("server tags", refuse_server_key("key")),
    "_delete_model_version_tag": _t("server tags", refuse_server_key("key")),
    "_create_registered_model": _t("server tags", refuse_server_tags),
    "_set_registered_model_tag": _t("server tags", refuse_server_key("key")),
    "_delete_registered_model_tag": _t("server tags", refuse_server_key("key")),
    "_set_logged_model_tags": _t("server tags", refuse_server_tags),
    "_delete_logged_model_tag": _t("server tags", refuse_server_key("tag_key")),
    "_set_dataset_tags_handler": _t("server tags", refuse_server_json_tags),
    "_delete_dataset_tag_handler": _t("server tags", refuse_server_key("key")),
    "_set_trace_tag": _t("server tags", refuse_server_key("key")),
    "_set_trace_tag_v3": _t("server tags", refuse_server_key("key")),
    "_delete_trace_tag": _t("server tags", refuse_server_key("key")),
    "_delete_trace_tag_v3": _t("server tags", refuse_server_key("key")),
    "_create_experiment": _t("server tags", refuse_server_tags),
    "_set_experiment_tag": _t("server tags", refuse_server_key("key")),
    "_delete_experiment_tag": _t("server tags", refuse_server_key("key")),
    # Memory: bodies whose parsing costs more than their size, or that are not JSON.
    "_graphql": Treatment("reviewed: searches only; its query parser's memory bounded", max_body=GRAPHQL_MAX_BODY),
    "_upload_artifact": Treatment("reviewed: artifact bytes", binary_body=True),
    "serve_upload_artifact": Treatment("reviewed: artifact bytes", binary_body=True),
    "_update_review_queue": _t("created_by (the owner): new_owner refused", refuse_new_owner),
    # The review queue's owner: MLflow reads flask.g.mlflow_authenticated_user, which iap_identity sets.
    "_create_review_queue": _t("created_by from the authenticated user MLflow's auth hook would set"),
}
"""Flask endpoints (MLflow's url_map) with a treatment of their own; REVIEWED_FLASK run as they are."""

REVIEWED_FLASK_READS_AND_PLAIN_WRITES = frozenset(
    """
    _search_experiments _get_experiment _get_experiment_by_name _delete_experiment _restore_experiment
    _update_experiment _update_run _delete_run _restore_run _log_metric _log_param _get_run _search_runs
    _list_artifacts _create_presigned_upload_url _create_presigned_download_url _get_metric_history
    get_metric_history_bulk_interval_handler _log_model _log_inputs _log_outputs _not_implemented
    _deprecated_get_trace_info_v2 _get_trace_info_v3 _get_trace _batch_get_traces _batch_get_trace_infos
    _deprecated_search_traces_v2 _search_traces_v3 _link_traces_to_run _link_prompts_to_trace _delete_traces
    _calculate_trace_filter_correlation _query_trace_metrics _list_workspaces_handler _create_workspace_handler
    _get_workspace_handler _update_workspace_handler _delete_workspace_handler _finalize_logged_model
    _get_logged_model _delete_logged_model _search_logged_models _list_logged_model_artifacts
    _log_logged_model_params _get_assessment _delete_assessment _update_issue _get_issue _search_issues
    _create_label_schema _get_label_schema _get_label_schema_by_name _list_label_schemas _update_label_schema
    _delete_label_schema _get_dataset_handler _delete_dataset_handler _search_evaluation_datasets_handler
    _get_dataset_experiment_ids_handler _register_scorer _list_scorers
    _list_scorer_versions _get_scorer _delete_scorer _get_dataset_records_handler _delete_dataset_records_handler
    _add_dataset_to_experiments_handler _remove_dataset_from_experiments_handler _get_gateway_secret_info
    _delete_gateway_secret _list_gateway_secrets _get_gateway_endpoint _delete_gateway_endpoint
    _list_gateway_endpoints _get_gateway_model_definition _list_gateway_model_definitions
    _delete_gateway_model_definition _detach_model_from_gateway_endpoint _delete_gateway_endpoint_binding
    _list_gateway_endpoint_bindings _set_gateway_endpoint_tag _delete_gateway_endpoint_tag
    _get_budget_policy _delete_budget_policy _list_budget_policies _list_budget_windows
    _create_gateway_guardrail _get_gateway_guardrail _delete_gateway_guardrail _list_gateway_guardrails
    _add_guardrail_to_endpoint _remove_guardrail_from_endpoint _list_endpoint_guardrail_configs
    _update_endpoint_guardrail_config _create_prompt_optimization_job _get_prompt_optimization_job
    _search_prompt_optimization_jobs _cancel_prompt_optimization_job _delete_prompt_optimization_job
    _get_or_create_user_queue _get_review_queue _get_review_queue_by_name _list_review_queues
    _delete_review_queue _add_items_to_review_queue _remove_items_from_review_queue
    _list_review_queue_items _set_review_queue_item_status _get_online_scoring_configs
    _upsert_online_scoring_config _rename_registered_model _update_registered_model _delete_registered_model
    _get_registered_model _search_registered_models _get_latest_versions _update_model_version
    _delete_model_version _get_model_version _search_model_versions _get_model_version_download_uri
    _get_model_version_by_alias _download_artifact _list_artifacts_mlflow_artifacts
    _delete_artifact_mlflow_artifacts _create_multipart_upload_artifact _complete_multipart_upload_artifact
    _abort_multipart_upload_artifact _get_presigned_download_url _create_webhook _list_webhooks _get_webhook
    _update_webhook _delete_webhook _test_webhook _get_server_info _list_supported_providers
    _list_supported_models _get_provider_config _get_secrets_config _invoke_scorer_handler _generate_demo
    _delete_demo _invoke_issue_detection_handler _invoke_genai_evaluate_handler _cancel_job _get_job health
    version serve_artifacts serve_model_version_artifact serve_get_metric_history_bulk
    serve_get_metric_history_bulk_interval serve_search_datasets serve_gateway_proxy
    serve_get_trace_artifact serve_get_logged_model_artifact serve_get_ui_telemetry serve_post_ui_telemetry
    serve_static_file serve static
    """.split()
)
"""Flask endpoints read (MLflow 3.17.2's handlers.py) and found to take no author and touch no server
tag: they run as MLflow has them. (_create_gateway_guardrail, _add_guardrail_to_endpoint and
_create_prompt_optimization_job record MLflow's own `_get_user()`, the server process's OS user, never
the client's.)"""

NO_PASSWORDS = Treatment("[access]: nobody has a password (IAP is the login, iap_access.py); refused", refuse=True)
AUTH_APP_FLASK: dict[str, Treatment] = {
    # Password sign-up and password changes: MLflow's login forms, which IAP replaces.
    "signup": NO_PASSWORDS,
    "<lambda>": NO_PASSWORDS,  # users/create-ui, the sign-up form's POST (a lambda in MLflow's create_app)
    "update_user_password": NO_PASSWORDS,
}
"""MLflow's auth app's Flask endpoints (served only with [access]: iap_access.mlflow_app) refused here."""

REVIEWED_AUTH_APP_FLASK = frozenset(
    """
    get_current_user list_current_user_permissions get_user list_users list_user_permissions list_user_roles
    create_user update_user_admin delete_user
    create_role get_role list_roles update_role delete_role add_role_permission remove_role_permission
    list_role_permissions update_role_permission assign_role unassign_role list_role_users
    get_user_permission grant_user_permission revoke_user_permission
    """.split()
)
"""MLflow 3.17.2's auth app's user, role and permission endpoints: none records an author (no
created_by or granted_by anywhere in its store), and each is decided by MLflow's own validator
before its view runs (BEFORE_REQUEST_VALIDATORS): users/current and current/permissions answer the
caller only; create_user needs an admin or a workspace admin (the user it makes has a password that
no request is ever authenticated by); update_user_admin and delete_user are admin-only; roles and
grants need MANAGE on the workspace or the resource. Usernames in them name whom a grant is for,
never who made it."""

AUTHOR_LIKE_FIELDS = frozenset(
    {
        "user_id",
        "created_by",
        "updated_by",
        "last_updated_by",
        "source_id",
        "user",
        "users",
        "owner",
        "changed_by",
        "author",
        "username",
        "tags",
        "trace_metadata",
        "request_metadata",
        "metadata",
        "new_owner",
        "completed_by",
    }
)
"""Request fields that could name a person or carry the server's tags (the inventory test looks for them)."""

AUTHOR_LIKE_BUT_NOT_AN_AUTHOR: dict[str, str] = {
    "_create_prompt_optimization_job": "tags are the job's own; its user_id is MLflow's _get_user()",
    "_get_or_create_user_queue": "user names whose queue it is (an assignment, not who made it); created_by is not read",
    "_list_review_queues": "user is a search filter",
    "_set_review_queue_item_status": "completed_by is not read from the request: MLflow stamps flask.g.mlflow_authenticated_user, "
    "which iap_identity sets to the verified caller",
    "_log_inputs": "datasets' tags are the dataset input's context, not the run's tags",
    "_create_review_queue": "created_by is not read from the request: MLflow stamps flask.g.mlflow_authenticated_user, "
    "which iap_identity sets to the verified caller",
}
"""Endpoints whose request has an AUTHOR_LIKE_FIELDS field that, read in MLflow 3.17.2, records no author."""

FASTAPI: dict[str, Treatment] = {
    "mlflow.server.artifact_router:upload_artifact": Treatment("streams the artifact to storage", streams_body=True),
    "mlflow.server.otel_api:export_traces": Treatment("span attribute user.id becomes mlflow.trace.user: stamped"),
}
"""Starlette/FastAPI endpoints (`module:qualname`) with a treatment of their own."""

REVIEWED_FASTAPI = frozenset(
    f"mlflow.server.{name}"
    for name in """
    job_api:get_job job_api:submit_job job_api:cancel_job job_api:search_jobs
    gateway_api:invocations gateway_api:chat_completions gateway_api:list_models
    gateway_api:openai_passthrough_chat gateway_api:openai_passthrough_embeddings
    gateway_api:typesafe_passthrough_system_one gateway_api:openai_passthrough_responses
    gateway_api:openai_passthrough_responses_compact gateway_api:anthropic_passthrough_messages
    gateway_api:gemini_passthrough_generate_content gateway_api:gemini_passthrough_stream_generate_content
    gateway_api:raw_proxy
    assistant.api:send_message assistant.api:stream_response assistant.api:patch_session
    assistant.api:resolve_permission assistant.api:resolve_client_tool_result assistant.api:provider_health_check
    assistant.api:get_providers assistant.api:get_config assistant.api:update_config
    assistant.api:install_skills_endpoint assistant.api:list_provider_models
    artifact_router:download_artifact
    mcp_server_api:create_mcp_server mcp_server_api:search_mcp_servers mcp_server_api:search_all_access_endpoints
    mcp_server_api:set_mcp_server_version_tag mcp_server_api:delete_mcp_server_version_tag
    mcp_server_api:get_mcp_server_version mcp_server_api:update_mcp_server_version
    mcp_server_api:delete_mcp_server_version mcp_server_api:create_mcp_server_version
    mcp_server_api:search_mcp_server_versions mcp_server_api:create_mcp_access_endpoint
    mcp_server_api:get_mcp_access_endpoint mcp_server_api:update_mcp_access_endpoint
    mcp_server_api:delete_mcp_access_endpoint mcp_server_api:search_server_access_endpoints
    mcp_server_api:set_mcp_server_tag mcp_server_api:delete_mcp_server_tag mcp_server_api:set_mcp_server_alias
    mcp_server_api:get_version_by_alias mcp_server_api:delete_mcp_server_alias mcp_server_api:get_mcp_server
    mcp_server_api:update_mcp_server mcp_server_api:delete_mcp_server
    server_info_api:health server_info_api:get_server_info
    """.split()
)
"""FastAPI endpoints that run as MLflow has them. MCP servers record `request.state.username`, which
iap_identity sets to the verified caller (MLflow's auth app would set it the same way)."""


def flask_treatment(endpoint: str) -> Treatment:
    if endpoint in FLASK:
        return FLASK[endpoint]
    if endpoint in AUTH_APP_FLASK:
        return AUTH_APP_FLASK[endpoint]
    reviewed = endpoint in REVIEWED_FLASK_READS_AND_PLAIN_WRITES or endpoint in REVIEWED_AUTH_APP_FLASK
    return PASS if reviewed else STRICT


def endpoint_name(endpoint: Any) -> str:
    """`module:qualname` of a Starlette endpoint (a function, or an ASGI app object's class)."""
    target = endpoint if hasattr(endpoint, "__qualname__") else type(endpoint)
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"


def fastapi_treatment(name: str) -> Treatment:
    if name in FASTAPI:
        return FASTAPI[name]
    return PASS if name in REVIEWED_FASTAPI else STRICT


def request_message(endpoint: str) -> Any | None:
    """A fresh protobuf request message for a Flask endpoint (what its handler parses), from
    MLflow's own HANDLERS table; None for the few endpoints that read plain JSON."""
    return _messages().get(endpoint, lambda: None)()


_MESSAGES: dict[str, Callable[[], Any]] | None = None


def _messages() -> dict[str, Callable[[], Any]]:
    global _MESSAGES
    if _MESSAGES is None:
        from mlflow.server.handlers import HANDLERS

        _MESSAGES = {getattr(handler, "__name__", ""): message for message, handler in HANDLERS.items()}
    return _MESSAGES


# --- what MLflow serves ---------------------------------------------------------------------------


def flask_routes(flask_app: Any) -> list[tuple[str, frozenset[str], str]]:
    """(rule, methods, endpoint) for every rule of MLflow's Flask url_map."""
    return [(rule.rule, frozenset(rule.methods or ()), rule.endpoint) for rule in flask_app.url_map.iter_rules()]


def fastapi_routes(fastapi_app: Any) -> list[tuple[str, frozenset[str], str]]:
    """(path, methods, `module:qualname`) for every FastAPI/Starlette route MLflow's app serves
    before its catch-all Flask mount (FastAPI 0.165 keeps included routers as branches)."""
    found: list[tuple[str, frozenset[str], str]] = []
    for route in fastapi_app.router.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") else [route]
        for context in contexts:
            original = getattr(context, "original_route", context)
            endpoint = getattr(original, "endpoint", None) or getattr(original, "app", None)
            path = getattr(context, "path_format", None) or getattr(
                getattr(context, "starlette_route", None), "path", None
            )
            path = path if path is not None else getattr(original, "path", "")
            methods = getattr(context, "methods", None) or getattr(original, "methods", None) or ()
            found.append((str(path), frozenset(methods), endpoint_name(endpoint)))
    return found


FLASK_MOUNT = "mlflow.server.fastapi_app:_EfficientWSGIMiddleware"
"""The catch-all mount through which every Flask route is reached; Flask's routes are decided in Flask."""


def unreviewed(fastapi_app: Any, flask_app: Any) -> list[str]:
    """Routes nobody has listed here: the server refuses to start with any (and the inventory test fails)."""
    missing = [f"flask {e} ({r})" for r, _, e in flask_routes(flask_app) if flask_treatment(e) is STRICT]
    missing += [
        f"fastapi {n} ({p})"
        for p, _, n in fastapi_routes(fastapi_app)
        if n != FLASK_MOUNT and fastapi_treatment(n) is STRICT
    ]
    return sorted(set(missing))
