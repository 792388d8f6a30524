"""Database maintenance (#14): health facts (facts.py) -> a pure plan (plan.py) -> actions under
lock and statement timeouts, recorded (run.py)."""
