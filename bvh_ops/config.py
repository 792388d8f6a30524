"""Typed settings, loaded once: ``bvh-ops.toml`` (path from ``BVH_OPS_CONFIG``), every value
overridable by a ``BVH_OPS_<FIELD>`` environment variable. Secrets are ``SecretStr`` and never
appear in ``repr`` or in ``config show``."""

from __future__ import annotations

import base64
import binascii
import difflib
import os
import re
import sys
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bvh_ops.conditions import Condition, ConditionError, parse_condition
from bvh_ops.dsn import check_dsn, redact_dsn
from bvh_ops.errors import ConfigError

CONFIG_ENV = "BVH_OPS_CONFIG"
DEFAULT_CONFIG_FILE = "bvh-ops.toml"
ENV_PREFIX = "BVH_OPS_"
# BVH_OPS_* variables that are not settings: the config file's path, and the checkout that
# prefect.yaml's deployments run from (deployments/deploy.sh).
OTHER_ENV = frozenset({CONFIG_ENV, "BVH_OPS_PROJECT_DIR"})


class InvariantCheck(BaseModel):
    """A named SQL query returning the rows that violate a domain rule (empty result = pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    sql: str


class Endpoint(BaseModel):
    """An HTTP endpoint the monitor requests, with Gatus-style conditions (bvh_ops.conditions),
    parsed here so a malformed one fails at start naming the endpoint and the condition."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Unique: the check's name.
    name: str = Field(min_length=1)
    # database | cache | api | frontend | backups | any name: the dashboard groups by it.
    service: str = Field(min_length=1)
    # http:// or https:// (https also reports the certificate's days to expiry).
    url: str
    # All must hold for the endpoint to be ok; default: the status is 200.
    conditions: tuple[Condition, ...] = ()
    # The whole request (connect, headers, body) is cut after this; a cut request is critical.
    timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    method: Literal["GET", "HEAD"] = "GET"
    # CA bundle for https endpoints signed by a private CA (default: the system's and certifi's).
    tls_ca_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        name = data.get("name") or "(unnamed)"
        url = data.get("url")
        if not isinstance(url, str):
            raise ValueError(f"endpoint '{name}': url is missing: give an http:// or https:// URL")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"endpoint '{name}': url '{url}' must be http(s)://host[:port]/path")
        try:
            _ = parts.port  # raises on a non-numeric or out-of-range port
        except ValueError:
            raise ValueError(f"endpoint '{name}': url '{url}' has an invalid port") from None
        raw = data.get("conditions", ["[STATUS] == 200"])
        if isinstance(raw, str) or not isinstance(raw, list | tuple):
            raise ValueError(f"endpoint '{name}': conditions must be a list of strings")
        parsed = []
        for item in raw:
            if isinstance(item, Condition):
                parsed.append(item)
                continue
            try:
                cond = parse_condition(str(item))
            except ConditionError as exc:
                raise ValueError(f"endpoint '{name}': condition '{item}': {exc}") from None
            if cond.placeholder == "[CERTIFICATE_EXPIRATION]" and parts.scheme != "https":
                raise ValueError(f"endpoint '{name}': condition '{item}': [CERTIFICATE_EXPIRATION] "
                                 "needs an https:// URL")
            parsed.append(cond)
        return {**data, "conditions": tuple(parsed)}

    @field_serializer("conditions")
    def _conditions_text(self, value: tuple[Condition, ...]) -> list[str]:
        return [c.text for c in value]


class MaintenanceWindow(BaseModel):
    """A planned maintenance interval [start, end) in UTC: the uptime report leaves the probe
    cycles inside it out (neither up nor down). Times without an offset are UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: datetime
    end: datetime
    description: str = ""

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("end")
    @classmethod
    def _after_start(cls, value: datetime, info) -> datetime:
        start = info.data.get("start")
        if start is not None and value <= start:
            raise ValueError(f"end {value.isoformat()} must be after start {start.isoformat()}")
        return value


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class MaintenanceSettings(BaseModel):
    """The ``[maintenance]`` table (bvh_ops/maintenance). Defaults are check_postgres's where it
    has one (named per field), else PostgreSQL autovacuum's own trigger formula, so a table is
    acted on when autovacuum should already have done it and did not."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # ANALYZE when modifications since the last analyze > analyze_threshold + analyze_scale_factor
    # * reltuples (PostgreSQL's autovacuum_analyze_threshold / _scale_factor defaults: 50, 0.1).
    analyze_threshold: int = Field(default=50, ge=0)
    analyze_scale_factor: float = Field(default=0.1, ge=0, le=100)
    # VACUUM (ANALYZE) when dead tuples > vacuum_threshold + vacuum_scale_factor * reltuples
    # (autovacuum_vacuum_threshold / _scale_factor defaults: 50, 0.2; check_postgres has no
    # dead-tuple action).
    vacuum_threshold: int = Field(default=50, ge=0)
    vacuum_scale_factor: float = Field(default=0.2, ge=0, le=100)
    # VACUUM (FREEZE) when age(relfrozenxid) passes this share of autovacuum_freeze_max_age;
    # critical finding past the second (check_postgres autovac_freeze: 90 % / 95 %).
    freeze_warning_percent: float = Field(default=90.0, gt=0, le=100)
    freeze_critical_percent: float = Field(default=95.0, gt=0, le=100)
    # Estimated wasted bytes of a table or index: a warning / critical finding, and REINDEX
    # CONCURRENTLY of an index past the warning (check_postgres bloat: 1 GB / 5 GB).
    bloat_warning_bytes: int = Field(default=1 << 30, ge=0)
    bloat_critical_bytes: int = Field(default=5 << 30, ge=0)
    # An index never scanned since the stats reset is reported (never dropped) from this size up.
    unused_index_min_bytes: int = Field(default=1 << 20, ge=0)
    # Sequences: share of their range used (check_postgres sequence: 85 % / 95 %).
    sequence_warning_percent: float = Field(default=85.0, gt=0, le=100)
    sequence_critical_percent: float = Field(default=95.0, gt=0, le=100)
    # Long-running queries and idle-in-transaction sessions (check_postgres query_time: 2 min /
    # 5 min; its txn_idle has no default, the same figures are used).
    session_warning_seconds: float = Field(default=120.0, gt=0)
    session_critical_seconds: float = Field(default=300.0, gt=0)
    # Inactive replication slots retaining WAL (check_postgres replication_slots has no default).
    slot_warning_bytes: int = Field(default=1 << 30, ge=0)
    slot_critical_bytes: int = Field(default=5 << 30, ge=0)
    # Every maintenance statement runs with these: no lock wait longer than lock_timeout.
    lock_timeout_ms: int = Field(default=5000, ge=1, le=3_600_000)
    statement_timeout_seconds: float = Field(default=3600.0, gt=0)
    # The maintenance window [start, end) in UTC on the given days (an end before the start wraps
    # past midnight, the day being the start's); outside it a run only assesses.
    window_start: time = time(1, 0)
    window_end: time = time(6, 0)
    window_days: list[str] = Field(default_factory=lambda: list(DAYS))
    # Tables (schema.table) allowed VACUUM FULL when bloated past bloat_warning_bytes: it holds an
    # ACCESS EXCLUSIVE lock for the whole rewrite, so none by default.
    vacuum_full_tables: list[str] = Field(default_factory=list)
    # Disk cleanup (weekly): bvh-ops' own leftovers (drill scratch, restore recovery directories,
    # temporary files) are removed once their owner process is gone and nothing in them changed
    # for this long; recovery directories are looked for under these roots (data directories of
    # physical restores, one or two levels down) besides state_dir/drills.
    leftover_grace_hours: float = Field(default=24.0, ge=0)
    leftover_paths: list[Path] = Field(default_factory=list)

    @field_validator("window_start", "window_end")
    @classmethod
    def _naive_utc(cls, value: time) -> time:
        if value.utcoffset():  # None (naive) or zero (UTC) are both fine
            raise ValueError(f"{value.isoformat()}: window times are UTC, give them without an offset")
        return value.replace(tzinfo=None)

    @field_validator("window_days")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        out = [d.strip().lower()[:3] for d in value]
        if bad := [d for d in out if d not in DAYS]:
            raise ValueError(f"window_days: '{bad[0]}' is not a day (one of {', '.join(DAYS)})")
        if not out:
            raise ValueError("window_days is empty: maintenance would never act (list the days, e.g. [\"sun\"])")
        return out

    @field_validator("vacuum_full_tables")
    @classmethod
    def _qualified(cls, value: list[str]) -> list[str]:
        for item in value:
            if item.count(".") != 1 or not all(item.split(".")):
                raise ValueError(f"vacuum_full_tables: '{item}' must be schema.table")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceSettings:
        for warn, crit in (("freeze_warning_percent", "freeze_critical_percent"),
                           ("bloat_warning_bytes", "bloat_critical_bytes"),
                           ("sequence_warning_percent", "sequence_critical_percent"),
                           ("session_warning_seconds", "session_critical_seconds"),
                           ("slot_warning_bytes", "slot_critical_bytes")):
            if getattr(self, warn) > getattr(self, crit):
                raise ValueError(f"{warn} is above {crit}: the warning level must come first")
        if self.window_start == self.window_end:
            raise ValueError("window_start equals window_end: the window would be empty")
        return self


