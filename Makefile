# The two commands that matter: `make demo` and `make test`. Both install what they need.
.PHONY: demo test bootstrap

bootstrap:
	./scripts/bootstrap.sh

demo: bootstrap
	.venv/bin/python demo/run_demo.py

test: bootstrap
	./scripts/test-deps.sh
	.venv/bin/python -m pytest
