"""Configuration: file + environment, bad values fail at start naming the field, secrets hidden."""

from __future__ import annotations

import pytest

from bvh_ops.config import load_settings, redact_dsn
from bvh_ops.errors import ConfigError


@pytest.fixture
def cfg_file(tmp_path, monkeypatch):
    path = tmp_path / "bvh-ops.toml"
    monkeypatch.setenv("BVH_OPS_CONFIG", str(path))
    return path


def test_file_values_and_env_override(cfg_file, monkeypatch):
    cfg_file.write_text('repository = "file:///srv/a"\ncompression_level = 5\n')
    assert load_settings().compression_level == 5
    monkeypatch.setenv("BVH_OPS_COMPRESSION_LEVEL", "9")
    s = load_settings()
    assert s.compression_level == 9 and s.repository == "file:///srv/a"


def test_unknown_field_names_the_field(cfg_file):
    cfg_file.write_text('repository = "file:///srv/a"\nretention_dayz = 3\n')
    with pytest.raises(ConfigError, match="unknown config field 'retention_dayz'"):
        load_settings()


@pytest.mark.parametrize("field, value, message", [
    ("BVH_OPS_REPOSITORY", "ftp://x/y", "'repository'"),
    ("BVH_OPS_REPOSITORY", "file://relative/path", "absolute path"),
    ("BVH_OPS_DATABASE_URL", "mysql://u@h/db", "'database_url'"),
    ("BVH_OPS_S3_ENDPOINT_URL", "localhost:9000", "'s3_endpoint_url'"),
    ("BVH_OPS_COMPRESSION_LEVEL", "99", "'compression_level'"),
])
def test_malformed_values_name_the_field(monkeypatch, field, value, message):
    monkeypatch.setenv(field, value)
    with pytest.raises(ConfigError, match=message):
        load_settings()