class LogAnalysisSettings(BaseModel):
    """The ``[log_analysis]`` table: the detectors' thresholds (bvh_ops/logs/analysis). Hours and
    days are UTC; amounts are in the platform's currency."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Brute force: at least this many failed logins from one IP, or against one account, within the window.
    brute_force_failures: int = Field(default=10, ge=2)
    brute_force_minutes: float = Field(default=10.0, gt=0)
    # Credential stuffing: one IP failing against at least this many distinct accounts within the window.
    stuffing_accounts: int = Field(default=8, ge=2)
    stuffing_minutes: float = Field(default=30.0, gt=0)
    # Known-bad addresses or networks (CIDR); any request or login from one is a finding.
    known_bad_ips: list[str] = Field(default_factory=list)
    # Business hours for admin actions: [start, end) hour of day and the ISO weekdays (1 = Monday).
    business_hours: tuple[int, int] = (6, 18)
    business_days: list[int] = Field(default_factory=lambda: [7, 1, 2, 3, 4])
    # API access violations: at least this many 403 responses to one IP within the window.
    forbidden_spike: int = Field(default=10, ge=2)
    forbidden_minutes: float = Field(default=5.0, gt=0)
    # Performance: an endpoint hour whose p95 exceeds this is slow; a p95 this many times last
    # week's same hour (and at least min_samples requests in both) is a degradation.
    slow_p95_ms: float = Field(default=1000.0, gt=0)
    degradation_ratio: float = Field(default=1.5, gt=1)
    min_samples: int = Field(default=20, ge=1)
    # Structuring: at least structuring_count deposits per account per UTC day within
    # structuring_margin_percent below reporting_threshold.
    reporting_threshold: float = Field(default=5000.0, gt=0)
    structuring_margin_percent: float = Field(default=10.0, gt=0, lt=100)
    structuring_count: int = Field(default=3, ge=2)
    # Deposit then withdrawal within this many hours with play below this share of the deposit.
    cashout_hours: float = Field(default=48.0, gt=0)
    cashout_play_percent: float = Field(default=10.0, ge=0, le=100)
    cashout_min_amount: float = Field(default=100.0, ge=0)
    # Shared IP: at least this many distinct accounts logging in from one IP per UTC day.
    shared_ip_accounts: int = Field(default=5, ge=2)
    # Purchase velocity: an account's purchases in an hour above max(velocity_min_purchases,
    # population median + velocity_mad_factor x MAD) of that hour.
    velocity_min_purchases: int = Field(default=30, ge=1)
    velocity_mad_factor: float = Field(default=6.0, gt=0)
    # Admin balance change without a wallet transaction of the same amount within this many minutes.
    admin_match_minutes: float = Field(default=10.0, gt=0)
    admin_balance_actions: list[str] = Field(default_factory=lambda: ["adjust_balance", "credit_wallet",
                                                                      "debit_wallet"])
    # Evidence kept per finding (the first and the last matching records).
    evidence_records: int = Field(default=5, ge=1, le=50)

    @field_validator("known_bad_ips")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"known_bad_ips: {item!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("business_hours")
    @classmethod
    def _check_hours(cls, value: tuple[int, int]) -> tuple[int, int]:
        start, end = value
        if not 0 <= start < end <= 24:
            raise ValueError(f"business_hours {list(value)}: [start, end) with 0 <= start < end <= 24")
        return value


class AlertingSettings(BaseModel):
    """The ``[alerting]`` table: delivery channels, each optional (set its fields to enable it).
    Secrets (SMTP password, SMS token, the webhook URL with its token) are ``SecretStr``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Email over SMTP: the server, its port, STARTTLS after connecting, optional login.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # The sender and the recipients of alert email.
    email_from: str | None = None
    email_to: list[str] = Field(default_factory=list)
    # SMS through an HTTP gateway with Twilio's REST API shape: base URL, account SID and token.
    sms_gateway_url: str | None = None
    sms_account_sid: str | None = None
    sms_auth_token: SecretStr | None = None
    # The sending number and the numbers that get critical texts.
    sms_from: str | None = None
    sms_to: list[str] = Field(default_factory=list)
    # Slack/Discord/generic webhook (secret: such URLs carry their token) and its payload format.
    webhook_url: SecretStr | None = None
    webhook_format: Literal["slack", "discord", "json"] = "slack"
    # Each delivery attempt (connect, send) is cut after this.
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # When the daily info digest is due (UTC).
    digest_at: time = time(7, 0)
    # Dead-man's switches: minutes after a deployment's scheduled time by which its run must have
    # completed, per deployment name; others get the default. monitoring's runs last 59 min and
    # queue behind each other, so it needs more than an hour.
    deadman_grace_minutes: dict[str, int] = Field(default_factory=lambda: {"monitoring": 90})
    deadman_default_grace_minutes: int = Field(default=60, gt=0)
    # The monitor's own dead-man (a Prefect proactive automation, bvh-ops setup-notifications):
    # notify when no monitoring run has completed for this many minutes (at least 10).
    monitoring_silence_minutes: int = Field(default=120, ge=10)

    @field_validator("email_from")
    @classmethod
    def _check_from(cls, value: str | None) -> str | None:
        if value is not None and "@" not in value:
            raise ValueError(f"'{value}' is not an email address")
        return value

    @field_validator("email_to")
    @classmethod
    def _check_to(cls, value: list[str]) -> list[str]:
        for item in value:
            if "@" not in item:
                raise ValueError(f"'{item}' is not an email address")
        return value

    @field_validator("deadman_grace_minutes")
    @classmethod
    def _check_grace(cls, value: dict[str, int]) -> dict[str, int]:
        for name, minutes in value.items():
            if minutes <= 0:
                raise ValueError(f"grace of '{name}' must be more than 0 minutes, not {minutes}")
        return value

    def deadman_grace(self, deployment: str) -> int:
        """Minutes of grace for ``deployment``'s scheduled runs."""
        return self.deadman_grace_minutes.get(deployment, self.deadman_default_grace_minutes)

    @field_validator("sms_gateway_url")
    @classmethod
    def _check_gateway(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http(s):// URL, e.g. https://api.twilio.com")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _check_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            if parts.scheme not in ("http", "https") or not parts.hostname:
                # The URL itself is not quoted: it carries the token.
                raise ValueError("must be an http(s):// URL (the Slack/Discord incoming webhook URL)")
        return value

    @model_validator(mode="after")
    def _channels_complete(self) -> AlertingSettings:
        if self.smtp_host:
            for name in ("email_from", "email_to"):
                if not getattr(self, name):
                    raise ValueError(f"smtp_host is set but {name} is not: email alerts need a sender and recipients")
        if (self.smtp_username is None) != (self.smtp_password is None):
            raise ValueError("smtp_username and smtp_password go together: set both or neither")
        if self.sms_gateway_url:
            for name in ("sms_account_sid", "sms_auth_token", "sms_from", "sms_to"):
                if not getattr(self, name):
                    raise ValueError(f"sms_gateway_url is set but {name} is not: the SMS channel needs it")
        return self


class CapacitySettings(BaseModel):
    """The ``[capacity]`` table: the limits capacity planning forecasts against and what it
    collects. Limits left unset come from elsewhere: connections from the server's
    max_connections, CPU/memory from the runbook's warning thresholds (cpu_warning_percent,
    memory_warning_percent: plan before the alert fires), disk from each mount's size."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # A disk counts as full at this share of its size (%): the forecast's limit for disk.used.
    disk_fill_percent: float = Field(default=90.0, gt=0, le=100)
    # The repository's quota in bytes (an S3 budget, a volume size); unset: repository growth is
    # reported as a trend without a days-until.
    repository_quota_bytes: int | None = Field(default=None, gt=0)
    # Connections count as exhausted at this share of max_connections (%).
    connections_limit_percent: float = Field(default=100.0, gt=0, le=100)
    # CPU and memory peak limits (%); unset: the monitoring warning thresholds.
    cpu_limit_percent: float | None = Field(default=None, gt=0, le=100)
    memory_limit_percent: float | None = Field(default=None, gt=0, le=100)
    # The platform's database size limit in bytes (its volume); unset: a trend only.
    database_size_limit_bytes: int | None = Field(default=None, gt=0)
    # Tables and indexes kept by name (the largest N; the others summed as "(rest)").
    top_relations: int = Field(default=10, ge=1, le=200)
    # The platform's main tables whose row counts are kept (schema-qualified or public).
    main_tables: list[str] = Field(default_factory=lambda: ["users", "tickets", "transactions", "payments"])
    # Days of history reconstructed on the first collection (created_at columns, monitoring rollups).
    backfill_days: int = Field(default=90, ge=0, le=3650)
    # Days ahead forecasts look (a limit beyond it is "not within the horizon", never "never").
    horizon_days: int = Field(default=365, ge=30, le=3650)
    # Less than this many days to a limit: a warning finding; less than critical_days: critical.
    warning_days: int = Field(default=30, ge=1)
    critical_days: int = Field(default=7, ge=0)

    @model_validator(mode="after")
    def _order(self) -> CapacitySettings:
        if self.critical_days > self.warning_days:
            raise ValueError(f"critical_days ({self.critical_days}) is above warning_days ({self.warning_days})")
        return self


LOG_CATEGORIES = ("security", "application", "performance", "audit", "debug")   # = bvh_ops.logs.record's
LogCategory = Literal["security", "application", "performance", "audit", "debug"]


class LogSource(BaseModel):
    """A log to collect (``[[log_sources]]``): files matching ``path`` (a glob: ``app.log*``
    takes the rotated files too), in ``format``. ``category``, when set, is the category of
    every record of the source that does not carry its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Unique: offsets and stored records are kept under it.
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # An absolute glob, e.g. /var/log/lottery/app.log* or /var/lib/postgresql/15/main/log/*.json.
    path: str = Field(min_length=1)
    # json (the platform's lines) | postgres-jsonlog | postgres-csvlog.
    format: Literal["json", "postgres-jsonlog", "postgres-csvlog"]
    category: LogCategory | None = None
    # Rotation of the file the platform writes, by cleanup-logs and `bvh-ops logs rotate` (none
    # when unset: logrotate's job, say). Past rotate_bytes, active_file (one of path's matches)
    # is renamed <active_file>.1 (older ones shift to .2, .3, …; the collector follows each file
    # by its inode and reads on what it had not, so nothing is read twice or lost) and the
    # platform is sent reopen_signal (the pid in reopen_pid_file, proven to write the file) to
    # write a new one; rotated files beyond the newest rotate_keep (at least 1: .1 may still be
    # written) are deleted once collected to their end (bvh_ops/logs/rotate.py).
    rotate_bytes: int | None = Field(default=None, ge=1)
    rotate_keep: int = Field(default=7, ge=1, le=1000)
    active_file: str | None = None
    reopen_pid_file: str | None = None
    reopen_signal: Literal["HUP", "USR1", "USR2"] = "USR1"

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: object) -> object:
        if isinstance(data, dict):
            name = data.get("name") or "(unnamed)"
            if data.get("rotate_bytes") is not None:
                import fnmatch

                active, pid = data.get("active_file"), data.get("reopen_pid_file")
                if not isinstance(active, str) or not active.startswith("/"):
                    raise ValueError(f"log source '{name}': rotate_bytes needs active_file, the absolute path of the "
                                     "file the platform writes")
                if not isinstance(pid, str) or not pid.startswith("/"):
                    raise ValueError(f"log source '{name}': rotate_bytes needs reopen_pid_file, the absolute path of "
                                     "the platform's pid file (it is sent reopen_signal to write a new file)")
                glob = data.get("path")
                if isinstance(glob, str) and not (fnmatch.fnmatchcase(active, glob)
                                                  and fnmatch.fnmatchcase(active + ".1", glob)):
                    raise ValueError(f"log source '{name}': path {glob} must match active_file and its rotated "
                                     f"files ({active}.1, …), e.g. {active}*")
                if isinstance(glob, str) and fnmatch.fnmatchcase(pid, glob):
                    raise ValueError(f"log source '{name}': reopen_pid_file {pid} matches path {glob}: it would be "
                                     "collected as a log; keep the pid file out of the glob")
            path = data.get("path")
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"log source '{name}': path must be an absolute glob, e.g. /var/log/lottery/app.log*")
            fmt = data.get("format")
            if fmt not in ("json", "postgres-jsonlog", "postgres-csvlog"):
                raise ValueError(f"log source '{name}': format {fmt!r} must be json, postgres-jsonlog or "
                                 "postgres-csvlog")
            cat = data.get("category")
            if cat is not None and cat not in LOG_CATEGORIES:
                raise ValueError(f"log source '{name}': category {cat!r} must be one of {', '.join(LOG_CATEGORIES)}")
        return data


