"""Data validation gates: Great Expectations suites generated from plant configs and learned
profiles; failing batches are quarantined, never deleted.

Example:
    >>> from andon.validation.spec import load_table_spec
    >>> from andon.validation.tables import validate_table
    >>> import pandas as pd
    >>> spec = load_table_spec("ai4i2020")
    >>> report = validate_table(pd.read_csv("../shared/data/ai4i2020/ai4i2020.csv"), spec)
    >>> report.success
    True

Modules: ``spec`` (what a table must look like), ``profile`` (bounds learned from a known-good
reference), ``gx`` (the Great Expectations runner: one named expectation per rule),
``tables`` and ``images`` (the checks), ``gate`` (accept into a dataset manifest or quarantine),
``report`` (the HTML a person reads).
"""
