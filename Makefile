.PHONY: install test test-all export clean docs-html docs-stored bench readme nb-outputs nb-check

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

# the book from the outputs stored in the notebooks (what nbdev_docs shows), executing nothing
docs-stored:
	python tools/build_html_docs.py --out _site --stored

bench:
	python benchmarks/hausdorff.py && python benchmarks/engine.py && python benchmarks/memory.py && python benchmarks/aif.py

readme:
	python tools/make_readme.py

# executed notebooks (tools/nb_outputs.py): run every notebook at CI sizes as nbdev_test does, store the outputs, clean
nb-outputs:
	python tools/nb_outputs.py --save && nbdev_clean && python tools/make_readme.py

# fail when a stored output is missing, an error, or no longer what the code prints (numbers by value, figures by presence)
nb-check:
	python tools/nb_outputs.py --check --workers 2
