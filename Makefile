.PHONY: install test test-all export clean docs-html bench

install:
	pip install -e ".[dev]"

export:
	nbdev_export

clean:
	nbdev_clean

test:
	nbdev_test --n_workers 2 --timing && pytest tests/ -q -p no:cacheprovider

test-all:
	nbdev_test --n_workers 2 --flags "slow gpu" --timing && pytest tests/ -q

docs-html:
	python tools/build_html_docs.py --out _site

bench:
	python benchmarks/hausdorff.py && python benchmarks/engine.py && python benchmarks/memory.py && python benchmarks/aif.py

readme:
	python tools/make_readme.py