FILE_CLASSES = ("application", "system", "secrets")


class FileCommand(BaseModel):
    """A command whose standard output is captured as a file of the snapshot (``nft list
    ruleset``, ``crontab -l``, ``git -C /srv/app bundle create - --all``): an argument list, never
    a shell."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Stored as _commands/<name> in the snapshot.
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    # The program and its arguments (no shell: quote nothing).
    argv: list[str] = Field(min_length=1)
    # A command still running after this is killed and the snapshot marked partial.
    timeout_seconds: float = Field(default=300.0, gt=0, le=86400)


class FileSet(BaseModel):
    """A named file set (``[[file_sets]]``): absolute paths or globs, excludes (globs matched
    against the full path and the base name), command outputs, and a class: application |
    system | secrets (secrets never get a text diff)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.]+$")
    class_: Literal["application", "system", "secrets"] = Field(alias="class")
    paths: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    commands: list[FileCommand] = Field(default_factory=list)
    # Run in order by recover-application after a restore of this set (each an argv list, no shell).
    restart_commands: list[Annotated[list[str], Field(min_length=1)]] = Field(default_factory=list)
    # Each restart command is killed (with its process group) after this and the recovery stops.
    restart_timeout_seconds: float = Field(default=300.0, gt=0, le=86400)
    # recover-application probes these [[endpoints]] (by their service; default: every endpoint)
    # until all are ok or health_timeout_seconds pass.
    health_service: str | None = None
    health_timeout_seconds: float = Field(default=300.0, gt=0, le=86400)

    @model_validator(mode="before")
    @classmethod
    def _check(cls, data: object) -> object:
        if isinstance(data, dict):
            name = data.get("name") or "(unnamed)"
            klass = data.get("class", data.get("class_"))
            if klass not in FILE_CLASSES:
                raise ValueError(f"file set '{name}': class {klass!r} must be one of {', '.join(FILE_CLASSES)}")
            for path in data.get("paths") or []:
                if not isinstance(path, str) or not path.startswith("/"):
                    raise ValueError(f"file set '{name}': paths entry {path!r} must be an absolute path or glob, "
                                     "e.g. /etc/nginx")
            if not (data.get("paths") or data.get("commands")):
                raise ValueError(f"file set '{name}': give paths or commands (it would back up nothing)")
            cmds = [c.get("name") for c in data.get("commands") or [] if isinstance(c, dict)]
            if dupes := sorted({c for c in cmds if cmds.count(c) > 1}):
                raise ValueError(f"file set '{name}': command name '{dupes[0]}' is used twice")
        return data


