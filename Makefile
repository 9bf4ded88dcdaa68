# The two set-up commands of the README: `make run` and `make test`. Each creates the
# virtual environment it needs (.venv) from pyproject.toml; only python3 and make are needed.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[vision,onnx,tflite,convert,bench,serve,cloud,tensorflow,cluster,dev]'
	touch $(STAMP)

# The default job: face detection (BlazeFace on LiteRT) on the shipped sample video.
run: $(STAMP)
	$(BIN)/pipeline models fetch
	$(BIN)/pipeline run graphs/detect_faces.yaml --stats-json out/detect_faces.stats.json
	@echo "annotated video: out/detect_faces.mp4"
	@echo "detections:      out/detect_faces.jsonl (one line per frame)"
	@echo "statistics:      out/detect_faces.stats.json"

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy pipeline pipeline_nodes model_builder pipeline_cloud

unit: $(STAMP)
	$(BIN)/pytest -q

test: lint typecheck $(STAMP)
	$(BIN)/pipeline models fetch
	$(BIN)/pipeline schema --check
	$(BIN)/pipeline check graphs/*.yaml
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
