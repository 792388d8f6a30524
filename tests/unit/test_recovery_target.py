"""Recovery targets (bvh_ops.physical.target) from the restore options an operator types: every
accepted form, what goes into postgresql.auto.conf, and the refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bvh_ops.errors import BvhOpsError
from bvh_ops.physical.target import RecoveryTarget, parse_time


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("text, instant", [
    ("2026-11-27T02:00:00Z", utc(2026, 11, 27, 2)),
    ("2026-11-27T02:00:00+00:00", utc(2026, 11, 27, 2)),
    ("2026-11-27T04:00:00+02:00", utc(2026, 11, 27, 2)),
    ("2026-11-26T21:00:00-05:00", utc(2026, 11, 27, 2)),
    ("2026-11-27T02:00:00", utc(2026, 11, 27, 2)),  # naive: UTC, never the host's zone
    ("2026-11-27 02:00:00", utc(2026, 11, 27, 2)),
    ("2026-11-27T02:00:00.250Z", utc(2026, 11, 27, 2, 0, 0, 250000)),
    ("2026-11-27T02:00Z", utc(2026, 11, 27, 2)),
    ("2026-11-27", utc(2026, 11, 27)),
])
def test_parse_time(text, instant):
    t = parse_time(text)
    assert t == instant
    assert t.tzinfo is not None


def test_parse_time_keeps_the_offset_given():
    assert parse_time("2026-11-27T04:00:00+02:00").utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("text", ["yesterday", "", "27/11/2026 02:00", "2026-11-27T25:00:00Z", "1732672800", "Z"])
def test_parse_time_refuses_what_is_not_iso_8601(text):
    with pytest.raises(BvhOpsError, match="is not an ISO 8601 time"):
        parse_time(text)


# (to_time, to_lsn, to_name) -> kind, value, the recovery settings written, describe()
ACCEPTED = [
    ((None, None, None), None, None, {}, "the end of the archived WAL"),
    (("", "", ""), None, None, {}, "the end of the archived WAL"),  # empty options are not given
    (("2026-11-27T02:00:00Z", None, None), "time", "2026-11-27T02:00:00+00:00",
     {"recovery_target_time": "'2026-11-27T02:00:00+00:00'"}, "time 2026-11-27T02:00:00+00:00"),
    (("2026-11-27T02:00:00", None, None), "time", "2026-11-27T02:00:00+00:00",
     {"recovery_target_time": "'2026-11-27T02:00:00+00:00'"}, "time 2026-11-27T02:00:00+00:00"),
    (("2026-11-27T04:00:00+02:00", None, None), "time", "2026-11-27T04:00:00+02:00",
     {"recovery_target_time": "'2026-11-27T04:00:00+02:00'"}, "time 2026-11-27T04:00:00+02:00"),
    ((None, "0/3000060", None), "lsn", "0/3000060",
     {"recovery_target_lsn": "'0/3000060'"}, "lsn 0/3000060"),
    ((None, "16/b374d848", None), "lsn", "16/B374D848",
     {"recovery_target_lsn": "'16/B374D848'"}, "lsn 16/B374D848"),
    ((None, "00000000/03000060", None), "lsn", "0/3000060",
     {"recovery_target_lsn": "'0/3000060'"}, "lsn 0/3000060"),
    ((None, " 0/3000060\n", None), "lsn", "0/3000060",
     {"recovery_target_lsn": "'0/3000060'"}, "lsn 0/3000060"),
    ((None, None, "before_incident"), "name", "before_incident",
     {"recovery_target_name": "'before_incident'"}, "name before_incident"),
    ((None, None, "release-2026.11.27:02"), "name", "release-2026.11.27:02",
     {"recovery_target_name": "'release-2026.11.27:02'"}, "name release-2026.11.27:02"),
    ((None, None, "n" * 63), "name", "n" * 63, {"recovery_target_name": f"'{'n' * 63}'"}, f"name {'n' * 63}"),
]


@pytest.mark.parametrize("options, kind, value, conf, description", ACCEPTED)
def test_from_options(options, kind, value, conf, description):
    target = RecoveryTarget.from_options(*options)
    assert (target.kind, target.value) == (kind, value)
    assert target.conf() == conf
    assert target.describe() == description


def test_a_time_target_names_the_instant_asked_for_whatever_the_form():
    instants = {parse_time(RecoveryTarget.from_options(t, None, None).value)
                for t in ("2026-11-27T02:00:00Z", "2026-11-27T04:00:00+02:00", "2026-11-27T02:00:00",
                          "2026-11-26T21:00:00-05:00")}
    assert instants == {utc(2026, 11, 27, 2)}
    # and carries its offset into recovery_target_time (PostgreSQL would read a naive time in
    # the restored server's own time zone)
    value = RecoveryTarget.from_options("2026-11-27T02:00:00", None, None).value
    assert datetime.fromisoformat(value).tzinfo is not None


@pytest.mark.parametrize("options, message", [
    (("2026-11-27T02:00:00Z", "0/3000060", None), "at most one of --to-time, --to-lsn, --to-name"),
    (("2026-11-27T02:00:00Z", None, "x"), "at most one"),
    ((None, "0/3000060", "x"), "at most one"),
    (("2026-11-27T02:00:00Z", "0/3000060", "x"), "at most one"),
    (("02:00 yesterday", None, None), "is not an ISO 8601 time"),
    ((None, "3000060", None), "is not an LSN"),
    ((None, None, "before incident"), "restore point names here are letters, digits and _.:-"),
    ((None, None, "it's"), "restore point names"),
    ((None, None, "x'; restore_command = 'sh"), "restore point names"),  # nothing reaches the conf file
    ((None, None, "n" * 64), "restore point names"),  # PostgreSQL's limit is 63 bytes
    ((None, None, "näme"), "restore point names"),
])
def test_from_options_refuses(options, message):
    with pytest.raises(BvhOpsError, match=message.replace(".", r"\.")):
        RecoveryTarget.from_options(*options)


def test_the_target_is_a_value():
    assert RecoveryTarget.from_options(None, "0/3000060", None) == RecoveryTarget("lsn", "0/3000060")
    assert RecoveryTarget() == RecoveryTarget(None, None)
    with pytest.raises(AttributeError):
        RecoveryTarget().kind = "time"  # frozen


def test_a_non_utc_zone_object_round_trips():
    tz = timezone(timedelta(hours=5, minutes=30))
    t = datetime(2026, 11, 27, 7, 30, tzinfo=tz)
    assert parse_time(t.isoformat()) == utc(2026, 11, 27, 2)
