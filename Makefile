# Set-up and the two commands the README opens with. Each creates the virtual environment it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 7860

.PHONY: serve demo test format constraints

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt torch torchvision
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)  ## the app on the bundled weights: every capability in one Gradio app at http://127.0.0.1:7860
	HF_HUB_OFFLINE=1 $(VENV)/bin/triptych serve --host $(HOST) --port $(PORT)

demo: $(STAMP)  ## zero-shot classification of the bundled example images against the world's 48 objects
	HF_HUB_OFFLINE=1 $(VENV)/bin/triptych-classify weights/examples \
		--labels-file weights/examples/objects.txt --templates world --top-k 3

test: $(STAMP)  ## lint, then the whole suite (slow tests included)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

constraints: $(STAMP)  ## record the installed set as the tested one (after a green `make test`)
	{ sed -n '1,3p' constraints.txt; $(PY) -m pip freeze --exclude-editable | grep -v '^triptych' \
		| sed -E 's/\+[a-z0-9.]+$$//'; } > constraints.txt.new && mv constraints.txt.new constraints.txt
