"""The key-rotation planner (pure): which sealed items need their data key re-sealed, which must
be re-encrypted, and whether the rotation asked for is allowed at all.

An *item* is one thing that holds data-key envelopes: a backup (its signed manifest), a WAL
file or a log archive (its index entry), a file-set run's data-key record. Format-3 items are
*rewrapped* (new envelopes beside the untouched object); format-2 items carry their envelopes in
the object's authenticated header, so changing them means *rewriting* the object.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bvh_ops.errors import ConfigError

KINDS = ("backup", "wal", "log", "files")


@dataclass(frozen=True)
class Item:
    """What the inventory knows of one sealed item without opening it."""

    kind: str  # backup | wal | log | files
    ref: str  # backup id, WAL file name, log archive key, data-key id
    version: int  # 2: envelopes in the object header; 3: beside it
    key_ids: tuple[str, ...]  # recipients its data key is sealed to now
    pending: bool = False  # an interrupted in-place rewrite to finish
    rewritable: bool = True  # False: an item this version cannot rotate (reported, with ``note``)
    note: str = ""  # why it cannot be rotated


@dataclass(frozen=True)
class Step:
    item: Item
    action: str  # rewrap | rewrite | skip | left
    reason: str = ""


@dataclass
class Plan:
    target: tuple[str, ...]  # key ids every item is sealed to afterwards
    removed: tuple[str, ...]
    steps: list[Step] = field(default_factory=list)

    def count(self, action: str) -> Counter:
        return Counter(s.item.kind for s in self.steps if s.action == action)

    @property
    def work(self) -> list[Step]:
        return [s for s in self.steps if s.action in ("rewrap", "rewrite")]


def check_request(current: tuple[str, ...], added: tuple[str, ...], removed: tuple[str, ...],
                  configured: tuple[str, ...], inventory: list[Item]) -> tuple[str, ...]:
    """The target recipient set, or ConfigError naming what is wrong with the request.

    ``current``: key ids of the configured recipients; ``added``: the new public keys;
    ``removed``: the key ids to drop. The target is current + added - removed."""
    target = tuple(dict.fromkeys(k for k in (*current, *added) if k not in removed))
    if not target:
        raise ConfigError("refusing to remove the last recipient: nothing could open the repository afterwards; "
                          "add a new key with --add NEW.pub in the same rotation")
    for kid in removed:
        if kid in configured:
            raise ConfigError(f"key {kid} is still in the configured recipients: new backups would keep being "
                              "sealed to it; remove it from `recipients` (BVH_OPS_RECIPIENTS) first, or in the same "
                              "change, and run the rotation again")
        if not any(kid in it.key_ids for it in inventory):
            raise ConfigError(f"no backup, WAL file, log archive or file set is sealed to key {kid}: check the key id "
                              "(`bvh-ops keys rotate --dry-run --json` lists the key ids in use)")
    return target


def plan_rotation(inventory: list[Item], target: tuple[str, ...], removed: tuple[str, ...] = ()) -> Plan:
    """One step per item: skip when already sealed to exactly ``target`` (a re-run after an
    interruption skips what was done), rewrap format 3, rewrite format 2."""
    plan = Plan(tuple(target), tuple(removed))
    want = set(target)
    for it in inventory:
        if set(it.key_ids) == want and not it.pending:
            plan.steps.append(Step(it, "skip", "sealed to the target set"))
        elif not it.rewritable and it.note:
            plan.steps.append(Step(it, "left", it.note))
        elif it.version >= 3 and not it.pending:
            plan.steps.append(Step(it, "rewrap"))
        elif not it.rewritable:
            plan.steps.append(Step(it, "left", it.note or "format 2: this kind cannot be rewritten by a rotation yet"))
        else:
            plan.steps.append(Step(it, "rewrite", "format 2: re-encrypted into format 3"
                                   + (" (finishing an interrupted rewrite)" if it.pending else "")))
    return plan
