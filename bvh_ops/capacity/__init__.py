"""Capacity planning: daily usage history (collect), forecasts that say how sure they are
(forecast, pure) and the monthly report with its charts (report, charts)."""
