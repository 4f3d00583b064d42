# The two commands that matter: `make demo` and `make test`. Both install what they need.
.PHONY: demo test bootstrap

bootstrap:
	./scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/python demo/run_demo.py

# The suite runs in parallel (pytest-xdist): whole test files go to TEST_WORKERS worker
# processes (a file's tests share module fixtures such as a running deployment), the longest
# files first (the order tests/conftest.py sorts them in; xdist would otherwise start with the
# files that have the most tests). TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 3

test: bootstrap
	./scripts/test-deps.sh
	.venv/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
