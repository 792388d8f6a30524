"""Forecasts over one daily capacity series (pure: points and ``today`` in, a Forecast out).

Per series: the usable segment (after the last counter reset or step change), then a linear fit
and Holt-Winters (statsmodels' ExponentialSmoothing; additive weekly seasonality once three weeks
are there), the one with the lower backtest error (the last quarter of the history held out,
7..28 days) kept. Intervals: the linear prediction interval, or Holt-Winters' simulated 2.5/97.5 %
paths. Days until a limit: when the expected path crosses it, and when the upper (low) and the
lower (high) bound do.

Never a confident number where there is none: too little history, a constant or a shrinking
series, a trend that explains too little (R² < 0.7 with no better model, or a backtest error above
25 %) are *unpredictable* with the reason; a limit not crossed within the horizon is "not within
N days", never "never".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np

MIN_POINTS = 7            # a week: fewer and no trend is told from noise
SEASON = 7                # weekly seasonality (business drivers: weekends, draw days)
SEASONAL_MIN_TRAIN = 14   # two full seasons in the backtest's training part before a seasonal fit
HOLT_MIN_TRAIN = 10       # Holt's trend needs some history of its own
R2_MIN = 0.7              # Kestra-style: a linear fit explaining less is not a forecast
BETTER_BY = 0.9           # Holt-Winters replaces the line only with a backtest error 10 % lower
MAPE_MAX = 25.0           # a chosen model that missed its own backtest by more is not trusted
Z = 1.959964              # 95 % two-sided
SIMULATIONS = 300         # Holt-Winters paths for its interval
STEP_TYPICAL = 10.0       # a day-to-day change this many times the median one ...
NEIGHBOURS = 3            # days each side that say what a usual day-to-day change is
STEP_LEVEL = 0.2          # ... and 20 % of the level is a reset (down) or a step change (up)
DAYS_PER_MONTH = 30.44


@dataclass(frozen=True)
class DaysUntil:
    low: float | None       # earliest plausible (the upper bound crosses the limit)
    expected: float | None  # the expected path crosses it
    high: float | None      # latest plausible (the lower bound crosses it); None: beyond the horizon

    def to_json(self) -> dict[str, float | None]:
        return {k: (None if v is None else round(v, 1)) for k, v in
                (("low", self.low), ("expected", self.expected), ("high", self.high))}


@dataclass(frozen=True)
class PathPoint:
    day: date
    expected: float
    low: float
    high: float


@dataclass(frozen=True)
class Forecast:
    series: str
    predictable: bool
    reason: str                          # one sentence: why this answer (or why none)
    model: str | None = None             # linear | holt-winters | holt-winters-seasonal | flat
    current: float | None = None         # the newest value
    growth_per_day: float | None = None
    days_until: DaysUntil | None = None  # from ``today``; None: no limit, or not within the horizon
    backtest_mape: float | None = None   # % error of the chosen model on the held-out days
    r2: float | None = None              # of the linear fit on the segment used
    used_from: date | None = None        # first day of the segment used
    last_day: date | None = None
    notes: tuple[str, ...] = ()          # resets, steps, gaps filled, models compared
    path: tuple[PathPoint, ...] = field(default=(), repr=False)

    @property
    def growth_per_month(self) -> float | None:
        return None if self.growth_per_day is None else self.growth_per_day * DAYS_PER_MONTH


# -- preparing the history ----------------------------------------------------------------------

def clean(points: Sequence[tuple[date, float]]) -> list[tuple[date, float]]:
    """Sorted by day, one value per day (the last given wins), non-finite values dropped."""
    by_day: dict[date, float] = {}
    for day, value in points:
        if value is not None and math.isfinite(float(value)):
            by_day[day] = float(value)
    return sorted(by_day.items())


def breaks(points: Sequence[tuple[date, float]]) -> list[tuple[int, str]]:
    """Indices where a new segment starts, with a note: a drop far beyond the usual day-to-day
    change and of more than 20 % of the level is a reset (a truncate, a stats reset, a cleanup); a
    rise of the same size a step change (a bulk load, a new volume)."""
    values = [v for _, v in points]
    diffs = [b - a for a, b in zip(values, values[1:], strict=False)]
    if not diffs:
        return []
    out = []
    for i, d in enumerate(diffs, 1):
        # Unusual on both sides: a lasting change of the growth rate is no step (the days after it
        # grow just as fast); the newest day has only its past to compare with.
        before, after = diffs[max(0, i - 1 - NEIGHBOURS):i - 1], diffs[i:i + NEIGHBOURS]
        typical = max(float(np.median(np.abs(w))) if w else 0.0 for w in (before, after))
        level = max(abs(values[i - 1]), abs(values[i]))
        if abs(d) > STEP_TYPICAL * typical and abs(d) > STEP_LEVEL * level and level > 0:
            what = "reset" if d < 0 else "step change"
            out.append((i, f"{what} on {points[i][0]} ({_num(values[i - 1])} -> {_num(values[i])}): "
                           f"only the {len(points) - i} day(s) since are used"))
    return out


def _num(v: float) -> str:
    return f"{v:.4g}"


def fill_gaps(days: Sequence[date], values: Sequence[float]) -> tuple[list[date], np.ndarray, int]:
    """A regular daily grid from the first to the last day, missing days linearly interpolated
    (Holt-Winters needs one value per day). Returns (days, values, days filled)."""
    x = np.array([(d - days[0]).days for d in days], dtype=float)
    grid = np.arange(0, x[-1] + 1)
    filled = np.interp(grid, x, np.asarray(values, dtype=float))
    return [days[0] + timedelta(days=int(i)) for i in grid], filled, len(grid) - len(days)


# -- models -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Linear:
    a: float
    b: float
    s: float
    n: int
    xbar: float
    sxx: float
    r2: float
    t: float

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mid = self.a + self.b * x
        half = Z * self.s * np.sqrt(1 + 1 / self.n + (x - self.xbar) ** 2 / self.sxx)
        return mid, mid - half, mid + half


def fit_linear(x: np.ndarray, y: np.ndarray) -> _Linear:
    n = len(x)
    xbar, ybar = float(x.mean()), float(y.mean())
    sxx = float(((x - xbar) ** 2).sum())
    b = float(((x - xbar) * (y - ybar)).sum() / sxx) if sxx > 0 else 0.0
    a = ybar - b * xbar
    resid = y - (a + b * x)
    sse = float((resid ** 2).sum())
    sst = float(((y - ybar) ** 2).sum())
    r2 = 1 - sse / sst if sst > 0 else 1.0
    s = math.sqrt(sse / (n - 2)) if n > 2 else 0.0
    se = s / math.sqrt(sxx) if sxx > 0 else 0.0
    # Rounding noise on an exact line is not doubt about its slope.
    t = b / se if se > 1e-12 * max(abs(b), 1e-300) else (math.inf if b else 0.0)
    return _Linear(a, b, s, n, xbar, sxx, r2, abs(t))


def _holt_winters(y: np.ndarray, seasonal: bool):
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ExponentialSmoothing(y, trend="add", seasonal="add" if seasonal else None,
                                     seasonal_periods=SEASON if seasonal else None,
                                     initialization_method="estimated")
        return model.fit()


def _hw_path(y: np.ndarray, seasonal: bool, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fit = _holt_winters(y, seasonal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mid = np.asarray(fit.forecast(horizon), dtype=float)
        sims = np.asarray(fit.simulate(horizon, repetitions=SIMULATIONS, error="add", random_state=7), dtype=float)
    sims = sims.reshape(horizon, -1)
    return mid, np.percentile(sims, 2.5, axis=1), np.percentile(sims, 97.5, axis=1)


def mape(actual: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Mean absolute percentage error (%) over the days whose actual is not zero; None if none."""
    pairs = [(a, p) for a, p in zip(actual, predicted, strict=False) if a]
    if not pairs:
        return None
    return 100.0 * sum(abs(a - p) / abs(a) for a, p in pairs) / len(pairs)


