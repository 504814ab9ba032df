# easyinv-bench — `make help` lists the targets. Two commands do all set-up on a fresh machine:
#   make demo    # creates .venv, runs the Table-1 protocol on the bundled images with the Gaussian model (CPU)
#   make test    # creates .venv, runs the default test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BENCH := $(VENV)/bin/easyinv-bench
REPORT := $(VENV)/bin/easyinv-report
MODEL_DIR ?= $(or $(EASYINV_MODELS),$(CURDIR)/models)
COCO_DIR ?= $(or $(EASYINV_COCO),$(CURDIR)/coco)
PIEBENCH_DIR ?= $(or $(EASYINV_PIEBENCH),$(CURDIR)/piebench)
ARGS ?=
# EXTRAS: dependency sets installed beside dev by `make setup`, e.g. EXTRAS=cluster (SLURM launcher) or cluster,tune
EXTRAS ?=
# GPUS: processes for the run targets. 1 runs the app directly; GPUS=N starts N processes with `accelerate launch`,
# one per GPU of this machine, each computing one shard of every job (easyinv/run/shards.py).
GPUS ?= 1
ifeq ($(strip $(GPUS)),1)
RUN := $(BENCH)
else
RUN := $(VENV)/bin/accelerate launch --multi_gpu --num_processes $(GPUS) --num_machines 1 --mixed_precision no \
       --dynamo_backend no -m easyinv
endif
SD14 := $(MODEL_DIR)/stable-diffusion-v1-4
SDXL := $(MODEL_DIR)/stable-diffusion-xl-base-1.0
SD3 := $(MODEL_DIR)/stable-diffusion-3-medium-diffusers
FLUX := $(MODEL_DIR)/FLUX.1-dev
TABLE_RUNS = $(or $(RUNS),results/runs/table1)
SWEEP_RUNS = $(or $(SWEEP),results/runs/sweep_easyinv)
comma := ,
# $(call need,PATH,MESSAGE): stop the target with one line naming what is missing and the command that makes it,
# before any job starts (instead of a failure deep inside a run)
need = @test -e "$(1)" || { echo "make $@: $(2)" >&2; exit 1; }
NEED_SD14 = $(call need,$(SD14),no SD-1.4 weights at $(SD14): huggingface-cli download CompVis/stable-diffusion-v1-4 --local-dir $(SD14) (or MODEL_DIR=<folder holding it>))
NEED_SDXL = $(call need,$(SDXL),no SD-XL weights at $(SDXL): huggingface-cli download stabilityai/stable-diffusion-xl-base-1.0 --local-dir $(SDXL) (or MODEL_DIR=<folder holding it>))
NEED_SD3 = $(call need,$(SD3),no SD3-medium weights at $(SD3): huggingface-cli download stabilityai/stable-diffusion-3-medium-diffusers --local-dir $(SD3) (or MODEL_DIR=<folder holding it>))
NEED_FLUX = $(call need,$(FLUX),no FLUX.1-dev weights at $(FLUX): huggingface-cli download black-forest-labs/FLUX.1-dev --local-dir $(FLUX) (or MODEL_DIR=<folder holding it>))
NEED_COCO = $(call need,$(COCO_DIR)/annotations,no COCO-2017 at COCO_DIR=$(COCO_DIR): unpack annotations/$(comma) val2017/ and test2017/ there (README 'COCO-2017') or pass COCO_DIR=<folder>)
define NEED_PIEBENCH
$(call need,$(PIEBENCH_DIR)/mapping_file.json,no PIE-Bench at PIEBENCH_DIR=$(PIEBENCH_DIR) (mapping_file.json + annotation_images/): request it from the PnPInversion authors (README 'Editing') and pass PIEBENCH_DIR=<folder>)
$(call need,$(MODEL_DIR)/dino_vitbase8_pretrain.pth,no DINO ViT-B/8 at $(MODEL_DIR)/dino_vitbase8_pretrain.pth: download https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth there)
$(call need,$(MODEL_DIR)/clip-vit-large-patch14,no CLIP ViT-L/14 at $(MODEL_DIR)/clip-vit-large-patch14: huggingface-cli download openai/clip-vit-large-patch14 --local-dir $(MODEL_DIR)/clip-vit-large-patch14)
endef
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export PYTHONUNBUFFERED := 1

