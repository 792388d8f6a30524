"""One exception hierarchy; the CLI maps each class to an exit code and prints one line."""


class BvhOpsError(Exception):
    """Base of every expected failure. ``str(err)`` is the one line shown to the operator."""

    exit_code = 1


class ConfigError(BvhOpsError):
    """A configuration value is missing or wrong; the message names the field and the fix."""

    exit_code = 2


class StorageError(BvhOpsError):
    """The repository (file:// or s3://) refused or failed an operation."""

    exit_code = 3


class ObjectLocked(StorageError):
    """The object is under an S3 Object Lock (retain-until in the future): it cannot be deleted
    yet. Retention reports such backups as HELD instead of asking."""


class AlreadyExists(StorageError):
    """A conditional write (``if_absent``) found its key taken: another writer was first."""


class TransientError(BvhOpsError):
    """A failure worth retrying (connection refused, throttling, a reset socket)."""

    exit_code = 4


class TransientStorageError(TransientError, StorageError):
    """A storage failure worth retrying (5xx, throttling, connection reset)."""


class DatabaseError(BvhOpsError):
    """PostgreSQL refused an operation in a way retrying will not fix (permissions, missing objects)."""

    exit_code = 5


class DatabaseUnavailable(TransientError, DatabaseError):
    """The database could not be reached (refused, timed out, starting up)."""


class ToolError(BvhOpsError):
    """A PostgreSQL client tool (pg_dump, pg_restore, ...) exited non-zero; carries its stderr."""

    exit_code = 6


class CryptoError(BvhOpsError):
    """Decryption or authentication failed: wrong key, tampered or truncated data."""

    exit_code = 7


class IntegrityError(BvhOpsError):
    """A backup failed verification or a restored copy does not match its source."""

    exit_code = 8


class ConcurrencyError(BvhOpsError):
    """Another run of the same procedure on the same target holds the lock."""

    exit_code = 9


class NotFound(BvhOpsError):
    """A named backup or object does not exist."""

    exit_code = 10
