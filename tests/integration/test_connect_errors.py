"""Connection failures as the operator reads them: where (host:port), why, never the password;
a malformed connection string is a configuration error, not a "transient" one to retry."""

from __future__ import annotations

import pytest

from bvh_ops.errors import ConfigError, DatabaseError, DatabaseUnavailable, TransientError
from bvh_ops.pg.conn import connect
from tests.conftest import free_port

SECRET = "Hunter2-s3cret"


def test_unreachable_names_host_port_and_reason():
    port = free_port()
    with pytest.raises(DatabaseUnavailable) as caught:
        connect(f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/lottery", timeout=3)
    assert str(caught.value) == (f"database unreachable at 127.0.0.1:{port} (connection refused): "
                                 "is PostgreSQL running there and accepting connections?")


def test_refused_login_names_host_port_without_the_password(pg):
    with pytest.raises(DatabaseError) as caught:
        connect(pg.dsn().replace(f":{pg.password}@", f":{SECRET}@"), timeout=5)
    assert not isinstance(caught.value, TransientError)
    assert str(caught.value) == (f"cannot connect to the database at 127.0.0.1:{pg.port}: "
                                 'password authentication failed for user "postgres"')


def test_missing_database_names_it_and_where(pg):
    with pytest.raises(DatabaseError) as caught:
        connect(pg.dsn("no_such_db"), timeout=5)
    text = str(caught.value)
    assert not isinstance(caught.value, TransientError)
    assert f"at 127.0.0.1:{pg.port}" in text and '"no_such_db" does not exist' in text
    assert "create it first" in text  # what to do about it
    assert pg.password not in text


@pytest.mark.parametrize("dsn, needle", [
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db?port=notaport", "notaport"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:70000/db", "70000"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db?sslmode=bogus", "bogus"),
    (f"postgresql://postgres:{SECRET}@[::1]x:5432/db", "unexpected character"),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/db?foo=bar", "foo"),
])
def test_malformed_connection_string_is_not_retried_and_hides_the_password(dsn, needle):
    # Checked at config load too; connect() is also reached by DSNs from the command line.
    with pytest.raises(ConfigError) as caught:
        connect(dsn, timeout=3)
    assert not isinstance(caught.value, TransientError)
    assert needle in str(caught.value) and SECRET not in str(caught.value)


def test_ssl_required_of_a_server_without_it_is_a_configuration_error(pg15):
    """It was "database unreachable" (transient): every task retried what no retry mends."""
    import psycopg

    from bvh_ops.errors import ConfigError

    with psycopg.connect(pg15.format(db="postgres")) as conn:
        if conn.execute("SHOW ssl").fetchone()[0] == "on":
            pytest.skip("this PostgreSQL 15 has SSL on")
    with pytest.raises(ConfigError, match="does not support SSL, and the DSN requires it"):
        connect(pg15.format(db="postgres") + ("&" if "?" in pg15 else "?") + "sslmode=require", timeout=5)
