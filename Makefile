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

# strict (pyproject's [[tool.mypy.overrides]]): the plugin API and the pure math it exposes; default: the plugins
MYPY_STRICT = platform/glocon/plugin_api.py platform/glocon/segmenter.py platform/glocon/ops.py platform/glocon/losses.py platform/glocon/regionmaps.py platform/glocon/fewshot
MYPY_DEFAULT = plugins/qgnet/glocon_qgnet platform/glocon/builtin_plugins

test: $(STAMP)
	$(PY) -m ruff check platform plugins jobs bench tests
	$(PY) -m mypy $(MYPY_STRICT) $(MYPY_DEFAULT)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs/demo .pytest_cache