def test_missing_config_file_is_clear(monkeypatch, tmp_path):
    monkeypatch.setenv("BVH_OPS_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_password_never_in_repr_or_redacted_view(monkeypatch):
    monkeypatch.setenv("BVH_OPS_DATABASE_URL", "postgresql://ops:hunter2-Secret@db.example:5432/lottery")
    s = load_settings()
    assert "hunter2-Secret" not in repr(s)
    assert "hunter2-Secret" not in str(s.redacted())
    assert s.redacted()["database_url"] == "postgresql://ops:***@db.example:5432/lottery"
    assert s.require_database_url().endswith("/lottery")


def test_redact_key_value_dsn():
    assert redact_dsn("host=h password=abc dbname=x") == "host=h password=*** dbname=x"


def test_missing_required_value_says_how_to_fix():
    with pytest.raises(ConfigError, match="BVH_OPS_REPOSITORY"):
        load_settings().require_repository()


SECRET = "Hunter2-s3cret"


@pytest.mark.parametrize("field", ["BVH_OPS_DATABASE_URL", "BVH_OPS_OPS_DATABASE_URL", "BVH_OPS_DRILL_SCRATCH_DSN"])
@pytest.mark.parametrize("dsn, message", [
    (f"postgresql://postgres:{SECRET}@[::1]x:55432/db", "not a valid connection URI"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db?foo=bar", "unknown connection parameter"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/db", "port 'notaport'"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db?port=notaport", "port 'notaport'"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:70000/db", "between 1 and 65535"),
    (f"postgresql://postgres:{SECRET}@[::1:5432/db", "not a valid connection URI"),
    (f"postgresql://postgres:{SECRET}@/db", "no host"),
    (f"postgresql://postgres:{SECRET}@/db?host=h1,h2&port=5432,5433,5434", "3 ports for 2 hosts"),
    # an unencoded '/' or '@' in the password: libpq would read part of it as the port, host or database
    (f"postgresql://postgres:{SECRET[:5]}/{SECRET[5:]}@127.0.0.1:5432/db", "percent-encode '@' as %40 and '/' as %2F"),
    (f"postgresql://postgres:{SECRET[:5]}@{SECRET[5:]}@127.0.0.1:5432/db", "percent-encode '@' as %40"),
    (f"postgresql://postgres:{SECRET[:5]}?{SECRET[5:8]}@{SECRET[8:]}@127.0.0.1:5432/db", "percent-encode '@' as %40"),
    ("postgresql://db.example?sslmode=require&application_name=bvh@prod/db", "percent-encode '?' in the user name"),
    (f"postgresql://u:{SECRET[:4]}%cd{SECRET[4:]}@h/db", "not UTF-8"),
])
def test_malformed_dsn_fails_at_load_without_the_password(monkeypatch, field, dsn, message):
    monkeypatch.setenv(field, dsn)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    name = field.removeprefix("BVH_OPS_").lower()
    assert f"'{name}'" in text and message in text and "\n" not in text
    assert SECRET not in text


@pytest.mark.parametrize("dsn", [
    "postgresql://ops:pw@db.example:5432/lottery",
    "postgres://ops@db.example/lottery?sslmode=require&connect_timeout=5",
    "postgresql://ops:p%40ss@[::1]:5432/lottery",
    "postgresql://ops@h1:5432,h2:5433/lottery?target_session_attrs=read-write",
    "postgresql://postgres@/lottery?host=/var/run/postgresql",
    "postgresql://ops:pa?ss#w@db.example:5432/lottery",       # '?' and '#' in a password are libpq's too
    "postgres://ops@db.example?host=/tmp/sock@x",             # an '@' in the query, not the host
    "postgresql://ops@[::1]:5432,[::2]:5433/lottery",
])
def test_valid_dsns_load(monkeypatch, dsn):
    monkeypatch.setenv("BVH_OPS_DATABASE_URL", dsn)
    assert load_settings().require_database_url() == dsn


@pytest.mark.parametrize("dsn, shown", [
    (f"postgresql://ops@db.example/lottery?password={SECRET[:5]} {SECRET[5:]}", "postgresql://ops@db.example/lottery?password=***"),
    (f"postgresql://ops@h/db?sslmode=require&password={SECRET}&application_name=x",
     "postgresql://ops@h/db?sslmode=require&password=***&application_name=x"),
    (f"postgresql://us?er:{SECRET}@h/db", "postgresql://us?er:***@h/db"),
    (f"host=h password={SECRET[:5]}&{SECRET[5:]} dbname=x", "host=h password=*** dbname=x"),
    (f"host=h password={SECRET[:5]}\\ {SECRET[5:]} dbname=x", "host=h password=*** dbname=x"),
    (f"host=h password='{SECRET[:5]} {SECRET[5:]}' dbname=x", "host=h password=*** dbname=x"),
])
def test_no_part_of_a_password_shows(dsn, shown):
    from bvh_ops.dsn import scrub

    assert redact_dsn(dsn) == shown
    for part in (SECRET[:5], SECRET[5:]):
        assert part not in scrub(f'could not connect with "{dsn}"', dsn)


def test_redact_malformed_dsn():
    assert redact_dsn(f"postgresql://postgres:{SECRET}@[::1]x:55432/db") == "postgresql://postgres:***@[::1]x:55432/db"
    # a password holding an unencoded '@' or '/': no part of it shown
    for raw in (f"{SECRET[:5]}@{SECRET[5:]}", f"{SECRET[:5]}/{SECRET[5:]}", f"{SECRET[:5]}?{SECRET[5:]}",
                f"{SECRET[:5]}#{SECRET[5:]}"):
        assert redact_dsn(f"postgresql://u:{raw}@127.0.0.1:1/db?sslmode=require") == \
            "postgresql://u:***@127.0.0.1:1/db?sslmode=require"


@pytest.mark.parametrize("value", ["not-base64!", "AAAA", "YWJj" * 11 + "YQ=="])
def test_bad_trusted_host_key_names_the_field(monkeypatch, value):
    monkeypatch.setenv("BVH_OPS_TRUSTED_HOST_KEYS", value)
    with pytest.raises(ConfigError, match="'trusted_host_keys'.*not an Ed25519 public key"):
        load_settings()


def test_trusted_host_keys_accept_real_public_keys(monkeypatch, tmp_path):
    from bvh_ops.keys import load_or_create_host_key

    keys = [load_or_create_host_key(tmp_path / n).public_b64 for n in ("a", "b")]
    monkeypatch.setenv("BVH_OPS_TRUSTED_HOST_KEYS", ",".join(keys))
    assert load_settings().trusted_host_keys == keys


def test_empty_state_dir_is_refused(monkeypatch, cfg_file):
    cfg_file.write_text('repository = "file:///srv/a"\n')
    monkeypatch.setenv("BVH_OPS_STATE_DIR", "")
    with pytest.raises(ConfigError, match="'state_dir'.*must not be empty"):
        load_settings()
    monkeypatch.delenv("BVH_OPS_STATE_DIR")
    cfg_file.write_text('state_dir = ""\n')
    with pytest.raises(ConfigError, match="'state_dir'.*must not be empty"):
        load_settings()


def test_misspelled_env_variable_warns_with_the_closest_setting(monkeypatch, capsys):
    import bvh_ops.config

    monkeypatch.setattr(bvh_ops.config, "_warned", set())
    monkeypatch.setenv("BVH_OPS_DATABSE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("BVH_OPS_CONFIG", "")  # not a setting, but ours: no warning
    monkeypatch.setenv("BVH_OPS_PROJECT_DIR", "/srv/bvh-ops")
    load_settings()
    load_settings()  # once per process
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: BVH_OPS_DATABSE_URL is not a bvh-ops setting (did you mean BVH_OPS_DATABASE_URL?)"]


def test_unrelated_env_variable_warns_without_a_guess(monkeypatch, capsys):
    import bvh_ops.config

    monkeypatch.setattr(bvh_ops.config, "_warned", set())
    monkeypatch.setenv("BVH_OPS_XYZZY", "1")
    load_settings()
    assert capsys.readouterr().err == "warning: BVH_OPS_XYZZY is not a bvh-ops setting\n"


# -- monitoring ---------------------------------------------------------------------------

ENDPOINT = '[[endpoints]]\nname = "api-health"\nservice = "api"\nurl = "{url}"\nconditions = [{conds}]\n'


def test_endpoints_parse_with_defaults(cfg_file):
    cfg_file.write_text(ENDPOINT.format(url="http://127.0.0.1:8080/api/health",
                                        conds='"[STATUS] == 200", "[BODY].status == healthy"')
                        + '[[endpoints]]\nname = "web"\nservice = "frontend"\nurl = "https://example.org/"\n')
    s = load_settings()
    api, web = s.endpoints
    assert [c.text for c in api.conditions] == ["[STATUS] == 200", "[BODY].status == healthy"]
    assert (api.timeout_seconds, api.method) == (5.0, "GET")
    assert [c.text for c in web.conditions] == ["[STATUS] == 200"]  # the default condition
    assert s.redacted()["endpoints"][0]["conditions"] == ["[STATUS] == 200", "[BODY].status == healthy"]


@pytest.mark.parametrize("url, conds, message", [
    ("http://h/x", '"[STATUS] = 200"', "endpoint 'api-health': condition '[STATUS] = 200': expected"),
    ("http://h/x", '"[RESPONSE_TIME] < fast"', "endpoint 'api-health': condition '[RESPONSE_TIME] < fast'"),
    ("http://h/x", '"[BODY].status === healthy"', "endpoint 'api-health': condition '[BODY].status === healthy'"),
    ("http://h/x", '"[CERTIFICATE_EXPIRATION] > 48h"', "needs an https:// URL"),
    ("ftp://h/x", '"[STATUS] == 200"', "endpoint 'api-health': url 'ftp://h/x' must be http(s)"),
    ("http:///x", '"[STATUS] == 200"', "must be http(s)"),
    ("http://h:99999/x", '"[STATUS] == 200"', "invalid port"),
])
def test_malformed_endpoint_fails_at_load_naming_endpoint_and_condition(cfg_file, url, conds, message):
    cfg_file.write_text(ENDPOINT.format(url=url, conds=conds))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "config field 'endpoints.0'" in str(info.value)
    assert message in str(info.value)


def test_duplicate_endpoint_names_fail(cfg_file):
    one = ENDPOINT.format(url="http://h/x", conds='"[STATUS] == 200"')
    cfg_file.write_text(one + one)
    with pytest.raises(ConfigError, match="endpoint name 'api-health' is used twice"):
        load_settings()


def test_endpoints_from_the_environment_as_json(monkeypatch):
    monkeypatch.setenv("BVH_OPS_ENDPOINTS", '[{"name": "a", "service": "api", "url": "http://h/", '
                                            '"conditions": ["[STATUS] == 204"], "timeout_seconds": 2}]')
    (ep,) = load_settings().endpoints
    assert ep.timeout_seconds == 2 and ep.conditions[0].number == 204


def test_monitoring_defaults_are_the_runbooks():
    s = load_settings()
    assert s.monitor_interval_seconds == 30 and s.cache_url is None and [str(p) for p in s.disk_paths] == ["/"]
    assert (s.response_time_warning_ms, s.memory_warning_percent, s.cpu_warning_percent) == (1000, 85, 80)
    assert (s.error_rate_warning_percent, s.uptime_warning_percent) == (1.0, 99.0)
    assert (s.disk_warning_percent, s.disk_critical_percent) == (85, 95)
    assert (s.daily_backup_max_age_hours, s.incremental_backup_max_age_hours,
            s.incremental_backup_grace_hours, s.drill_max_age_days) == (26, 6, 1, 8)


@pytest.mark.parametrize("env, value, message", [
    ("BVH_OPS_CPU_WARNING_PERCENT", "97", "cpu_warning_percent (97) is above cpu_critical_percent (95)"),
    ("BVH_OPS_DISK_CRITICAL_PERCENT", "120", "'disk_critical_percent'"),
    ("BVH_OPS_MONITOR_INTERVAL_SECONDS", "1", "'monitor_interval_seconds'"),
    ("BVH_OPS_CACHE_URL", "http://127.0.0.1:6379", "'cache_url'"),
    ("BVH_OPS_CACHE_URL", "redis://127.0.0.1:notaport", "invalid port"),
])
def test_bad_monitoring_values_name_the_field(monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings()
    assert message in str(info.value)


def test_cache_password_is_redacted_and_disk_paths_split(monkeypatch):
    monkeypatch.setenv("BVH_OPS_CACHE_URL", f"redis://:{SECRET}@127.0.0.1:6379/0")
    monkeypatch.setenv("BVH_OPS_DISK_PATHS", "/, /var/lib/postgresql")
    s = load_settings()
    assert SECRET not in repr(s) and SECRET not in str(s.redacted())
    assert s.redacted()["cache_url"] == "redis://:***@127.0.0.1:6379/0"
    assert [str(p) for p in s.disk_paths] == ["/", "/var/lib/postgresql"]


# -- maintenance windows ------------------------------------------------------------------

def test_maintenance_windows_parse_as_utc(cfg_file):
    cfg_file.write_text('[[maintenance_windows]]\nstart = "2026-10-04T02:00:00"\nend = "2026-10-04T03:30:00Z"\n'
                        'description = "PostgreSQL minor upgrade"\n'
                        '[[maintenance_windows]]\nstart = "2026-10-05T04:00:00+02:00"\nend = "2026-10-05T05:00:00+02:00"\n')
    a, b = load_settings().maintenance_windows
    assert a.start.isoformat() == "2026-10-04T02:00:00+00:00" and a.description == "PostgreSQL minor upgrade"
    assert b.start.isoformat() == "2026-10-05T02:00:00+00:00" and b.description == ""


@pytest.mark.parametrize("body, message", [
    ('start = "2026-10-04T03:00:00Z"\nend = "2026-10-04T02:00:00Z"\n', "'maintenance_windows.0.end'"),
    ('start = "2026-10-04T03:00:00Z"\nend = "2026-10-04T03:00:00Z"\n', "must be after start"),
    ('start = "yesterday"\nend = "2026-10-04T03:00:00Z"\n', "'maintenance_windows.0.start'"),
    ('end = "2026-10-04T03:00:00Z"\n', "'maintenance_windows.0.start'"),
    ('start = "2026-10-04T03:00:00Z"\nend = "2026-10-04T04:00:00Z"\nwhy = "x"\n', "maintenance_windows.0.why"),
])
def test_malformed_maintenance_window_names_the_field(cfg_file, body, message):
    cfg_file.write_text("[[maintenance_windows]]\n" + body)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert message in str(info.value)


@pytest.mark.parametrize("table, message", [
    ('smtp_port = 70000', "'alerting.smtp_port'"),
    ('email_to = ["ops.example.com"]', "'alerting.email_to'"),
    ('webhook_url = "hooks.slack.com/services/T0/B0/SECRETTOKEN"', "'alerting.webhook_url'"),
    ('webhook_format = "teams"', "'alerting.webhook_format'"),
    ('sms_gateway_url = "ftp://gw"', "'alerting.sms_gateway_url'"),
    ('smtp_host = "mail"\nemail_from = "ops@example.com"', "email_to is not"),
    ('sms_gateway_url = "https://gw"\nsms_account_sid = "AC1"\nsms_from = "+1"\nsms_to = ["+2"]',
     "sms_auth_token is not"),
    ('smtp_usernme = "x"', "unknown config field 'alerting.smtp_usernme'"),
])
def test_alerting_table_fails_at_load_naming_the_field(cfg_file, table, message):
    cfg_file.write_text(f"[alerting]\n{table}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_settings()
    assert "SECRETTOKEN" not in str(err.value)


def test_alerting_table_loads_with_secrets_hidden(cfg_file):
    cfg_file.write_text('[alerting]\nsmtp_host = "mail"\nemail_from = "ops@example.com"\n'
                        'email_to = ["a@example.com"]\nsmtp_username = "u"\nsmtp_password = "pw-SECRET"\n'
                        'webhook_url = "https://hooks.example/T/SECRET"\nwebhook_format = "discord"\n')
    s = load_settings()
    assert s.alerting.email_to == ["a@example.com"] and s.alerting.webhook_format == "discord"
    assert s.alerting.smtp_password.get_secret_value() == "pw-SECRET"
    assert "SECRET" not in str(s.redacted()) and "SECRET" not in repr(s.alerting)


def test_for_source_picks_the_repository_and_refuses_anything_else():
    from bvh_ops.config import Settings

    s = Settings(repository="s3://primary/p", s3_endpoint_url="http://a:1", replica_repository="s3://replica/r",
                 replica_s3_endpoint_url="http://b:2", replica_s3_region="eu-west-1")
    assert s.for_source("primary") is s
    r = s.for_source("replica")
    assert (r.repository, r.s3_endpoint_url, r.s3_region, r.replica_repository) == \
        ("s3://replica/r", "http://b:2", "eu-west-1", None)
    with pytest.raises(ConfigError, match="--from 'elsewhere': use 'primary' or 'replica'"):
        s.for_source("elsewhere")
    with pytest.raises(ConfigError, match="replica_repository is not set"):
        Settings(repository="s3://primary/p").for_source("replica")


@pytest.mark.parametrize(("mode", "cores", "jobs", "reads"), [
    ("auto", 2, 2, "pitr"), ("auto", 8, 2, "all"), ("auto", 4, 4, "pitr"),
    ("on", 2, 2, "all"), ("pitr", 8, 2, "pitr"), ("off", 8, 2, None)])
def test_what_the_drill_reads_during_the_restore(monkeypatch, mode, cores, jobs, reads):
    """auto: every table early only with cores to spare beside pg_restore's jobs; else only the
    append-only tables' PITR side (on 2 cores the full early reads slowed the restore past its
    bound, docs/BENCHMARKS.md goal 3)."""
    monkeypatch.delenv("BVH_OPS_CONFIG", raising=False)
    monkeypatch.setenv("BVH_OPS_DRILL_EARLY_CHECKS", mode)
    monkeypatch.setenv("BVH_OPS_RESTORE_JOBS", str(jobs))
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    settings = load_settings()
    assert settings.early_drill_reads() == reads
    assert settings.early_drill_checks() is (reads is not None)
