"""[access]: teams on one server, validated at synth with one line per problem (docs/security.md: Teams and
permissions). config/teams.toml is the shipped example; the others are variations of the example."""

from __future__ import annotations

import pytest

from stacks.config import EXAMPLE_CONFIG, ConfigError, parse_config

EXAMPLE = EXAMPLE_CONFIG.read_text()
TEAM_A = '[[access.teams]]\nname = "team-a"\nmembers = ["user:ana@example.com"]\n'


def config(access: str, iap_members: str = '["group:ml-platform@example.com"]', extra: str = "", pool_size: int = 1):
    """The example with [access] `access`; pool_size 1 fits [access]'s four stores per worker into db-f1-micro."""
    text = EXAMPLE.replace('iap_members = ["group:ml-platform@example.com"]', f"iap_members = {iap_members}\n{extra}")
    text = text.replace("pool_size = 2", f"pool_size = {pool_size}")
    return parse_config(f"{text}\n[access]\n{access}", "env.toml")


def rejection(access: str, **kwargs) -> str:
    with pytest.raises(ConfigError) as raised:
        config(access, **kwargs)
    message = str(raised.value)
    lines = message.splitlines()  # one problem per line: "file: field: problem — fix"
    assert lines == raised.value.problems and all(line.startswith("env.toml: ") for line in lines), message
    assert len(set(lines)) == len(lines), "a problem is reported once"
    return message


def test_without_access_everyone_admitted_may_do_everything_as_before(example_config):
    assert example_config.access is None
    assert example_config.stores_per_worker == 2


def test_the_teams_example_names_each_teams_workspace(teams_config):
    assert [(t.name, t.workspace_name) for t in teams_config.access.teams] == [
        ("vision", "vision"),
        ("ranking", "default"),
    ]
    assert teams_config.access.others == "read"
    assert teams_config.access.groups == [
        "group:ml-platform@example.com",
        "group:ranking@example.com",
        "group:vision@example.com",
    ]


def test_a_team_with_members_admitted_by_a_group_of_iap_members_is_accepted():
    access = config('others = "read"\n' + TEAM_A).access
    assert access.server_model() == {
        "admins": [], "others": "read", "teams": [{"name": "team-a", "workspace": "team-a", "members": ["user:ana@example.com"]}],
    }  # fmt: skip


@pytest.mark.parametrize(
    "access, problem",
    [
        ("", "access.teams: no team — add [[access.teams]] with name and members, or remove [access]"),
        ('others = "write"\n' + TEAM_A, 'access.others: \'write\' is not a level — use "none" (the default) or "read"'),
        (TEAM_A.replace('"team-a"', '"Team_A"'), "access.teams.name: 'Team_A' is not an MLflow workspace name"),
        (
            TEAM_A.replace("members", 'workspace = "api"\nmembers'),
            "access.teams.workspace: 'api' is not an MLflow workspace name",
        ),
        (TEAM_A.replace('"user:ana@example.com"', '"ana@example.com"'), "is not an IAM member — write user:EMAIL"),
        (TEAM_A.replace('["user:ana@example.com"]', "[]"), "access.teams.members: "),
        (TEAM_A + TEAM_A, "access.teams: team names team-a appear more than once — name each team once"),
        (
            TEAM_A + TEAM_A.replace('name = "team-a"', 'name = "team-b"\nworkspace = "team-a"'),
            "access.teams: workspace team-a belongs to more than one team — give each team its own workspace",
        ),
        (
            TEAM_A + TEAM_A.replace('"team-a"', '"team-b"').replace("ana@", "ANA@"),
            "access.teams: 'user:ANA@example.com' is in teams team-a and team-b — keep each member in one team, or set "
            "access.members_in_several_teams = true",
        ),
    ],
    ids=[
        "no-team",
        "others",
        "team-name",
        "reserved-workspace",
        "bare-email",
        "no-members",
        "same-name",
        "same-workspace",
        "two-teams",
    ],
)
def test_a_bad_access_table_is_refused_naming_the_field_and_the_fix(access: str, problem: str) -> None:
    assert problem in rejection(access)


def test_a_member_in_two_teams_is_accepted_when_allowed_explicitly():

    assert (
        len(config("members_in_several_teams = true\n" + TEAM_A + TEAM_A.replace('"team-a"', '"team-b"')).access.teams)
        == 2
    )


def test_every_member_must_be_admitted_by_iap():
    members = '["user:bob@example.com", "domain:corp.example.com"]'
    message = rejection(
        'admins = ["user:eve@example.com"]\n'
        + TEAM_A
        + TEAM_A.replace('"team-a"', '"team-b"').replace("user:ana@example.com", "group:vision@example.com"),
        iap_members=members,
    )
    assert (
        "access.admins: 'user:eve@example.com' is not admitted by IAP (iap_members) — add it, its group or its domain"
        in message
    )
    assert "access.teams.team-a: 'user:ana@example.com' is not admitted by IAP" in message
    assert "access.teams.team-b: 'group:vision@example.com' is not admitted by IAP" in message
    # Listed, under a domain: member, or the keyless client account (which exists with client_impersonators): admitted.
    admitted = TEAM_A.replace(
        '"user:ana@example.com"',
        '"user:bob@example.com", "user:carol@corp.example.com", '
        '"serviceAccount:mlflow-client@example-mlflow-project.iam.gserviceaccount.com"',
    )
    access = config(admitted, iap_members=members, extra='client_impersonators = ["user:bob@example.com"]').access
    assert len(access.teams[0].members) == 3


def test_a_group_in_iap_members_may_hold_any_user_but_not_another_group():
    assert config(TEAM_A).access is not None
    message = rejection(TEAM_A.replace("user:ana@example.com", "group:vision@example.com"))
    assert "access.teams.team-a: 'group:vision@example.com' is not admitted by IAP" in message


def test_access_counts_mlflows_auth_and_workspace_stores_in_the_connection_budget():
    message = rejection(TEAM_A, pool_size="2")
    assert "server: connection budget exceeded: 2 instances x 1 workers x 4 stores x (2 pool + 1 overflow)" in message