.PHONY: help setup setup-browser demo demo-reference demo-zoo demo-flow reproduce-figures figures-demo editing-demo editing-demo-flow reproduce-piebench reproduce-piebench-flow reproduce-table1-captions reproduce-table-flow reproduce-table-flow-methods test test-slow lint format tiny-models tables check reproduce-table1 reproduce-table2 \
        sweep-easyinv sweep-report tune-easyinv notebooks bench gpu-check docs docs-serve clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-28s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.installed  ## create .venv with the pinned set (idempotent; EXTRAS=cluster adds the SLURM launcher)
ifneq ($(strip $(EXTRAS)),)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,$(EXTRAS)]'
endif

# headless Chromium and its driver for the browser test of report.html (tests/test_report_browser.py); Debian's
# packages through apt-get, installed only when missing; one line naming the problem when they cannot be installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
setup-browser:  ## headless Chromium + chromedriver for the browser test (apt-get, only when missing; CI runs it)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "chromium and chromedriver present: $$(command -v chromium), $$(command -v chromedriver)"; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make setup-browser: no apt-get here: install Chromium and chromedriver by hand (the browser test skips without them)" >&2; exit 1; \
	elif { $(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium chromium-driver; } >.setup-browser.log 2>&1; then \
	  rm -f .setup-browser.log; echo "installed: $$(command -v chromium), $$(command -v chromedriver)"; \
	else \
	  echo "make setup-browser: apt-get could not install chromium chromium-driver (log: .setup-browser.log)" >&2; exit 1; \
	fi

demo: setup  ## Table-1 protocol on the bundled images, Gaussian model, CPU → results/runs/demo_report/ (report.html), checked against results/demo/
	$(RUN) $(ARGS)

demo-reference: setup  ## rewrite the committed reference results/demo/ from the demo's records (on purpose only)
	$(RUN) report_dir=results/demo reference_dir=null $(ARGS)

demo-zoo: setup  ## all ten methods on the Gaussian model with an imprecise ε, CPU → results/demo_zoo/
	$(RUN) experiment=demo_zoo $(ARGS)

demo-flow: setup  ## flow-model methods on the closed-form Gaussian flow model and tiny-flux, T = 28, CPU → results/demo_flow/
	$(RUN) experiment=demo_flow $(ARGS)

editing-demo: setup  ## editing benchmark offline: mini PIE-Bench, tiny-sd, {DDIM,EasyInv}×{free,direct_offsets}×{P2P,MasaCtrl} → results/editing_demo/
	$(RUN) experiment=editing_demo $(ARGS)

reproduce-piebench: setup  ## PnPInversion Table 1 protocols on PIE-Bench, SD-1.4 (PIEBENCH_DIR=..., MODEL_DIR=...) → results/piebench/
	$(NEED_SD14)
	$(NEED_PIEBENCH)
	$(RUN) experiment=piebench paths.models=$(MODEL_DIR) paths.piebench=$(PIEBENCH_DIR) $(ARGS)
	$(RUN) experiment=piebench edit=flowedit method=vae_only edit.source=free paths.models=$(MODEL_DIR) paths.piebench=$(PIEBENCH_DIR) $(ARGS)

editing-demo-flow: setup  ## flow editors offline: mini PIE-Bench on tiny-flux / tiny-sd3 (+ FlowEdit on tiny-sd), CPU → results/editing_demo_flow/
	$(RUN) experiment=editing_demo_flow $(ARGS)
	$(RUN) experiment=editing_demo_flow method=fireflow edit=v_inject edit.num_steps=8 edit.inject=1 $(ARGS)
	$(RUN) experiment=editing_demo_flow model=tiny-sd3 edit=uni_edit,rf_inversion,flowedit $(ARGS)
	$(RUN) experiment=editing_demo_flow model=tiny-sd edit=flowedit $(ARGS)

reproduce-piebench-flow: setup  ## flow editors on PIE-Bench, FLUX.1-dev + SD3-medium (PIEBENCH_DIR=..., MODEL_DIR=...) → results/piebench_flow/
	$(NEED_FLUX)
	$(NEED_SD3)
	$(NEED_PIEBENCH)
	$(RUN) experiment=piebench_flow paths.models=$(MODEL_DIR) paths.piebench=$(PIEBENCH_DIR) $(ARGS)
	$(RUN) experiment=piebench_flow method=fireflow edit=v_inject edit.num_steps=8 edit.inject=1 paths.models=$(MODEL_DIR) paths.piebench=$(PIEBENCH_DIR) $(ARGS)
	$(RUN) experiment=piebench_flow model=sd3 edit=uni_edit,rf_inversion,flowedit paths.models=$(MODEL_DIR) paths.piebench=$(PIEBENCH_DIR) $(ARGS)

reproduce-figures: setup  ## EasyInv Figs 1-5 on SD-1.4 + SD-XL fp16, bundled probes/photos (MODEL_DIR=...) → results/figures/
	$(NEED_SD14)
	$(NEED_SDXL)
	$(RUN) experiment=figures paths.models=$(MODEL_DIR) $(ARGS)

figures-demo: setup  ## the same offline on tiny-sd / tiny-sdxl, CPU, about a minute → results/figures_demo/
	$(RUN) experiment=figures_demo $(ARGS)

test: setup  ## the default test suite (CPU, offline, no slow tests)
	$(PY) -m pytest -q $(ARGS)

test-slow: setup  ## only the slow tests
	$(PY) -m pytest -q -m slow $(ARGS)

lint: setup  ## ruff, and the layer contracts of pyproject.toml (import-linter)
	$(VENV)/bin/ruff check easyinv baselines scripts tests
	$(VENV)/bin/lint-imports pyproject.toml --no-cache --no-logo

format: setup
	$(VENV)/bin/ruff format easyinv baselines scripts tests

tiny-models: setup  ## build the tiny random SD-1.x / SD-XL folders into .cache/tiny-models
	$(PY) scripts/make_tiny_models.py

reproduce-table1: setup  ## EasyInv Table 1 on SD-1.4 fp16 + COCO (MODEL_DIR=..., COCO_DIR=..., GPUS=N) → results/table1/
	$(NEED_SD14)
	$(NEED_COCO)
	$(RUN) experiment=table1 paths.models=$(MODEL_DIR) paths.coco=$(COCO_DIR) $(ARGS)

reproduce-table1-captions: setup  ## every method with COCO captions, pivots w=1, sampling w=7.5 → results/table1_captions/
	$(NEED_SD14)
	$(NEED_COCO)
	$(RUN) experiment=table1_captions paths.models=$(MODEL_DIR) paths.coco=$(COCO_DIR) $(ARGS)

reproduce-table-flow: setup  ## the Table-1 protocol on SD3-medium and FLUX.1-dev, bf16, T = 28 (MODEL_DIR=..., COCO_DIR=...) → results/table_flow/
	$(NEED_SD3)
	$(NEED_FLUX)
	$(NEED_COCO)
	$(RUN) experiment=table_flow paths.models=$(MODEL_DIR) paths.coco=$(COCO_DIR) $(ARGS)

reproduce-table-flow-methods: setup  ## every flow inversion method (Euler, RF-Solver, FireFlow, Uni-Inv, RF-Inversion) on SD3-medium and FLUX.1-dev, T = 28 → results/table_flow_methods/
	$(NEED_SD3)
	$(NEED_FLUX)
	$(NEED_COCO)
	$(RUN) experiment=table_flow_methods paths.models=$(MODEL_DIR) paths.coco=$(COCO_DIR) $(ARGS)

reproduce-table2: setup  ## EasyInv Table 2 (fp16 vs fp32; GPUS=N) → results/table2/
	$(NEED_SD14)
	$(NEED_COCO)
	$(RUN) experiment=table2 paths.models=$(MODEL_DIR) paths.coco=$(COCO_DIR) $(ARGS)

tables: setup  ## re-write tables and figures from existing records (RUNS=results/runs/table1 OUT=results/table1)
	$(call need,$(TABLE_RUNS),no runs at $(TABLE_RUNS): make them with 'make reproduce-table1' (or pass RUNS=<run dir>))
	$(REPORT) $(TABLE_RUNS) --out $(or $(OUT),results/table1)

check: setup  ## completeness of a run across all its shards: missing/duplicated rows (RUNS=results/runs/table1)
	$(call need,$(TABLE_RUNS),no runs at $(TABLE_RUNS): make them with 'make reproduce-table1' (or pass RUNS=<run dir>))
	$(REPORT) $(TABLE_RUNS) --check

sweep-easyinv: setup  ## EasyInv η × interval × k sweep (Gaussian model, demo data) → results/sweep_easyinv/
	$(RUN) experiment=sweep_easyinv $(ARGS)

sweep-report: setup  ## aggregate a sweep root (SWEEP=results/runs/sweep_easyinv OUT=results/sweep_easyinv)
	$(call need,$(SWEEP_RUNS),no sweep at $(SWEEP_RUNS): make it with 'make sweep-easyinv' (or pass SWEEP=<sweep dir>))
	$(REPORT) $(SWEEP_RUNS) --out $(or $(OUT),results/sweep_easyinv) --sweep

tune-easyinv: setup  ## Optuna TPE on the tune split, best setting scored on the held-out eval split
	$(PY) scripts/tune_then_eval.py $(ARGS)

notebooks: setup  ## run notebooks/*.ipynb: the demo's and sweep's results (running or resuming both first), the Python API on a tiny pipeline → results/notebooks/
	$(RUN) experiment=demo $(ARGS)
	$(RUN) experiment=sweep_easyinv $(ARGS)
	mkdir -p results/notebooks
	$(PY) -m papermill notebooks/results.ipynb results/notebooks/results.ipynb --cwd notebooks -p runs_dir $(CURDIR)/results/runs/demo
	$(PY) -m papermill notebooks/sweeps.ipynb results/notebooks/sweeps.ipynb --cwd notebooks -p sweep_dir $(CURDIR)/results/runs/sweep_easyinv
	$(PY) -m papermill notebooks/api.ipynb results/notebooks/api.ipynb --cwd notebooks -p cache $(CURDIR)/.cache

bench: setup  ## throughput per method × batch size, loop overhead, projected Table 1/2 time → results/bench/
	$(PY) scripts/bench.py $(ARGS)

gpu-check: setup  ## on a CUDA machine: the gpu tests, then bench on sd14-random fp16 (eager, compiled) → results/bench/
	PY=$(PY) bash scripts/gpu_check.sh $(ARGS)

# the documentation site (mkdocs.yml, docs/): offline, --strict fails on any warning (a broken link or reference);
# docs/hooks.py adds the configuration reference generated from configs/ and ARCHITECTURE.md
DOCS_DIR ?= site
docs: setup  ## build the documentation site offline with --strict → site/ (open site/index.html)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict -d $(DOCS_DIR)

docs-serve: setup  ## serve the documentation site on http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --strict -a 127.0.0.1:8000

clean:  ## remove run records (results/runs) and caches, keep .venv
	rm -rf results/runs .cache
