# Thin wrapper over CMake: the two Quick start commands and a few helpers.
#   make run   - install missing packages, build, run the main job (the demo on
#                the embedded reference device)
#   make test  - install missing packages, build, run the whole ctest suite,
#                a short run of each fuzz target, then the suite again under
#                TSan and under ASan+UBSan
BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_TSAN ?= build-tsan
BUILD_FUZZ ?= build-fuzz
# Seconds each fuzz target runs in make test (the long run: docs/testing.md).
FUZZ_SECONDS ?= 10
# cmake --build runs make below this one: without this, every one of its
# lines comes wrapped in "Entering directory" / "Leaving directory".
MAKEFLAGS  += --no-print-directory
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_ARGS ?= --output-on-failure
CMAKE_ARGS ?=

# make install: the library, headers, pkg-config and CMake files, the tools,
# man pages, bash completion and the udev rule (README, Install).
PREFIX     ?= /usr/local
DESTDIR    ?=

.PHONY: all deps deps-test build run test test-release test-asan test-tsan test-fuzz bench install clean

# Test-only packages, installed by make test (not make run): the VM stage
# (tests/vm) boots a QEMU guest with busybox (it would otherwise install them
# itself, and fails loudly when it cannot); test_logind_bus runs a private
# dbus-daemon as a fake system bus.
VM_PKGS = qemu-system-x86 busybox-static dbus-daemon
# The test framework: only make test needs it (make run builds no test);
# promtool (package prometheus) checks ugpuctl's Prometheus output; Open MPI
# builds and runs the MPI example (docs/mpi.md); gnuplot draws ugpu-bench plot.
TEST_PKGS = libcmocka-dev prometheus openmpi-bin libopenmpi-dev gnuplot-nox $(VM_PKGS)
# The fuzz targets (tests/fuzz) are built with clang's libFuzzer.
FUZZ_PKGS = clang libclang-rt-14-dev libfuzzer-14-dev

all: build

deps:
	@./scripts/install-deps.sh

deps-test:
	@./scripts/install-deps.sh $(TEST_PKGS)

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j$(JOBS)

# make run builds the demo and what it links (the library and the embedded
# reference device), not the tests.
run: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)
	cmake --build $(BUILD) -j$(JOBS) --target ugpu-demo
	./$(BUILD)/ugpu-demo

# On a failure the digest (scripts/ctest-digest.sh) repeats what failed at
# the end, where a CI log cut in its middle still shows it.
test-release: deps-test build
	ctest --test-dir $(BUILD) $(CTEST_ARGS) || { ./scripts/ctest-digest.sh $(BUILD); exit 1; }

# TSan over the whole suite (the threaded tests are what it is for; the rest
# are cheap).
test-tsan: deps-test
	cmake -S . -B $(BUILD_TSAN) -DCMAKE_BUILD_TYPE=Debug -DUGPU_TSAN=ON $(CMAKE_ARGS)
	cmake --build $(BUILD_TSAN) -j$(JOBS)
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
		ctest --test-dir $(BUILD_TSAN) $(CTEST_ARGS) || { ./scripts/ctest-digest.sh $(BUILD_TSAN); exit 1; }

test-asan: deps-test
	cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DUGPU_ASAN=ON $(CMAKE_ARGS)
	cmake --build $(BUILD_ASAN) -j$(JOBS)
	ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
		ctest --test-dir $(BUILD_ASAN) $(CTEST_ARGS) || { ./scripts/ctest-digest.sh $(BUILD_ASAN); exit 1; }

# The vfio-user fuzz targets, built with clang (libFuzzer, ASan+UBSan) in their
# own directory: every crash reproducer replayed, then FUZZ_SECONDS of fuzzing
# each from the checked-in corpus.
test-fuzz:
	@./scripts/install-deps.sh $(FUZZ_PKGS)
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DUGPU_FUZZ=ON -DUGPU_BUILD_TESTS=OFF $(CMAKE_ARGS)
	cmake --build $(BUILD_FUZZ) -j$(JOBS)
	./tests/fuzz/run.sh $(BUILD_FUZZ) $(FUZZ_SECONDS)

# Release first (fast feedback), then the fuzz targets and the sanitizers;
# ASan+UBSan is last so the final line is its ctest summary.
test: test-release test-fuzz test-tsan test-asan

bench: build
	./$(BUILD)/ugpu-bench all

install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_TSAN) $(BUILD_FUZZ)
