# The README's two commands. Both create .venv when missing and are safe to run twice.
.PHONY: setup setup-dev app test test-fast bench space

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh dev

app: setup
	.venv/bin/python app.py

# The browser test needs Debian's chromium; install it when missing (as root, as on CI).
test: setup-dev
	bash scripts/ensure-chromium.sh
	.venv/bin/python -m pytest -m "not gpu" -q --durations=12

test-fast: setup-dev
	.venv/bin/python -m pytest -m "not gpu and not slow and not browser" -q

bench: setup
	for b in benchmarks/bench_*.py; do .venv/bin/python $$b; done

space: setup
	.venv/bin/python -m lab space --out space_build
