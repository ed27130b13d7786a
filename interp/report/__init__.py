"""Presentation: every figure, table and page. A run's HTML page and its export
(:mod:`~interp.report.run_page`, :mod:`~interp.report.export`), the experiments' page, the
figures, the text tables the CLI prints and the attention views. Imports the analyses; nothing
below imports this package."""
