"""Open the repository named in the settings, with this host's signing key and the host keys
whose manifests are trusted (our own plus ``trusted_host_keys``)."""

from __future__ import annotations

from bvh_ops.config import Settings
from bvh_ops.keys import HostKey, load_or_create_host_key
from bvh_ops.repository.repo import Repository
from bvh_ops.storage import open_store


def trusted_keys(settings: Settings, host_key: HostKey, store=None) -> dict[str, str]:
    """Our key and ``trusted_host_keys``; with ``store``, also the retired keys the repository's
    host key transition records lead to from them."""
    from bvh_ops.keys import host_key_id

    keys = {host_key.key_id: host_key.public_b64}
    for pub in settings.trusted_host_keys:
        keys[host_key_id(pub)] = pub
    if store is not None:
        from bvh_ops.repository.transitions import extend_trust, load_transitions

        keys = extend_trust(keys, load_transitions(store))
    return keys


def open_repository(settings: Settings, *, check: bool = True) -> tuple[Repository, HostKey]:
    store = open_store(settings)
    if check:
        store.check()
    host_key = load_or_create_host_key(settings.state_dir)
    return Repository(store, trusted_keys(settings, host_key, store)), host_key


def open_existing_repository(settings: Settings) -> tuple[Repository, HostKey]:
    """open_repository for commands that only read: a ``file://`` repository that is not there is
    said (NotFound, exit 10), never created and reported empty ("0 kept", "no backups")."""
    from bvh_ops.errors import NotFound, StorageError

    repo, host_key = open_repository(settings, check=False)
    root = getattr(repo.store, "root", None)
    if root is not None and root.exists() and not root.is_dir():
        raise StorageError(f"repository {root} is not a directory: fix repository")
    if root is not None and not root.exists():
        raise NotFound(f"no repository at {root}: fix repository, or take the first backup (`bvh-ops backup`)")
    return repo, host_key
