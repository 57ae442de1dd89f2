"""Hypothesis settings for the quick, repeatable fuzz runs of the suite.

``derandomize=True``: the same examples on every run (CI is repeatable); no
example database, so a run never depends on what an earlier run found. The
open-ended runs are ``benchmarks/fuzz.py --seconds N``.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "dicomgate-fuzz",
    derandomize=True,
    database=None,
    deadline=None,  # time per input is bounded by targets.bounded, generously
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
