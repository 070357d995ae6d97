# Two commands: `make demo` and `make test`. Each creates .venv when absent and installs
# detkit with its dependencies into it (once; again only when the packaging files change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.detkit-installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c requirements/constraints.txt -e ".[test,selective-search,export]"
	touch $(STAMP)

# The CPU quickstart: generate the shapes dataset (first run only), train Faster R-CNN on it
# from scratch, evaluate (VOC mAP@0.5), and draw the detections on a few test images. Run
# again, it continues an interrupted training, or evaluates a finished one again.
demo: $(STAMP)
	$(PY) tools/train_net.py --config-file configs/quickstart/shapes.yaml --resume
	$(PY) tools/demo.py --config-file configs/quickstart/shapes.yaml --dataset shapes_test \
		--max-images 8 --output output/quickstart/detections \
		MODEL.WEIGHTS output/quickstart/model_final.pth
	@cat output/quickstart/summary.json

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
