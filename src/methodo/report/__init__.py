"""Reports: figures (plots) and the self-contained ``report.html`` (html)."""
