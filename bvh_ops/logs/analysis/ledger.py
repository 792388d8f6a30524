"""Fraud indicators the log cannot show, from the platform database's ledger: deposit followed
by withdrawal with little or no play, and admin balance modifications without a matching wallet
transaction. Their input is database rows as Records (bvh_ops/logs/analysis/sources.py):
``txn.<kind>`` (fields userId, walletId, amount, transactionId, metadata) from ``transactions``
and ``admin.<action>`` (fields admin, target, amount, actionId) from ``admin_actions``, in time
order — the same detector shape as the log-based ones."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from bvh_ops.config import LogAnalysisSettings
from bvh_ops.logs.analysis.detection import Detection, Detector, Tally, detection, evidence_of
from bvh_ops.logs.record import Record

PLAY = ("txn.ticket_purchase",)


class DepositWithdrawal(Detector):
    """A withdrawal of at least ``cashout_min_amount`` within ``cashout_hours`` of a deposit,
    with ticket purchases since that deposit below ``cashout_play_percent`` of it."""

    name, category = "deposit_withdrawal_no_play", "fraud"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.window = timedelta(hours=cfg.cashout_hours)
        # per account: recent deposits [at, amount, play since, evidence], oldest first
        self.deposits: dict[str, deque[list]] = {}
        self.found: dict[str, Tally] = {}

    def feed(self, r: Record) -> None:
        account, amount = r.fields.get("userId"), r.fields.get("amount")
        if not r.event.startswith("txn.") or account is None or not isinstance(amount, int | float):
            return
        account = str(account)
        recent = self.deposits.setdefault(account, deque(maxlen=50))
        while recent and recent[0][0] < r.at - self.window:
            recent.popleft()
        if r.event == "txn.deposit":
            recent.append([r.at, float(amount), 0.0, evidence_of(r)])
        elif r.event in PLAY:
            for d in recent:
                d[2] += abs(float(amount))
        elif r.event == "txn.withdrawal" and abs(amount) >= self.cfg.cashout_min_amount:
            for at, deposited, played, ev in recent:
                if played < deposited * self.cfg.cashout_play_percent / 100:
                    tally = self.found.setdefault(account, Tally(self.cfg.evidence_records))
                    tally.add(at, ev)
                    tally.add(r.at, evidence_of(r))
                    recent.clear()
                    break
        if not recent:
            del self.deposits[account]

    def finish(self, now: datetime) -> list[Detection]:
        return [detection(self.name, self.category, f"account:{a}", t,
                          f"withdrawal within {self.cfg.cashout_hours:g} h of a deposit with play under "
                          f"{self.cfg.cashout_play_percent:g} % of it") for a, t in sorted(self.found.items())]


class AdminBalance(Detector):
    """An admin balance action (``admin_balance_actions``) on a wallet with no transaction on
    that wallet for the same amount within ``admin_match_minutes`` either side (or one whose
    metadata names the action). Undecided until that much time has passed."""

    name, category = "admin_balance_without_transaction", "fraud"

    def __init__(self, cfg: LogAnalysisSettings) -> None:
        self.cfg = cfg
        self.window = timedelta(minutes=cfg.admin_match_minutes)
        self.recent: deque[Record] = deque()     # transactions of the last window
        self.pending: deque[Record] = deque()    # admin actions still waiting for their transaction
        self.found: dict[str, Tally] = {}

    @staticmethod
    def _matches(action: Record, txn: Record) -> bool:
        meta = txn.fields.get("metadata") or {}
        if isinstance(meta, dict) and str(meta.get("admin_action", "")) == str(action.fields.get("actionId")):
            return True
        wallet = str(action.fields.get("target", "")).removeprefix("wallet:")
        amount = action.fields.get("amount")
        return (str(txn.fields.get("walletId")) == wallet and isinstance(amount, int | float)
                and abs(abs(float(txn.fields.get("amount", 0))) - abs(float(amount))) < 0.005)

    def feed(self, r: Record) -> None:
        self._expire(r.at)
        if r.event.startswith("txn."):
            self.recent.append(r)
            matched = [a for a in self.pending if self._matches(a, r) and abs(r.at - a.at) <= self.window]
            for a in matched:
                self.pending.remove(a)
        elif r.event.removeprefix("admin.") in self.cfg.admin_balance_actions:
            if not any(self._matches(r, t) and abs(r.at - t.at) <= self.window for t in self.recent):
                self.pending.append(r)

    def _expire(self, now: datetime) -> None:
        while self.recent and self.recent[0].at < now - self.window:
            self.recent.popleft()
        while self.pending and self.pending[0].at < now - self.window:
            self._unmatched(self.pending.popleft())

    def _unmatched(self, a: Record) -> None:
        self.found.setdefault(f"action:{a.fields.get('actionId')}", Tally(self.cfg.evidence_records)).add(
            a.at, evidence_of(a))

    def finish(self, now: datetime) -> list[Detection]:
        self._expire(now)
        return [detection(self.name, self.category, s, t,
                          f"balance change by {t.evidence[0].get('admin')} on {t.evidence[0].get('target')} with no "
                          f"matching wallet transaction within {self.cfg.admin_match_minutes:g} min")
                for s, t in sorted(self.found.items())]
