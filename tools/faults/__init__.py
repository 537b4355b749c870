"""Fault injection, invariant checks and randomized fault schedules for the lab (see
``harness``, ``checker`` and ``chaos``)."""
