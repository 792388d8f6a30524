"""The replica repository kept in step with the primary (#17 part 1): plan (pure), copy (verify
there), run (entry points, state)."""
