# The README's two commands are `make demo` and `make test`; both create .venv when missing and
# (re)install the package when pyproject.toml changed (see ci/setup.sh).
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench-throughput test-slow

setup:
	bash ci/setup.sh

demo: setup
	$(PY) -m torchrl_bamdp.demo

test: setup
	bash ci/test.sh $(PYTEST_ARGS)

lint: setup
	bash ci/lint.sh

bench-throughput: setup
	$(PY) benchmarks/gridworld_throughput.py

# pytest exits 5 when no test is selected: not a failure while no slow test exists yet.
test-slow: setup
	MPLBACKEND=Agg WANDB_MODE=offline WANDB_SILENT=true \
		$(PY) -m pytest -q -p no:cacheprovider -m slow $(PYTEST_ARGS); \
		rc=$$?; if [ $$rc -eq 5 ]; then echo "no slow tests selected"; else exit $$rc; fi