def _backtest(x: np.ndarray, y: np.ndarray, grid_y: np.ndarray, hw_kinds: list[str]) -> dict[str, float]:
    """Each candidate fitted without the last h days and scored on them (MAPE)."""
    n = len(grid_y)
    h = min(max(7, n // 4), 28)
    train_days = n - h
    scores: dict[str, float] = {}
    cut = x < train_days
    if cut.sum() >= 3:
        lin = fit_linear(x[cut], y[cut])
        held = np.arange(train_days, n, dtype=float)
        if (m := mape(grid_y[train_days:], lin.predict(held)[0])) is not None:
            scores["linear"] = m
    for kind in hw_kinds:
        seasonal = kind == "holt-winters-seasonal"
        if train_days < (SEASONAL_MIN_TRAIN if seasonal else HOLT_MIN_TRAIN):
            continue
        try:
            mid = np.asarray(_holt_winters(grid_y[:train_days], seasonal).forecast(h), dtype=float)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.all(np.isfinite(mid)) and (m := mape(grid_y[train_days:], mid)) is not None:
            scores[kind] = m
    return scores


def _choose(scores: Mapping[str, float]) -> str:
    """The model with the lowest backtest error; the line unless another beats it clearly (a
    model that ties a poor line is no better model)."""
    if not scores:
        return "linear"
    best = min(scores, key=lambda k: (scores[k], k))
    if "linear" in scores and best != "linear" and scores[best] >= BETTER_BY * scores["linear"]:
        return "linear"
    return best


# -- the forecast -------------------------------------------------------------------------------

def forecast(series: str, points: Sequence[tuple[date, float]], today: date, *, limit: float | None = None,
             horizon_days: int = 365) -> Forecast:
    """The forecast of one series; see the module docstring."""
    pts = clean(points)
    if pts and limit is not None and pts[-1][1] >= limit:
        return Forecast(series, True, f"at or over the limit ({_num(pts[-1][1])} >= {_num(limit)})", "observed",
                        current=pts[-1][1], last_day=pts[-1][0], days_until=DaysUntil(0.0, 0.0, 0.0))
    if len(pts) < MIN_POINTS:
        return Forecast(series, False, f"too little history: {len(pts)} day(s) of data, at least {MIN_POINTS} needed",
                        current=pts[-1][1] if pts else None, last_day=pts[-1][0] if pts else None)
    notes: list[str] = []
    cuts = breaks(pts)
    if cuts:
        start, note = cuts[-1]
        notes.append(note)
        pts = pts[start:]
    days = [d for d, _ in pts]
    y = np.array([v for _, v in pts], dtype=float)
    current, last = float(y[-1]), days[-1]
    base = dict(current=current, used_from=days[0], last_day=last)
    lag = (today - last).days
    if len(pts) < MIN_POINTS:
        return Forecast(series, False, f"{notes[-1]}; at least {MIN_POINTS} days needed since", notes=tuple(notes),
                        **base)
    if float(y.max() - y.min()) <= 1e-9 * max(1.0, abs(float(y.mean()))):
        return Forecast(series, False, f"constant at {_num(current)} for {len(pts)} day(s): no growth to extrapolate",
                        growth_per_day=0.0, notes=tuple(notes), **base)
    x = np.array([(d - days[0]).days for d in days], dtype=float)
    lin = fit_linear(x, y)
    if lin.t < 2:
        return _flat(series, y, lin, limit, notes, base, horizon_days + max(lag, 0))
    if lin.b < 0:
        return Forecast(series, False, f"shrinking by {_num(-lin.b * DAYS_PER_MONTH)}/month since {days[0]}: no limit "
                        "is approached while it shrinks (not a promise that it never will be)", "linear",
                        growth_per_day=lin.b, r2=lin.r2, notes=tuple(notes), **base)
    grid_days, grid_y, filled = fill_gaps(days, y)
    if filled:
        notes.append(f"{filled} missing day(s) interpolated for Holt-Winters")
    hw_kinds = ["holt-winters-seasonal", "holt-winters"] if len(grid_y) >= SEASONAL_MIN_TRAIN + 7 else ["holt-winters"]
    scores = _backtest(x, y, grid_y, hw_kinds)
    if scores:
        notes.append("backtest MAPE: " + ", ".join(f"{k} {v:.2f} %" for k, v in sorted(scores.items(), key=lambda kv: kv[1])))
    model = _choose(scores)
    err = scores.get(model)
    if model == "linear" and lin.r2 < R2_MIN:
        return Forecast(series, False, f"poor fit: linear R² {lin.r2:.2f} < {R2_MIN} and no better model in the "
                        "backtest", "linear", growth_per_day=lin.b, backtest_mape=err, r2=lin.r2, notes=tuple(notes),
                        **base)
    if err is not None and err > MAPE_MAX:
        return Forecast(series, False, f"poor fit: the best model ({model}) missed its backtest by {err:.0f} % "
                        f"(> {MAPE_MAX:.0f} %)", model, growth_per_day=lin.b, backtest_mape=err, r2=lin.r2,
                        notes=tuple(notes), **base)
    horizon = horizon_days + max(lag, 0)
    if model == "linear":
        ahead = x[-1] + np.arange(0, horizon + 1, dtype=float)
        mid, lo, hi = lin.predict(ahead)
    else:
        try:
            mid, lo, hi = _hw_path(grid_y, model == "holt-winters-seasonal", horizon)
        except (ValueError, np.linalg.LinAlgError) as exc:
            notes.append(f"{model} failed on the full history ({exc}); linear used")
            model, err = "linear", scores.get("linear")
            ahead = x[-1] + np.arange(0, horizon + 1, dtype=float)
            mid, lo, hi = lin.predict(ahead)
        else:
            mid, lo, hi = (np.concatenate([[current], a]) for a in (mid, lo, hi))
    path = tuple(PathPoint(last + timedelta(days=h), float(mid[h]), float(lo[h]), float(hi[h]))
                 for h in range(1, horizon + 1))
    growth = (float(mid[min(29, horizon)]) - float(mid[1])) / (min(29, horizon) - 1) if horizon > 2 else lin.b
    reason, until = _until(limit, mid, lo, hi, lag, horizon_days)
    return Forecast(series, True, reason, model, growth_per_day=growth, days_until=until, backtest_mape=err,
                    r2=lin.r2, notes=tuple(notes), path=path, **base)


def _flat(series: str, y: np.ndarray, lin: _Linear, limit: float | None, notes: list[str], base: dict,
          horizon: int) -> Forecast:
    """No significant trend (|t| of the slope < 2): the level and its spread, not a line."""
    level, sd = float(y.mean()), float(y.std(ddof=1))
    top = level + Z * sd * math.sqrt(1 + 1 / len(y))
    bottom = 2 * level - top
    path = tuple(PathPoint(base["last_day"] + timedelta(days=h), level, bottom, top) for h in range(1, horizon + 1))
    reason = f"no significant trend: level {_num(level)} ± {_num(Z * sd)}"
    until = None
    if limit is not None:
        if top >= limit:
            until = DaysUntil(0.0, None, None)
            reason += f"; its upper bound already reaches the limit {_num(limit)}"
        else:
            reason += f"; below the limit {_num(limit)} even at the upper bound"
    return Forecast(series, True, reason, "flat", growth_per_day=0.0, days_until=until, r2=lin.r2,
                    notes=tuple(notes), path=path, **base)


def crossing(path: Sequence[float], limit: float) -> float | None:
    """Days (fractional, linearly interpolated) until ``path`` (index = days ahead, 0 = now)
    first reaches ``limit``; None when it does not within the path."""
    for h in range(1, len(path)):
        if path[h] >= limit:
            prev = path[h - 1]
            if prev >= limit:
                return float(h - 1)
            return float(h - 1 + (limit - prev) / (path[h] - prev))
    return None


def _until(limit: float | None, mid, lo, hi, lag: int, horizon_days: int) -> tuple[str, DaysUntil | None]:
    if limit is None:
        return "no limit configured: a trend only", None

    def shift(v: float | None) -> float | None:
        return None if v is None else max(0.0, float(v) - lag)

    low, expected, high = (shift(crossing(p, limit)) for p in (hi, mid, lo))
    if low is None:
        return f"the limit {_num(limit)} is not reached within {horizon_days} days, even at the upper bound", None
    if expected is None:
        return (f"the limit {_num(limit)} is not expected within {horizon_days} days (possible in {low:.0f} at the "
                "upper bound)"), DaysUntil(low, None, None)
    span = f"{low:.0f}-{high:.0f}" if high is not None else f"{low:.0f}-more than {horizon_days}"
    return f"the limit {_num(limit)} in about {expected:.0f} days (range {span})", DaysUntil(low, expected, high)


# -- status and scoring -------------------------------------------------------------------------

def status(fc: Forecast, limit: float | None, *, warning_days: int = 30, critical_days: int = 7) -> str:
    """ok | warning | critical | unpredictable: at or over the limit is critical whatever else;
    otherwise the expected days until it (the earliest plausible day when the expected path
    does not cross within the horizon but the upper bound already does today)."""
    if limit is not None and fc.current is not None and fc.current >= limit:
        return "critical"
    if not fc.predictable:
        return "unpredictable"
    if fc.days_until is None:
        return "ok"
    days = fc.days_until.expected
    if days is None:
        days = fc.days_until.low if fc.days_until.low == 0 else None
    if days is None:
        return "ok"
    if days < critical_days:
        return "critical"
    if days < warning_days:
        return "warning"
    return "ok"


def score(made: Sequence[tuple[date, date, float]], actual: Mapping[date, float], today: date,
          months_back: int, *, tolerance_days: int = 10) -> float | None:
    """MAPE (%) of the forecasts made about ``months_back`` months before ``today`` (the run
    nearest that day, within ``tolerance_days``) against what happened since: ``made`` is
    (made_on, target_day, expected) rows. None when there was no such run or nothing to compare yet."""
    want = today - timedelta(days=round(months_back * DAYS_PER_MONTH))
    runs = sorted({m for m, _, _ in made}, key=lambda m: (abs((m - want).days), m))
    if not runs or abs((runs[0] - want).days) > tolerance_days:
        return None
    run = runs[0]
    pairs = [(actual[t], e) for m, t, e in made if m == run and run < t <= today and t in actual]
    return mape([a for a, _ in pairs], [e for _, e in pairs])