class LogRule(BaseModel):
    """A classification rule (``[[log_rules]]``) for records without a category of their own:
    event glob, optional level, optional message regex -> category. Tried before the built-in
    rules (bvh_ops.logs.classify.DEFAULT_RULES), first match wins."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    category: LogCategory
    event: str = "*"
    level: Literal["debug", "info", "warning", "error"] | None = None
    message: str | None = None

    @field_validator("message")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            import re

            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"message {value!r} is not a regular expression: {exc}") from None
        return value


class SecurityWaiver(BaseModel):
    """One ``[[security.waivers]]`` entry: finding ``id`` on ``object`` ("*" = every object) is
    accepted for ``reason`` until ``expires`` (a date; from the day after, the finding counts again).
    A waived finding is still shown, marked waived with its reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^(PG|HOST)-[A-Z]+-[0-9]{3}$")
    object: str = Field(default="*", min_length=1)
    reason: str = Field(min_length=3)
    expires: date


class SecuritySettings(BaseModel):
    """The ``[security]`` table: what the security scan (bvh_ops/security) accepts as normal on
    this installation. Nothing about this machine is hard-coded in the checks."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Roles allowed to be superusers (PG-ROLE-001), to hold CREATEROLE (PG-ROLE-004) and
    # REPLICATION (PG-REPL-001).
    superusers: list[str] = Field(default_factory=lambda: ["postgres"])
    createrole_roles: list[str] = Field(default_factory=list)
    replication_roles: list[str] = Field(default_factory=list)
    # Extensions allowed in the scanned database (PG-EXT-001).
    extensions: list[str] = Field(default_factory=lambda: ["plpgsql"])
    # Login roles with a password must have VALID UNTIL (PG-ROLE-005); off unless policy asks.
    require_password_expiry: bool = False
    # TCP ports expected to listen on non-loopback addresses (HOST-NET-001; empty: not checked).
    expected_ports: list[int] = Field(default_factory=list)
    # Also hold loopback listeners (127.0.0.1, ::1) against expected_ports.
    include_loopback: bool = False
    # PostgreSQL data directory on this host (HOST-PERM-005), when bvh-ops runs beside the server.
    pg_data_dir: Path | None = None
    # Trees searched for world-writable files (HOST-FS-001), at most max_files entries each.
    paths: list[Path] = Field(default_factory=list)
    max_files: int = Field(default=100_000, ge=1)
    # TLS endpoints "host:port" checked besides the https:// [[endpoints]] (HOST-TLS-*).
    tls_endpoints: list[str] = Field(default_factory=list)
    # Certificate files (PEM) checked for expiry and key size (e.g. PostgreSQL's ssl_cert_file).
    cert_files: list[Path] = Field(default_factory=list)
    cert_warning_days: int = Field(default=30, ge=1)
    min_rsa_bits: int = Field(default=2048, ge=1024)
    tls_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Accepted findings, each with a reason and an expiry.
    waivers: list[SecurityWaiver] = Field(default_factory=list)
    # The platform's sensitive columns ("schema.table.column") and its application roles: an
    # application role may read a sensitive column only where sensitive_readers lists it for that
    # column (PG-DATA-001; empty lists: not checked).
    sensitive_columns: list[str] = Field(default_factory=list)
    app_roles: list[str] = Field(default_factory=list)
    sensitive_readers: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("sensitive_columns")
    @classmethod
    def _check_columns(cls, value: list[str]) -> list[str]:
        for item in value:
            if item.count(".") != 2 or not all(item.split(".")):
                raise ValueError(f"sensitive_columns: '{item}' must be schema.table.column")
        return value

    @model_validator(mode="after")
    def _check_readers(self) -> SecuritySettings:
        if unknown := sorted(set(self.sensitive_readers) - set(self.sensitive_columns)):
            raise ValueError(f"sensitive_readers: '{unknown[0]}' is not in sensitive_columns")
        return self

    @field_validator("tls_endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        for item in value:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"'{item}' must be host:port")
        return value


class Settings(BaseSettings):
    """Everything bvh-ops reads from its environment. One field, one comment."""

    model_config = SettingsConfigDict(env_prefix="BVH_OPS_", extra="forbid", frozen=True)

    # The database to back up: postgresql://user:password@host:port/dbname (password is secret).
    database_url: SecretStr | None = None
    # Where backups live: file:///abs/path or s3://bucket/prefix.
    repository: str | None = None
    # S3-compatible endpoint (MinIO, R2, moto); empty for AWS.
    s3_endpoint_url: str | None = None
    # S3 region (AWS needs one; S3-compatible stores accept any).
    s3_region: str = "us-east-1"
    # Server-side encryption on S3: none, AES256 or aws:kms (on top of our own encryption).
    s3_sse: Literal["none", "AES256", "aws:kms"] = "none"
    # KMS key for s3_sse = aws:kms.
    s3_sse_kms_key_id: str | None = None
    # Multipart part size in MiB (S3 minimum 5); memory per upload is one part.
    s3_part_size_mib: int = Field(default=16, ge=5, le=5120)
    # AWS credentials profile for the repository (~/.aws/credentials); empty: boto3's default chain.
    aws_profile: str | None = None
    # The second repository kept in step with the first (#17): file:///abs/path or
    # s3://bucket/prefix, typically another region or provider; empty: no replica.
    replica_repository: str | None = None
    # The replica's S3 endpoint, region and credentials profile (each independent of the primary's).
    replica_s3_endpoint_url: str | None = None
    replica_s3_region: str = "us-east-1"
    replica_aws_profile: str | None = None
    # Objects copied to the replica at once by `replicate` (memory: one S3 part each when streamed).
    replica_copy_workers: int = Field(default=4, ge=1, le=32)
    # Public key files (recipient.pub) the data key of each backup is sealed to.
    recipients: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    # Private key file (identity.key) for restore and deep verify; the backup host needs none.
    identity: Path | None = None
    # Local state: host signing key, embedded clusters, demo files.
    state_dir: Path = Path(".bvh-ops")
    # zstd level (1-22); 3 is zstd's own default and keeps up with pg_dump.
    compression_level: int = Field(default=3, ge=1, le=22)
    # zstd worker threads (0 = compress in the calling thread); 2 keeps up with pg_dump on 2 cores.
    compression_threads: int = Field(default=2, ge=0, le=64)
    # pg_restore processes for full restores (drills too): data, then indexes/constraints, in parallel.
    restore_jobs: int = Field(default=2, ge=1, le=64)
    # The drill reads each restored table for its checks while pg_restore still loads the others,
    # at the lowest CPU priority (checks.drill_early): on; pitr (only the append-only tables' side
    # of the PITR comparison during the restore, every COPY fingerprint after it); off (every
    # check after the restore); auto (the default: on where the host has more cores than
    # restore_jobs, else pitr). On 2 cores (docs/BENCHMARKS.md, goal 3, thirteenth session) the
    # full early reads slow the restore past 1.15 x bare pg_restore (they compete for memory
    # bandwidth even at the lowest CPU share), off leaves the checks just over 30 % of the
    # restore, and pitr holds both at the bound (pooled over three runs: restore 1.14 x bare,
    # checks 0.26 of it; its restore as fast as off's). Since the eighteenth session the
    # append-only tables' restored PITR side is summed from the dump during the deep verify
    # (bvh_ops.drill.dumpside) wherever it can be: pitr then reads only the tables it could not
    # sum there (usually none), and on reads no PITR side either.
    drill_early_checks: Literal["auto", "on", "pitr", "off"] = "auto"
    # The digest each archived WAL file's index entry records of its plaintext (docs/FORMAT.md):
    # sha256, or blake3 (a quarter of the CPU: ~14 ms less per 16 MiB segment, in archive_command
    # and in the pusher). Readers check whichever an entry records; a reader older than
    # 2026-11-29 knows only sha256, so set blake3 once every host reading this archive (standbys'
    # restore_command, restore and drill hosts) runs bvh-ops from that date or later (and before
    # going back below it: sha256 again, and every ready file archived — README).
    wal_digest: Literal["sha256", "blake3"] = "sha256"
    # Plaintext bytes per AES-GCM segment (KiB); memory per stream is about one segment.
    segment_size_kib: int = Field(default=1024, ge=16, le=65536)
    # Directory of PostgreSQL client tools (pg_dump, pg_restore); default: the embedded 18 wheel's.
    pg_bin_dir: Path | None = None
    # Extra pg_dump arguments are deliberately not configurable: the snapshot contract would break.
    # Deprecated name of keep_daily (still honoured when keep_daily is not set).
    retention_days: int = Field(default=30, ge=1)
    # GFS retention (restic's forget semantics, UTC buckets): days that have a backup whose newest
    # backup is kept (the runbook: 30; default: retention_days).
    keep_daily: int | None = Field(default=None, ge=0)
    # ISO weeks that have a backup whose newest backup is kept.
    keep_weekly: int = Field(default=8, ge=0)
    # Calendar months that have a backup whose newest backup is kept.
    keep_monthly: int = Field(default=12, ge=0)
    # Calendar years that have a backup whose newest backup is kept (financial records: 7).
    keep_yearly: int = Field(default=7, ge=0)
    # Newest complete backups of each family always kept, whatever their age.
    min_redundancy: int = Field(default=2, ge=1)
    # Months a monthly archive is kept (and Object-Locked where the store can): 84 = 7 years.
    keep_archive_months: int = Field(default=84, ge=1, le=1200)
    # S3 Object Lock mode of monthly archives: governance (an account with
    # s3:BypassGovernanceRetention can still delete) or compliance (nobody can, root included).
    archive_lock_mode: Literal["governance", "compliance"] = "governance"
    # Hours before an incomplete backup (no manifest) of a process on another host is removed.
    incomplete_grace_hours: float = Field(default=24.0, ge=0)
    # Extra Ed25519 public keys (base64) whose manifest signatures are trusted besides our own.
    trusted_host_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Retries of a task on transient errors only (connection refused, S3 5xx).
    task_retries: int = Field(default=3, ge=0, le=10)
    # Seconds between those retries (the last value repeats).
    retry_delay_seconds: Annotated[list[float], NoDecode] = Field(default_factory=lambda: [5.0, 30.0, 120.0])
    # Domain invariants for restored copies (used by the DR drill).
    invariants: list[InvariantCheck] = Field(default_factory=list)
    # Where drill results are kept (schema ops); default: database bvh_ops on the embedded cluster.
    ops_database_url: SecretStr | None = None
    # An audit entry that cannot be written fails the action (true) instead of a logged warning.
    audit_strict: bool = False
    # Admin DSN of a server where drills create (and drop) a scratch database; default: a new
    # embedded cluster per drill, destroyed afterwards.
    drill_scratch_dsn: SecretStr | None = None
    # Failure notifications (bvh-ops setup-notifications): the webhook URL (secret: such URLs
    # usually carry a token).
    notify_webhook_url: SecretStr | None = None
    # Logs (#13): days a log day stays in the ops database (searchable) before it is archived to
    # the repository, and per-category retention overrides in days (defaults: the runbook's
    # security 7 years, application 2 years, performance 90 days, debug 30; audit is permanent
    # and cannot be shortened).
    log_hot_days: int = Field(default=30, ge=1, le=3650)
    log_retention_days: dict[str, int] = Field(default_factory=dict)
    # Recovery objectives the drill measures against (the runbook: 15 minutes, 5 minutes).
    rto_objective_seconds: float = Field(default=900.0, gt=0)
    # The runbook's application recovery objective (recover-application): 30 minutes.
    application_rto_objective_seconds: float = Field(default=1800.0, gt=0)
    rpo_objective_seconds: float = Field(default=300.0, gt=0)
    # The runbook's full-system recovery objective (1 hour), reported by the failover drill.
    full_system_rto_objective_seconds: float = Field(default=3600.0, gt=0)
    # The weekly DR drill also runs the failover drill (standby from the replica, promoted, checked).
    failover_drill_in_weekly: bool = False
    # Append-only tables and their commit-time column (table:column), for PITR and freshness.
    append_only_tables: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [
        "public.audit_log:occurred_at", "public.transactions:created_at", "public.security_events:occurred_at"])
    # Rows newer than target minus this margin may have been in flight at the snapshot: the PITR
    # comparison with the live source stops there.
    pitr_margin_seconds: float = Field(default=60.0, ge=0)

    # -- monitoring (bvh-ops health-check; thresholds from the runbook, section 1) -----------
    # HTTP endpoints to probe ([[endpoints]] tables: name, service, url, conditions, ...).
    endpoints: list[Endpoint] = Field(default_factory=list)
    # Seconds between probe cycles; also the most one cycle may take.
    monitor_interval_seconds: float = Field(default=30.0, ge=5, le=3600)
    # The platform's Redis (redis://[:password@]host:6379/0), probed when set (secret: may hold a password).
    cache_url: SecretStr | None = None
    # Mount points whose disk usage is checked.
    disk_paths: Annotated[list[Path], NoDecode] = Field(default_factory=lambda: [Path("/")])
    # An endpoint slower than this (ms) is a warning (its own conditions decide critical).
    response_time_warning_ms: float = Field(default=1000.0, gt=0)
    # Host CPU, memory and disk use (%): above the first a warning, above the second critical.
    cpu_warning_percent: float = Field(default=80.0, gt=0, le=100)
    cpu_critical_percent: float = Field(default=95.0, gt=0, le=100)
    memory_warning_percent: float = Field(default=85.0, gt=0, le=100)
    memory_critical_percent: float = Field(default=95.0, gt=0, le=100)
    disk_warning_percent: float = Field(default=85.0, gt=0, le=100)
    disk_critical_percent: float = Field(default=95.0, gt=0, le=100)
    # Load average (1 min) per core: above the first a warning, above the second critical.
    load_per_core_warning: float = Field(default=1.5, gt=0)
    load_per_core_critical: float = Field(default=3.0, gt=0)
    # The platform's error rate (%) and uptime (%) the status model judges (the runbook: 1 %, 99 %).
    error_rate_warning_percent: float = Field(default=1.0, ge=0, le=100)
    uptime_warning_percent: float = Field(default=99.0, ge=0, le=100)
    # Newest trusted daily (logical) backup older than this (h) is critical (daily at 02:00 + 2 h).
    daily_backup_max_age_hours: float = Field(default=26.0, gt=0)
    # Newest physical backup (incremental or full) older than this plus the grace (h) is critical.
    incremental_backup_max_age_hours: float = Field(default=6.0, gt=0)
    incremental_backup_grace_hours: float = Field(default=1.0, ge=0)
    # Newest passed DR drill older than this (days) is critical (weekly drills + a day).
    drill_max_age_days: float = Field(default=8.0, gt=0)
    # Planned maintenance ([[maintenance_windows]] tables: start, end as ISO times (UTC where no
    # offset is given), description): probe cycles inside a window are left out of the uptime report.
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    # Alert delivery channels (the [alerting] table; see AlertingSettings).
    alerting: AlertingSettings = Field(default_factory=AlertingSettings)
    # Log analysis thresholds (bvh-ops logs analyze, the analyze-logs flow).
    log_analysis: LogAnalysisSettings = Field(default_factory=LogAnalysisSettings)
    # Database maintenance thresholds, timeouts and window (bvh-ops maintain; the [maintenance] table).
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    # Security scan and audit (the [security] table; see SecuritySettings).
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    # Capacity planning limits and collection (the [capacity] table; see CapacitySettings).
    capacity: CapacitySettings = Field(default_factory=CapacitySettings)

    # -- logs (#13: collection and search) ---------------------------------------------------
    # Logs to collect ([[log_sources]] tables: name, path (an absolute glob), format json |
    # postgres-jsonlog | postgres-csvlog, optional category).
    log_sources: list[LogSource] = Field(default_factory=list)
    # Classification of records without their own category ([[log_rules]]: category, event glob,
    # level, message regex), before the built-in rules; none matching: log_default_category.
    log_rules: list[LogRule] = Field(default_factory=list)
    log_default_category: LogCategory = "application"
    # Fields replaced by a keyed HMAC-SHA256 pseudonym at ingest (key: state_dir/log-pseudonym.key),
    # in these categories only; security and audit keep them in clear for investigations.
    log_pseudonymise_fields: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["email", "ip", "phone"])
    log_pseudonymise_categories: Annotated[list[LogCategory], NoDecode] = Field(
        default_factory=lambda: ["application", "performance", "debug"])
    # Records per COPY batch while collecting (memory is about one batch).
    log_batch_records: int = Field(default=5000, ge=100, le=1_000_000)

    # -- file sets (#18: application and system backups) ------------------------------------
    # [[file_sets]] tables: name, class (application | system | secrets), paths (absolute paths or
    # globs), exclude (globs), commands ([{name, argv}]), restart_commands (argv lists).
    file_sets: list[FileSet] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = config_file_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @field_validator("recipients", "trusted_host_keys", "retry_delay_seconds", "append_only_tables", "disk_paths",
                     "log_pseudonymise_fields", "log_pseudonymise_categories", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("database_url", "ops_database_url", "drill_scratch_dsn")
    @classmethod
    def _check_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        # Parsed here as libpq will parse it, so a typo fails at start (not as a retried
        # "transient" error mid-flow) and no message ever quotes the password.
        if value is not None:
            check_dsn(value.get_secret_value())
        return value

    @field_validator("state_dir", mode="before")
    @classmethod
    def _check_state_dir(cls, value: object) -> object:
        # Path("") is the working directory: a new host key there would sign every backup.
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty: set it to a directory for the host key, e.g. /var/lib/bvh-ops")
        return value

    @field_validator("trusted_host_keys")
    @classmethod
    def _check_host_keys(cls, value: list[str]) -> list[str]:
        for n, item in enumerate(value, 1):
            try:
                raw = base64.b64decode(item, validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                raise ValueError(f"entry {n} ({item[:12]}…) is not an Ed25519 public key: give the base64 of its "
                                 "32 bytes, as the other host's manifests carry it (signature.public_key)")
        return value

    @field_validator("repository", "replica_repository")
    @classmethod
    def _check_repository(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme == "file":
            if not parts.path.startswith("/") or parts.netloc not in ("", "localhost"):
                raise ValueError("file repositories need an absolute path: file:///abs/path")
        elif parts.scheme == "s3":
            if not parts.netloc:
                raise ValueError("s3 repositories need a bucket: s3://bucket/prefix")
        else:
            raise ValueError("must be file:///abs/path or s3://bucket/prefix")
        return value

    @field_validator("cache_url")
    @classmethod
    def _check_cache_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parts = urlsplit(value.get_secret_value())
            try:
                _ = parts.port  # raises on a non-numeric or out-of-range port
            except ValueError:
                raise ValueError("has an invalid port: redis://[:password@]host:6379/0") from None
            if parts.scheme not in ("redis", "rediss") or not parts.hostname:
                raise ValueError("must be redis://[:password@]host:6379/0 (or rediss:// for TLS)")
        return value

    @field_validator("s3_endpoint_url", "replica_s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("must be an http(s):// URL, e.g. http://127.0.0.1:9000")
        return value or None

    @field_validator("append_only_tables")
    @classmethod
    def _check_append_only(cls, value: list[str]) -> list[str]:
        for item in value:
            if item.count(":") != 1 or not all(item.split(":")):
                raise ValueError(f"'{item}' must be schema.table:time_column")
        return value

    @model_validator(mode="after")
    def _cross_fields(self) -> Settings:
        if self.s3_sse == "aws:kms" and not self.s3_sse_kms_key_id:
            raise ValueError("s3_sse = aws:kms needs s3_sse_kms_key_id")
        for warn_name, crit_name in [(f"{w}_warning_percent", f"{w}_critical_percent") for w in ("cpu", "memory", "disk")
                                     ] + [("load_per_core_warning", "load_per_core_critical")]:
            warn, crit = getattr(self, warn_name), getattr(self, crit_name)
            if warn > crit:
                raise ValueError(f"{warn_name} ({warn:g}) is above {crit_name} ({crit:g}): "
                                 "the warning level must come first")
        names = [e.name for e in self.endpoints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"endpoint name '{dupes[0]}' is used twice: each endpoint needs its own name")
        sources = [src.name for src in self.log_sources]
        if dupes := sorted({n for n in sources if sources.count(n) > 1}):
            raise ValueError(f"log source name '{dupes[0]}' is used twice: each [[log_sources]] needs its own name")
        if self.keep_daily is not None and "retention_days" in self.model_fields_set \
                and self.retention_days != self.keep_daily:
            raise ValueError(f"retention_days ({self.retention_days}) is the old name of keep_daily "
                             f"({self.keep_daily}): set only keep_daily")
        sets = [fs.name for fs in self.file_sets]
        if dupes := sorted({n for n in sets if sets.count(n) > 1}):
            raise ValueError(f"file set name '{dupes[0]}' is used twice: each [[file_sets]] needs its own name")
        return self

    def file_set(self, name: str) -> FileSet:
        """The [[file_sets]] entry called ``name``; ConfigError naming the configured ones."""
        for fs in self.file_sets:
            if fs.name == name:
                return fs
        known = ", ".join(fs.name for fs in self.file_sets) or "none configured"
        raise ConfigError(f"no file set '{name}' in [[file_sets]] ({known})")

    def for_replica(self) -> Settings:
        """These settings with the replica as the repository (its own endpoint, region and
        profile): what `--from replica` restores and drills from. ConfigError when none is set."""
        if not self.replica_repository:
            raise ConfigError("replica_repository is not set: set BVH_OPS_REPLICA_REPOSITORY (file:///abs/path "
                              "or s3://bucket/prefix) to use the replica")
        return self.model_copy(update={
            "repository": self.replica_repository, "s3_endpoint_url": self.replica_s3_endpoint_url,
            "s3_region": self.replica_s3_region, "aws_profile": self.replica_aws_profile,
            "replica_repository": None, "replica_s3_endpoint_url": None, "replica_aws_profile": None})

    def early_drill_checks(self) -> bool:
        """Whether the drill reads tables during the restore (``drill_early_checks``)."""
        return self.early_drill_reads() is not None

    def early_drill_reads(self) -> str | None:
        """What the drill reads during the restore: "all" (each table's fingerprint and PITR
        side), "pitr" (the append-only tables' PITR side only) or None (nothing)."""
        mode = self.drill_early_checks
        if mode == "auto":
            return "all" if (os.cpu_count() or 1) > self.restore_jobs else "pitr"
        return {"on": "all", "pitr": "pitr"}.get(mode)

    def for_source(self, source: str) -> Settings:
        """``--from primary|replica`` (CLI, standby, drills): these settings, or for_replica's."""
        if source == "replica":
            return self.for_replica()
        if source != "primary":
            raise ConfigError(f"--from {source!r}: use 'primary' or 'replica'")
        return self

    def __repr__(self) -> str:  # pydantic already masks SecretStr; keep the repr short too
        return f"Settings(repository={self.repository!r}, state_dir={str(self.state_dir)!r})"

    # -- accessors that fail with one clear line -------------------------------------------

    def require_database_url(self) -> str:
        if self.database_url is None:
            raise ConfigError("database_url is not set: set BVH_OPS_DATABASE_URL or database_url in bvh-ops.toml")
        return self.database_url.get_secret_value()

    def require_repository(self) -> str:
        if not self.repository:
            raise ConfigError(
                "repository is not set: set BVH_OPS_REPOSITORY to file:///abs/path or s3://bucket/prefix"
            )
        return self.repository

    @field_validator("log_retention_days")
    @classmethod
    def _check_log_retention(cls, value: dict[str, int]) -> dict[str, int]:
        known = ("security", "application", "performance", "debug")
        for category, days in value.items():
            if category == "audit":
                raise ValueError("audit logs are kept permanently: remove 'audit' from log_retention_days")
            if category not in known:
                raise ValueError(f"unknown category '{category}' (one of {', '.join(known)})")
            if days < 1:
                raise ValueError(f"{category}: retention must be at least 1 day")
        return value

    def require_recipients(self) -> list[Path]:
        if not self.recipients:
            raise ConfigError(
                "recipients is not set: run `bvh-ops keygen DIR` and set BVH_OPS_RECIPIENTS=DIR/recipient.pub"
            )
        return list(self.recipients)

    def require_identity(self) -> Path:
        if self.identity is None:
            raise ConfigError(
                "identity is not set: set BVH_OPS_IDENTITY to the private key file (identity.key)"
            )
        return self.identity

    def redacted(self) -> dict[str, object]:
        """Every setting as plain data with secrets masked (for ``config show``)."""
        data = self.model_dump(mode="json")
        for key in ("database_url", "ops_database_url", "drill_scratch_dsn"):
            value = getattr(self, key)
            if value is not None:
                data[key] = redact_dsn(value.get_secret_value())
        if self.notify_webhook_url is not None:
            data["notify_webhook_url"] = "***"
        if self.cache_url is not None:
            data["cache_url"] = redact_dsn(self.cache_url.get_secret_value())
        return _scrub_urls(data)


_URL_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*):[^/@\s]*@")
_URL_SECRET_PARAM = re.compile(r"([?&](?:[^=&]*(?:key|token|secret|password|passwd|pwd|sig|signature|auth)[^=&]*)=)"
                               r"[^&#]*", re.IGNORECASE)


