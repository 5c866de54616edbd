# The two commands a newcomer needs: `make demo` and `make test`. Both run setup first.
.PHONY: setup demo test lint bench rules dashboards chart image clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/calico-lens demo

test: setup
	.venv/bin/ruff check exporter tests bench alerts dashboards helm
	.venv/bin/python -m pytest -q tests

lint: setup
	.venv/bin/ruff check exporter tests bench alerts dashboards helm

bench: setup
	.venv/bin/python bench/bench_replay.py
	.venv/bin/python bench/bench_forward.py
	.venv/bin/python bench/bench_felix.py
	.venv/bin/python bench/bench_podnet.py  # needs root (network namespaces)

dashboards: setup
	.venv/bin/python dashboards/build.py

chart: setup
	.venv/bin/python helm/sync.py
	.tools/helm lint helm/calico-lens

rules: setup
	.venv/bin/python alerts/generate.py

image: setup  # build/calico-lens-<version>.oci.tar, with mmdebstrap and buildah (no registry, no Docker)
	bash scripts/image.sh

clean:
	rm -rf .venv build *.egg-info exporter/*.egg-info .pytest_cache
