"""dlclaims: reproduce the classic claims about why deep learning generalizes.

The library (data, models, train, cntk, linear, theory, stats, report) works without
pytest; the pytest plugin (`dlclaims.pytest_plugin`) sits on top of it.
"""

__version__ = "0.1.0"
