# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv when it is missing and installs glocon + the qgnet plugin into it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.glocon-installed
DATA   ?=
LAYOUT ?=
# more dotted overrides for the demo config, e.g. ARGS="data.split=train2017 data.coco_format=semantic_png out=runs/demo-coco128"
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: demo test install clean

$(STAMP): pyproject.toml plugins/qgnet/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' -e plugins/qgnet
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) jobs/demo.py --config configs/demo.yaml $(if $(DATA),data.root=$(DATA)) $(if $(LAYOUT),data.layout=$(LAYOUT)) $(ARGS)

test: $(STAMP)
	$(PY) -m ruff check platform plugins jobs bench tests
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs/demo .pytest_cache
