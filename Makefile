# SPDX-License-Identifier: MIT
#
# pvfree top-level build.  `make demo` sets up a fresh Debian 12 machine and
# runs the main job; `make test` runs every test.  Heavy builds (QEMU, Xen
# tools, guest kernels) are cached under $(PVFREE_CACHE), keyed by a hash of
# their inputs.  The tests (tests/lib/pvfree_tests) run the QEMU binary
# $PVFREE_QEMU, default what hv-kvm/build-qemu.sh prints.

PVFREE_CACHE ?= $(HOME)/.cache/pvfree
export PVFREE_CACHE

FUZZ_SECONDS ?= 60

.PHONY: all deps host guest qemu series test unit-test fuzz fuzz-short \
	guest-check kvm-test qemu-qtest xen-test libvirt libvirt-test libvirt-xml-test \
	virsh-demo demo bench bench-full clean

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

# The upstream-style patch series (git format-patch output and a series
# file) for QEMU, Xen and libvirt: the patches plus the new files of
# hv-kvm/qemu/, hv-xen/xen/ and hv-kvm/libvirt/libvirt/, on the pristine
# upstream source, in build/series/.
series: deps
	scripts/make-series --tarball "$$(hv-kvm/build-qemu.sh --print-tarball)" \
		--overlay hv-kvm/qemu --patches hv-kvm/patches --out build/series/qemu
	scripts/setup-deps.sh xen
	scripts/make-series --tarball "$$(hv-xen/build-xen-tools.sh --print-tarball)" \
		--overlay hv-xen/xen --patches hv-xen/patches --out build/series/xen
	@# build-libvirt.sh downloads the tarball on its first (cached) build.
	ls $(PVFREE_CACHE)/src/libvirt_*.orig.tar.xz >/dev/null 2>&1 || \
		hv-kvm/libvirt/build-libvirt.sh >/dev/null
	scripts/make-series --tarball "$$(ls $(PVFREE_CACHE)/src/libvirt_*.orig.tar.xz | sort -V | tail -n 1)" \
		--overlay hv-kvm/libvirt/libvirt --patches hv-kvm/libvirt/patches \
		--out build/series/libvirt

unit-test: deps
	$(MAKE) -C host test

fuzz: deps
	$(MAKE) -C host fuzz FUZZ_SECONDS=$(FUZZ_SECONDS)

guest-check: deps
	$(MAKE) -C guest check

kvm-test: deps qemu
	tests/kvm/run-tests

# QEMU's own kind of device test: the series' qtest (patch 0006), TAP.
qemu-qtest: deps qemu
	hv-kvm/run-qtest

# Xen end to end (tests/xen/README.md; suite "xen" of `make test`): a PV
# domU with the pvfree module migrated by `xl migrate` inside Xen 4.17
# under QEMU TCG.  XEN_TEST_ARGS, e.g. --cases idle:post-workload.
xen-test: deps qemu
	scripts/setup-deps.sh xen
	tests/xen/run-migrate $(XEN_TEST_ARGS)

# libvirt 11.3 with pvfree's series (hv-kvm/libvirt), cached like QEMU.
libvirt: deps
	hv-kvm/libvirt/build-libvirt.sh

# libvirt's own tests of the series: qemuxmlconftest and virschematest.
libvirt-xml-test: deps
	hv-kvm/libvirt/build-libvirt.sh --test

# pvfree under libvirt (tests/libvirt, docs/libvirt.md): two libvirtd
# daemons on this machine, `virsh migrate --live`, with Debian's libvirt
# and with the patched build, ~5 min.  LIBVIRT_TEST_ARGS, e.g.
# --route stock.
libvirt-test: deps qemu libvirt
	scripts/setup-deps.sh libvirt
	tests/libvirt/run-tests $(LIBVIRT_TEST_ARGS)

# A post-workload 1 GiB guest moved by virsh three ways (not in make test):
# no device, virtio-balloon free page hints (<qemu:override>), pvfree
# (<pvfree model='pci'/>, the patched libvirt); bytes and time side by side.
virsh-demo: deps qemu libvirt
	scripts/setup-deps.sh libvirt
	tests/libvirt/run-tests --demo $(LIBVIRT_TEST_ARGS)

test: deps
	scripts/run-all-tests

demo: deps qemu
	tests/kvm/demo

# Benchmarks (not part of `make test`): tests/bench/run-bench, results in
# tests/out/bench/<time>/; BENCH_ARGS passes options (see --help), e.g.
# --no-xen to leave out the Xen part (tests/xen/run-migrate, ~5 min).
bench: deps qemu
	scripts/setup-deps.sh bench xen
	tests/bench/run-bench $(BENCH_ARGS)

bench-full: deps qemu
	scripts/setup-deps.sh bench xen
	tests/bench/run-bench --full $(BENCH_ARGS)

clean:
	$(MAKE) -C host clean
	$(MAKE) -C guest clean
