"""Shared fixtures: a real embedded PostgreSQL 18 cluster, key pairs, settings builders, moto's
standalone S3 server over HTTP, Debian's PostgreSQL 15 where present, and one session-scoped
Prefect test harness."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

# Prefect reads its settings at import: isolate it before anything imports it.
_PREFECT_HOME = tempfile.mkdtemp(prefix="bvh-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# Generous: a loaded machine starts the CLI's ephemeral server slowly (a bound, not a wait).
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "300"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
for _var in [v for v in os.environ if v.startswith("BVH_OPS_")]:
    del os.environ[_var]
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

import psycopg  # noqa: E402
import pytest  # noqa: E402

from bvh_ops.config import Settings  # noqa: E402
from bvh_ops.demo.sample import load_sample  # noqa: E402
from bvh_ops.keys import write_keypair  # noqa: E402
from bvh_ops.pg.catalog import create_database  # noqa: E402
from bvh_ops.pg.cluster import EmbeddedCluster, free_port  # noqa: E402

PG15_BIN = Path("/usr/lib/postgresql/15/bin")


TESTS_DIR = Path(__file__).parent
# The tiers, one directory each (marker = directory name; registered in pyproject.toml).
TIERS = ("unit", "integration", "flows", "e2e")
# Session fixtures that start something (PostgreSQL, moto, Prefect): never in the unit tier.
STARTS_A_SERVICE = {"pg", "sample_db", "fresh_db", "pg15", "s3_server", "s3_bucket", "s3_lock_bucket", "s3_server_b",
                    "s3_bucket_b", "prefect_harness", "cli_prefect_api"}


def pytest_unconfigure(config):
    """This process's PREFECT_HOME (the harness's database, logs) goes when its session ends
    (each xdist worker has its own): nothing left in /tmp run after run."""
    shutil.rmtree(_PREFECT_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Mark every test with its tier (the directory it lives in), so ``-m unit`` (or ``-m "not
    e2e"``) selects by tier; a unit test that asks for a fixture starting a service is an error."""
    for item in items:
        try:
            tier = item.path.relative_to(TESTS_DIR).parts[0]
        except ValueError:
            continue
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in one of tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "unit" and STARTS_A_SERVICE & set(item.fixturenames):
            used = ", ".join(sorted(STARTS_A_SERVICE & set(item.fixturenames)))
            raise pytest.UsageError(f"{item.nodeid}: a unit test uses {used}; move it to tests/integration/")



@pytest.fixture(scope="session")
def pg(tmp_path_factory) -> EmbeddedCluster:
    """One embedded PostgreSQL 18 for the session."""
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("pg18") / "cluster")
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def sample_db(pg) -> str:
    """The sample lottery database (scale 1), loaded once; tests must not modify it."""
    create_database(pg.dsn(), "lottery")
    load_sample(pg.dsn("lottery"), scale=1)
    return pg.dsn("lottery")


@pytest.fixture
def fresh_db(pg, request):
    """A new empty database; returns a factory (name suffix) -> DSN."""
    made = []

    def make(suffix: str = "") -> str:
        name = f"t_{abs(hash(request.node.nodeid)) % 10**8}_{len(made)}{suffix}"
        create_database(pg.dsn(), name)
        made.append(name)
        return pg.dsn(name)

    yield make
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def keypair(tmp_path_factory) -> tuple[Path, Path]:
    return write_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def repo_dir(tmp_path) -> Path:
    d = tmp_path / "repo"
    d.mkdir()
    return d


@pytest.fixture
def make_settings(keypair, tmp_path):
    """Build Settings directly (no environment), with fast retries for tests."""
    pub, key = keypair

    def make(dsn: str, repository: str, **overrides) -> Settings:
        values = dict(
            database_url=dsn,
            repository=repository,
            recipients=[pub],
            identity=key,
            state_dir=tmp_path / "state",
            task_retries=1,
            retry_delay_seconds=[0.2],
            segment_size_kib=64,
        )
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def env_settings(monkeypatch, keypair, tmp_path):
    """Configure bvh-ops through the environment contract (what flows and the CLI read)."""
    pub, key = keypair

    def apply(dsn: str, repository: str, **extra: str) -> dict[str, str]:
        env = {
            "BVH_OPS_DATABASE_URL": dsn,
            "BVH_OPS_REPOSITORY": repository,
            "BVH_OPS_RECIPIENTS": str(pub),
            "BVH_OPS_IDENTITY": str(key),
            "BVH_OPS_STATE_DIR": str(tmp_path / "state"),
            "BVH_OPS_TASK_RETRIES": "1",
            "BVH_OPS_RETRY_DELAY_SECONDS": "0.2",
            "BVH_OPS_SEGMENT_SIZE_KIB": "64",
        }
        env.update(extra)
        monkeypatch.delenv("BVH_OPS_CONFIG", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return env

    return apply


def _moto_server():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _bucket(endpoint: str, monkeypatch, prefix: str, region: str = "us-east-1", **create) -> str:
    import uuid

    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    where = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    where.update(create)
    boto3.client("s3", endpoint_url=endpoint, region_name=region).create_bucket(Bucket=name, **where)
    return name


@pytest.fixture(scope="session")
def s3_server():
    """moto's standalone S3 API server on 127.0.0.1 (real HTTP, no in-process patching)."""
    yield from _moto_server()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    return _bucket(s3_server, monkeypatch, "bvh")


@pytest.fixture
def s3_lock_bucket(s3_server, monkeypatch):
    """A bucket with S3 Object Lock enabled (and so versioning)."""
    return _bucket(s3_server, monkeypatch, "bvh", ObjectLockEnabledForBucket=True)


@pytest.fixture(scope="session")
def s3_server_b():
    """A second moto S3 server (another endpoint: the replica's "region"). Both servers run in
    this process and so share moto's in-memory backend: use distinct bucket names."""
    yield from _moto_server()


@pytest.fixture
def s3_bucket_b(s3_server_b, monkeypatch):
    """A bucket in eu-central-1 on the second server (the replica's)."""
    return _bucket(s3_server_b, monkeypatch, "bvh-replica", "eu-central-1")


def _pg15_dsn() -> str | None:
    if not PG15_BIN.exists():
        return None
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version_num").fetchone()[0]
            if not version.startswith("15"):
                return None
    except psycopg.Error:
        return None
    return "postgresql://postgres@127.0.0.1:5432/{db}"


@pytest.fixture(scope="session")
def pg15():
    """Debian's PostgreSQL 15 on 127.0.0.1:5432 (skipped cleanly where absent)."""
    template = _pg15_dsn()
    if template is None:
        pytest.skip("Debian PostgreSQL 15 not present on 127.0.0.1:5432")
    return template


@pytest.fixture(scope="session")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield


@pytest.fixture
def cli_prefect_api(prefect_harness, monkeypatch):
    """CLI children that run a flow (`backup`, `drill`, `archive`) talk to this worker's Prefect
    test server (PREFECT_API_URL, as an operator with a `prefect server` configures it) instead
    of each starting an ephemeral one (20-60 s on a loaded machine). The ephemeral path itself is
    what test_orphans, test_cli and the killed-backup tests run (they leave this fixture out)."""
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
