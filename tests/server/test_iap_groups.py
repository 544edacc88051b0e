"""Group lookups (docker/iap_access.py's CloudIdentityGroups) against the fake Cloud Identity on
loopback, as the server's own account through the fake metadata server: what is kept, for how
long, when Cloud Identity is slow or down, and how much a process remembers.

TTL is the shortest allowed (1 s), so each bound is seen in a second or two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.fake_cloud_identity import FakeCloudIdentity
from tests.server.fake_metadata import FakeMetadataServer
from tests.server.proc import image_module

GROUP, OTHER_GROUP = "team-a-people@example.com", "gone@example.com"
MEMBER, STRANGER = "a2@example.com", "visitor@example.com"
TTL = 1


@pytest.fixture(scope="module")
def metadata() -> Iterator[FakeMetadataServer]:
    server = FakeMetadataServer(token="ya29.groups-reader").start()
    yield server
    server.stop()


@pytest.fixture
def cloud_identity(metadata: FakeMetadataServer) -> Iterator[FakeCloudIdentity]:
    fake = FakeCloudIdentity(token=metadata.token, groups={GROUP: {MEMBER}}).start()
    yield fake
    fake.stop()


@pytest.fixture
def iap_access(metadata: FakeMetadataServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The module, with Application Default Credentials finding the fake metadata server only."""
    from google.auth.compute_engine import _metadata

    for name, value in metadata.environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setattr(_metadata, "_GCE_METADATA_HOST", metadata.address)  # google-auth reads it at import
    return image_module("iap_access")


def groups(iap_access: Any, fake: FakeCloudIdentity, size: int = 10_000) -> Any:
    return iap_access.CloudIdentityGroups(TTL, fake.url, size=size)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and text in r.getMessage()]


def test_an_answer_is_kept_for_the_ttl_then_asked_again(iap_access: Any, cloud_identity: FakeCloudIdentity) -> None:
    lookups = groups(iap_access, cloud_identity)
    start = time.monotonic()
    first = lookups.has_member(GROUP, MEMBER)
    assert first.found and start <= first.expires - TTL <= time.monotonic()
    assert lookups.has_member(GROUP, MEMBER).found and cloud_identity.asked[(GROUP, MEMBER)] == 1
    cloud_identity.groups[GROUP] = set()
    sleep_until(first.expires)
    assert not lookups.has_member(GROUP, MEMBER).found, "a removal is seen once the answer is a TTL old"
    assert cloud_identity.asked[(GROUP, MEMBER)] == 2


@pytest.mark.parametrize("outage", [503, "drop"], ids=["503", "connection-dropped"])
def test_when_cloud_identity_fails_a_known_answer_is_kept_one_more_ttl_then_nobody_is_a_member(
    iap_access: Any, cloud_identity: FakeCloudIdentity, caplog: pytest.LogCaptureFixture, outage: int | str
) -> None:
    lookups = groups(iap_access, cloud_identity)
    asked = time.monotonic()
    assert lookups.has_member(GROUP, MEMBER).found
    cloud_identity.outage = outage
    sleep_until(asked + TTL)
    kept = lookups.has_member(GROUP, MEMBER)
    assert kept.found and kept.kept_until <= asked + 2 * TTL + 0.5
    assert not lookups.has_member(GROUP, "new-member@example.com").found, "nothing kept: fail closed at once"
    while time.monotonic() < kept.kept_until - 0.05:  # has_member reads the clock again
        assert lookups.has_member(GROUP, MEMBER).found
        time.sleep(0.1)
    sleep_until(kept.kept_until + 0.01)
    assert not lookups.has_member(GROUP, MEMBER).found, "2 TTL after the last answer: no longer a member"
    said = warnings(caplog, f"cannot read group {GROUP}")
    assert len(said) == 1 and f"keep what they had for at most {TTL} s more" in said[0], said

    cloud_identity.outage = None
    sleep_until(time.monotonic() + lookups.retry)
    assert lookups.has_member(GROUP, MEMBER).found
    assert warnings(caplog, f"group {GROUP} answers again")


def test_a_failing_group_is_asked_once_per_retry_for_all_users_together(
    iap_access: Any, cloud_identity: FakeCloudIdentity
) -> None:
    lookups = iap_access.CloudIdentityGroups(30, cloud_identity.url)  # retry 10 s: longer than 20 calls take
    assert lookups.has_member(GROUP, MEMBER).found  # the group's name is known
    cloud_identity.outage = 503
    users = [f"user{i}@example.com" for i in range(20)]
    assert not any(lookups.has_member(GROUP, user).found for user in users)
    assert sum(cloud_identity.asked[(GROUP, user)] for user in users) == 1


def test_a_group_the_server_may_not_read_or_that_does_not_exist_is_an_answer_not_a_failure(
    iap_access: Any, cloud_identity: FakeCloudIdentity, caplog: pytest.LogCaptureFixture
) -> None:
    """403 (the admin step is missing) and 404: not a member, kept like any answer, said once."""
    lookups = groups(iap_access, cloud_identity)
    assert lookups.has_member(GROUP, MEMBER).found
    cloud_identity.unreadable = {GROUP}
    sleep_until(time.monotonic() + TTL)
    for _ in range(3):
        answer = lookups.has_member(GROUP, MEMBER)
        assert not answer.found and answer.expires - answer.refresh_after == pytest.approx(TTL / 2, abs=0.01)
        assert not lookups.has_member(OTHER_GROUP, MEMBER).found
    said = warnings(caplog, "cannot read group")
    assert sorted(said) == [
        f"iap_access: cannot read group {OTHER_GROUP} (404 Not Found); no group has that address: check [access]",
        f"iap_access: cannot read group {GROUP} (403 Forbidden); its members get nothing from it until the "
        "server's service account may read its memberships (docs/security.md: Teams and permissions)",
    ]


def test_a_group_deleted_while_its_name_is_kept_has_no_members(
    iap_access: Any, cloud_identity: FakeCloudIdentity, caplog: pytest.LogCaptureFixture
) -> None:
    """The check under the kept name answers 404: the name is looked up again, and is gone too."""
    lookups = groups(iap_access, cloud_identity)
    assert lookups.has_member(GROUP, MEMBER).found
    del cloud_identity.groups[GROUP]
    sleep_until(time.monotonic() + TTL)
    assert not lookups.has_member(GROUP, MEMBER).found
    assert warnings(caplog, f"cannot read group {GROUP} (404 Not Found)")


def test_a_call_cloud_identity_does_not_answer_in_time_fails_closed_after_the_timeout(
    iap_access: Any, cloud_identity: FakeCloudIdentity
) -> None:
    lookups = groups(iap_access, cloud_identity)
    lookups.resource_name(GROUP)
    cloud_identity.member_delay[STRANGER] = 5.0
    start = time.monotonic()
    assert not lookups.has_member(GROUP, STRANGER, timeout=0.5).found
    assert time.monotonic() - start < 3.0, "the request waited for the timeout, not for Cloud Identity"


def test_what_a_process_remembers_stays_within_its_bounds(iap_access: Any, cloud_identity: FakeCloudIdentity) -> None:
    """At most `size` answers, and none once they are too old to be served (2 TTL)."""
    lookups = groups(iap_access, cloud_identity, size=50)
    for i in range(200):
        lookups.has_member(GROUP, f"user{i}@example.com")
    assert lookups.answers_kept == 50
    time.sleep(2 * TTL)
    lookups.has_member(GROUP, MEMBER)
    assert lookups.answers_kept == 1
