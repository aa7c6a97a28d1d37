# Two entry points (README quick start): `make replay` and `make test`. Each installs what it needs.
VENV := .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned exactly: the CPU wheel on disk; a range would pull a multi-GB CUDA build
	$(PY) -m pip install -q --no-compile "torch==2.13.0" -e ".[test,torch]"
	# the installed packages byte-compiled on every core: pip compiles its ~11,000 files one by one (most
	# of the install's wall: 81 s against 17 s unpacking plus 23 s here, two cores, s23ci); the same .pyc
	# files. As under pip, a file this interpreter cannot compile is left to the source (torch ships one in
	# Python 3.12 syntax, torch/testing/_internal/py312_intrinsics.py), so the status is not checked
	$(PY) -m compileall -qq -j 0 "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || true
	touch $@

.PHONY: replay test browser
replay: $(VENV)/.installed
	$(VENV)/bin/twin replay --out out/replay

# headless Chromium (Debian's package) renders the HTML report in the browser test
browser:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# two pytest-xdist workers (CI has two cores); loadfile runs each test module on one worker, so its
# module-scoped fixtures are built once (the wheel test's build and install among them). Not
# loadgroup: with pytest 9.2 xdist 3.8.0 ignores xdist_group marks (pytest-dev/pytest-xdist#1386)
# loadfile queues the modules by their number of tests, most first (xdist 3.8.0's --loadscope-reorder,
# on by default), not in collection order: a module of one or two long tests (a campaign dry run)
# runs in the last minutes and decides when the slower worker finishes, while a long test in a
# module of many starts early; splitting a long module into a short one of its slow tests moves
# those to the end
# the sources byte-compiled first: where PYTHONDONTWRITEBYTECODE is set (as on the machine CI ran on) no
# process writes .pyc, so each of the many Python subprocesses of the suite (campaign dry runs,
# CLI runs) compiled the project modules it imports again (~0.4 s of CPU for ~130); an explicit
# compile writes them whatever the variable says, and every process reads them
# keeping CI cheap (every session adds tests; CI's wall is the suite's CPU over two cores, s25ci: ~1,400 s):
# - compute a shared input once: a test of committed figures reads tests/committed.py's validation()
#   (validate() once a run), not validate() again; an input both workers need goes through
#   tests/once.py (one worker computes, the other unpickles); a module's inputs are module fixtures
# - a judgement of committed records (a rule's strict xfail) replays only what it judges, under the
#   switch settings it compares; do not run `twin validate` whole (test_readme runs the command once,
#   with validate() shared) and do not rerun a campaign's CPU dry run for a second module's checks:
#   assert on the folder the first wrote, in the same module
# - an installed-wheel check proves packaging (tests/test_wheel.py: files compared, a few sections run),
#   not every figure again
# - measure a new module's CPU (`pytest --durations=0 MODULE`); one over ~20 s of CPU: say why in it
# - a test that compiles with inductor on CPU: scalar kernels compiled in-process (cpp.vec_isa_ok False,
#   compile_threads 1, gcc at -O0: tests/real/test_fp8_tensorwise_compile.py's _cheap_inductor); a clean CI's
#   cache is cold
# - campaigns that run one part with their own cases share the part's script (real/campaigns/cold_host_steps.sh)
#   and its CPU dry run runs once; each campaign's names, switches and cases are checked without a GPU (bash only)
# - a CPU figure is only comparable with one taken beside it: the same code read 450 and 517 s of CPU for
#   tests/calibration in two runs under other jobs' load (docs/notes/s31ci.md)
# - a product speed-up keeps every output to the bit (s32ci: `twin validate --json` compared field by field before and
#   after): replays of one scenario inside twin.serving.timing's sharing_grids / sharing_iterations blocks, records
#   through calibration.records_io.read_csv (parsed once a process), bisections that may skip walks (bisected_rate)
#   (s32ci2) a text frame's rows as dicts through records_io.text_records (to_dict's dicts, ~7x quicker)
#   (s33pack) pipeline.stage_ops memoised in validate's sharing() block; serve_engine_fit.design kept across calls
#   keyed by its records' stamps and memo.module_state() (every module-level switch, constant and function loaded)
# - JSON judgements are read through records_io.read_json (committed packed, X.json.xz): a judge writes
#   records_io.write_json_text; `python -m calibration.tree_size --pack-tracked` packs a merged branch's plain one
test: $(VENV)/.installed browser
	$(PY) -m compileall -q -j 0 twin real calibration reports benchmarks tests
	# pytest's own byte code of the test modules (their asserts rewritten), written once on every core: under
	# PYTHONDONTWRITEBYTECODE pytest keeps none, and each worker rewrote all ~380 modules (s27ci: a worker's
	# collection 25.8 -> 12.5 s of CPU; this step ~7 s of CPU over the cores)
	$(PY) -m tests.assert_cache
	$(PY) -m pytest -q -n 2 --dist loadfile
