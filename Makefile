# SPDX-License-Identifier: MIT
#
# pvfree top-level build.  `make demo` sets up a fresh Debian 12 machine and
# runs the main job; `make test` runs every test.  Heavy builds (QEMU, Xen
# tools, guest kernels) are cached under $(PVFREE_CACHE), keyed by a hash of
# their inputs.

PVFREE_CACHE ?= $(HOME)/.cache/pvfree
export PVFREE_CACHE

FUZZ_SECONDS ?= 60

.PHONY: all deps host guest qemu test unit-test fuzz fuzz-short \
	guest-check kvm-test demo bench bench-full clean

all: host guest

# Install build and test dependencies (Debian packages, by name).
deps:
	scripts/setup-deps.sh base kvm kernel-src

host:
	$(MAKE) -C host

guest:
	$(MAKE) -C guest

qemu: deps
	hv-kvm/build-qemu.sh

unit-test: deps
	$(MAKE) -C host test

fuzz: deps
	$(MAKE) -C host fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

guest-check: deps
	$(MAKE) -C guest check

kvm-test: deps qemu
	tests/kvm/run-tests

test: deps
	scripts/run-all-tests

demo: deps qemu
	tests/kvm/demo

bench bench-full:
	@echo "make $@: the benchmark suite (tests/bench/) is not written yet;" \
	     "make demo prints the three-way comparison" >&2; exit 1

clean:
	$(MAKE) -C host clean
	$(MAKE) -C guest clean
