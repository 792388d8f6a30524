"""Endpoint conditions in Gatus's vocabulary (https://gatus.io, "Conditions"), parsed once when the
configuration loads and evaluated against one HTTP observation:

    [STATUS] == 200                         [RESPONSE_TIME] < 1000          (milliseconds)
    [BODY].status == healthy                [BODY].checks.database.status == up
    [BODY].items[0].id != 0                 [CERTIFICATE_EXPIRATION] > 48h
    [STATUS] == any(200, 204)               [BODY].version == pat(2.*)
    len([BODY].draws) > 0                   has([BODY].errors) == false
    [CONNECTED] == true

Operators ``== != < <= > >=``. ``==``/``!=`` compare numbers as numbers when both sides are
numbers, else as text (JSON ``true``/``null`` read as ``true``/``null``); ordering operators need
numbers. Durations (``500ms``, ``30s``, ``5m``, ``48h``, ``7d``, compounds like ``1h30m``) are read
as milliseconds, the unit of ``[RESPONSE_TIME]`` and ``[CERTIFICATE_EXPIRATION]``.

Differences from Gatus, on purpose:
- the placeholder is always on the left (Gatus accepts it on either side);
- mistakes fail at load, not as a red check at run time: an unknown placeholder or function, an
  ordering operator with ``pat``/``any``, a non-number compared with ``<``, a time placeholder
  compared with text;
- numbers may be decimals (Gatus compares integers); durations also take ``d`` (days);
- ``pat(...)`` uses shell wildcards (``*``, ``?``, ``[...]``; Gatus knows only ``*``);
- a ``[BODY]`` path that is missing, or a body that is not JSON, fails the condition and says so
  (Gatus compares the empty string);
- ``[IP]``, ``[DNS_RCODE]``, ``[DOMAIN_EXPIRATION]`` are not supported (no DNS/WHOIS probe).

Standard library only: the configuration (a lower layer) parses with it, and the monitoring probes
evaluate with it.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

OPERATORS = ("==", "!=", "<=", ">=", "<", ">")
PLACEHOLDERS = ("[STATUS]", "[RESPONSE_TIME]", "[BODY]", "[CERTIFICATE_EXPIRATION]", "[CONNECTED]")
# Placeholders measured in milliseconds: their right side may be a duration.
TIME_PLACEHOLDERS = ("[RESPONSE_TIME]", "[CERTIFICATE_EXPIRATION]")

_SPLIT = re.compile(r"^\s*(?P<left>\S.*?)\s*(?P<op>==|!=|<=|>=|<|>)\s*(?P<right>.*?)\s*$")
_FUNC = re.compile(r"^(?P<fn>[a-z]+)\((?P<arg>.*)\)$", re.DOTALL)
_PATH_STEP = re.compile(r"\.(?P<key>[^.\[\]]+)|\[(?P<index>-?\d+)\]")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_MS = {"ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3, "d": 86400e3}
_MISSING = object()


class ConditionError(ValueError):
    """A condition that cannot be parsed; the message says why (the caller names the endpoint)."""


def parse_duration_ms(text: str) -> float | None:
    """``48h`` → 172800000.0; ``1h30m`` → 5400000.0; None when ``text`` is no duration."""
    text = text.strip()
    if not text or _DURATION_PART.sub("", text):
        return None
    return sum(float(n) * _UNIT_MS[u] for n, u in _DURATION_PART.findall(text))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Observation:
    """What one request showed. ``cert_expiration_ms``: time left on the server's certificate
    (https only); ``connected``: a response arrived at all."""

    connected: bool
    status: int | None = None
    response_time_ms: float | None = None
    body: bytes = b""
    cert_expiration_ms: float | None = None
    _json: list = field(default_factory=list, compare=False, repr=False)

    def json(self) -> Any:
        """The body as JSON (parsed once), or ``_MISSING`` when it is not JSON."""
        if not self._json:
            try:
                self._json.append(json.loads(self.body))
            except ValueError:
                self._json.append(_MISSING)
        return self._json[0]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str  # Gatus style: the condition with the observed value, "[STATUS] (500) == 200"


@dataclass(frozen=True)
class Condition:
    text: str                     # as configured
    left: str                     # the left side as written
    placeholder: str              # one of PLACEHOLDERS
    path: tuple[str | int, ...]   # [BODY] path steps (keys and list indexes)
    function: str | None          # len | has | None
    op: str
    right: str                    # the literal right side (for == / != against text)
    number: float | None          # the right side as a number (durations in ms)
    pattern: str | None           # pat(...)
    choices: tuple[str, ...]      # any(...)

    def evaluate(self, obs: Observation) -> Outcome:
        value = self._left(obs)
        shown = "missing" if value is _MISSING else _text(value)
        ok = value is not _MISSING and self._compare(value)
        return Outcome(ok, f"{self.left} ({shown}) {self.op} {self.right}")

    def _left(self, obs: Observation) -> Any:
        if self.placeholder == "[CONNECTED]":
            return obs.connected
        if not obs.connected:
            return _MISSING
        if self.placeholder == "[STATUS]":
            return obs.status
        if self.placeholder == "[RESPONSE_TIME]":
            return obs.response_time_ms
        if self.placeholder == "[CERTIFICATE_EXPIRATION]":
            return _MISSING if obs.cert_expiration_ms is None else obs.cert_expiration_ms
        # [BODY]
        if not self.path and self.function is None:
            return obs.body.decode("utf-8", "replace")
        value = obs.json() if self.path else obs.body.decode("utf-8", "replace")
        for step in self.path:
            value = _step(value, step)
        if self.function == "has":
            return value is not _MISSING
        if self.function == "len":
            return len(value) if isinstance(value, str | list | dict) else _MISSING
        return value

    def _compare(self, value: Any) -> bool:
        if self.pattern is not None:
            return fnmatch.fnmatchcase(_text(value), self.pattern) == (self.op == "==")
        if self.choices:
            return (_text(value) in self.choices) == (self.op == "==")
        left = _as_number(value)
        if self.op in ("==", "!="):
            if left is not None and self.number is not None:
                equal = left == self.number
            else:
                equal = _text(value) == self.right
            return equal == (self.op == "==")
        if left is None or self.number is None:
            return False
        return {"<": left < self.number, "<=": left <= self.number,
                ">": left > self.number, ">=": left >= self.number}[self.op]


def _step(value: Any, step: str | int) -> Any:
    if isinstance(step, int) and isinstance(value, list) and -len(value) <= step < len(value):
        return value[step]
    if isinstance(step, str) and isinstance(value, dict) and step in value:
        return value[step]
    return _MISSING


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return _number(value)
    return None


def _text(value: Any) -> str:
    if value is _MISSING:
        return "missing"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))[:80]
    return str(value)


def parse_condition(text: str) -> Condition:
    """Parse one condition; raises ConditionError saying what is wrong with it."""
    m = _SPLIT.match(text or "")
    if not m:
        raise ConditionError(f"expected '<placeholder> <operator> <value>' with one of {' '.join(OPERATORS)}")
    left, op, right = m.group("left"), m.group("op"), m.group("right")
    if not right:
        raise ConditionError(f"nothing to compare with after '{op}'")
    if left.rstrip()[-1] in "=<>!":
        raise ConditionError(f"'{left.rstrip()[-1]}{op}' is not an operator: use one of {' '.join(OPERATORS)}")
    if right[0] in "=<>!":
        raise ConditionError(f"'{op}{right[0]}' is not an operator: use one of {' '.join(OPERATORS)}")
    function = None
    fm = _FUNC.match(left)
    if fm:
        function, left = fm.group("fn"), fm.group("arg").strip()
        if function not in ("len", "has"):
            raise ConditionError(f"unknown function {function}() on the left: use len() or has()")
    placeholder = next((p for p in PLACEHOLDERS if left.startswith(p)), None)
    if placeholder is None:
        raise ConditionError(f"'{left}' is not a placeholder: use one of {', '.join(PLACEHOLDERS)}")
    path = _parse_path(left[len(placeholder):], placeholder)
    if function and placeholder != "[BODY]":
        raise ConditionError(f"{function}() applies to [BODY] only")

    pattern, choices, number = None, (), None
    rf = _FUNC.match(right)
    if rf:
        fn, arg = rf.group("fn"), rf.group("arg")
        if fn not in ("pat", "any"):
            raise ConditionError(f"unknown function {fn}() on the right: use pat(...) or any(...)")
        if op not in ("==", "!="):
            raise ConditionError(f"{fn}(...) works with == and != only, not {op}")
        if fn == "pat":
            pattern = arg.strip()
        else:
            choices = tuple(c.strip() for c in arg.split(","))
            if not all(choices):
                raise ConditionError("any(...) needs a comma-separated list of values")
    else:
        number = _number(right)
        if placeholder in TIME_PLACEHOLDERS and number is None:
            number = parse_duration_ms(right)
            if number is None:
                raise ConditionError(f"{placeholder} is in milliseconds: compare it with a number or a "
                                     f"duration such as 500ms, 30s, 48h, 7d (not '{right}')")
        if op not in ("==", "!=") and number is None:
            raise ConditionError(f"'{op}' needs a number on the right, not '{right}'")
        if placeholder == "[STATUS]" and number is None:
            raise ConditionError(f"[STATUS] is a number, not '{right}'")
        if function == "has" and right not in ("true", "false"):
            raise ConditionError("has(...) is true or false")
    return Condition(text.strip(), m.group("left"), placeholder, path, function, op, right, number, pattern, choices)


def _parse_path(rest: str, placeholder: str) -> tuple[str | int, ...]:
    if not rest:
        return ()
    if placeholder != "[BODY]":
        raise ConditionError(f"{placeholder} takes no path ('{rest}')")
    steps: list[str | int] = []
    pos = 0
    while pos < len(rest):
        m = _PATH_STEP.match(rest, pos)
        if not m:
            raise ConditionError(f"bad [BODY] path at '{rest[pos:]}': use [BODY].key.sub or [BODY].list[0]")
        steps.append(m.group("key") if m.group("key") is not None else int(m.group("index")))
        pos = m.end()
    return tuple(steps)
