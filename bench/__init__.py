"""The benchmarks (run each as a script: `.venv/bin/python bench/NAME.py`) and their shared helpers
(bench/harness.py, bench/streams.py)."""
