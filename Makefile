# The README's two commands. Both create .venv when missing and are safe to run twice.
.PHONY: setup setup-dev app test test-fast bench space seed-venv

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

# The speed anchor's own venv: the seed's PPOTrainer on TRL 0.11.4, all from PyPI (benchmarks/bench_ppo.py uses it).
seed-venv:
	test -x .venv-seed/bin/python || python3 -m venv .venv-seed
	.venv-seed/bin/pip install -q torch==2.13.0
	.venv-seed/bin/pip install -q trl==0.11.4 transformers==4.46.3 peft==0.13.2 accelerate==1.0.1 \
	  "datasets<3.2" "numpy<2" "pyarrow<17" gguf sentencepiece protobuf rich tyro

space: setup
	.venv/bin/python -m lab space --out space_build
