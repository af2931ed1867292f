"""Project tooling, kept apart from the library: what this repository uses to measure itself and
write its docs, not what a user imports to segment brain MRI.

- :mod:`~brainseg.tools.bench`: the speed benchmark and the project's speed goals (``bench``);
- :mod:`~brainseg.tools.tables`: the table of every exported run, and writing a generated table
  between its markers in a doc (``results table``, ``--doc`` of the other commands);
- :mod:`~brainseg.tools.report`, :mod:`~brainseg.tools.report_figures`: the case report
  ``docs/report.md`` and its figures (``report``).

The library never imports this package; ``python -m brainseg`` reaches it through :mod:`brainseg.cli`.
"""
