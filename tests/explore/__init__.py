"""Exhaustive exploration of the release protocol: every run within a bound, on the real state machine.

``world`` (what a state is, the bound), ``machine`` (the real ``decide()``, memoised), ``model`` and
``services`` (every step the world may take), ``invariants`` (the rules), ``explorer`` (breadth-first
search, shortest counter-examples), ``trace`` (steps in words); ``python -m tests.explore``.
"""