def _scrub_urls(value):
    """Any URL among the settings (an SMS gateway's, say) with its password and secret-looking
    query parameters masked: a credential written into a plain URL setting is still a secret."""
    if isinstance(value, dict):
        return {k: _scrub_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub_urls(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return _URL_SECRET_PARAM.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", value))
    return value


def config_file_path() -> Path | None:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load_settings(**overrides: object) -> Settings:
    """Load and validate settings once; a bad value raises ConfigError naming the field."""
    path = config_file_path()
    if path is not None and not path.exists():
        raise ConfigError(f"config file {path} does not exist: fix {CONFIG_ENV} or create the file")
    if path is not None and not path.is_file():  # a directory was silently read as no settings at all
        raise ConfigError(f"config file {path} is not a file: point {CONFIG_ENV} at the bvh-ops.toml itself")
    _warn_unknown_env()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from None
    except Exception as exc:  # a TOML syntax error surfaces as a decode error
        raise ConfigError(f"config file {path}: {exc}") from None


def _describe(exc: ValidationError, path: Path | None) -> str:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(settings)"
    where = f" in {path}" if path else ""
    if err["type"] == "extra_forbidden":
        return f"unknown config field '{field}'{where}: remove it or fix its spelling (see `bvh-ops config show`)"
    msg = err["msg"].removeprefix("Value error, ")
    env = "BVH_OPS_" + field.split(".")[0].upper()
    return f"config field '{field}'{where} (or {env}) is invalid: {msg}"


_warned: set[str] = set()


def _warn_unknown_env() -> None:
    """One stderr line per misspelled BVH_OPS_* variable (once per process): pydantic-settings
    ignores variables that match no field, so a typo would silently leave a default."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | OTHER_ENV
    for var in sorted(os.environ):
        if not var.upper().startswith(ENV_PREFIX) or var.upper() in known or var in _warned:
            continue
        _warned.add(var)
        # Compared without the shared prefix, which would make every name look close.
        close = difflib.get_close_matches(var.upper().removeprefix(ENV_PREFIX),
                                          [k.removeprefix(ENV_PREFIX) for k in sorted(known)], n=1)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
        sys.stderr.write(f"warning: {var} is not a bvh-ops setting{hint}\n")
