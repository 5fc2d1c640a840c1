# SPDX-License-Identifier: GPL-2.0
#
# diofork: out-of-tree module, its selftests, and the VM-based checks.
#
#   make                 diofork.ko for the running kernel (or both test kernels
#                        when the running kernel has no headers installed)
#   make KVER=<full>     diofork.ko for another installed kernel
#   make modules-all     build/<kver>/diofork.ko for the Debian 6.1 and 6.12 kernels
#   make selftests       static kselftest binaries in build/selftests/
#   make bench-tools     the bench's static workload tools in build/bench/
#   make check           build everything, run the suite in a 6.1 and a 6.12 VM
#   make demo            the race, per mode, on 6.1 and 6.12 (the main job)
#   make bench           what each mode costs (scripts/bench)
#   make profile         instructions per read or fork, by function (scripts/profile)
#   make tcgperf         host time per read under TCG, by what QEMU ran (scripts/tcgperf)
#   make lint            checkpatch --strict, sparse (C=1) and W=1 on both kernels
#
# Objects are built in build/<kver>/ from symlinks to the sources, so the two
# kernels never share an object file and the source tree stays clean.

TOP	:= $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
BUILD	:= $(TOP)/build
RUNNING	:= $(shell uname -r)

ifeq ($(KVER),)
ifneq ($(wildcard /lib/modules/$(RUNNING)/build),)
KVER	:= $(RUNNING)
endif
endif

SRCS	:= Kbuild $(wildcard module/*.c module/*.h)

.PHONY: all module modules-all selftests bench-tools check demo bench profile tcgperf \
	lint checkpatch setup clean

ifeq ($(KVER),)
all: modules-all
else
all: module
endif

setup:
	@$(TOP)/scripts/setup

module:
	@test -n "$(KVER)" || { echo "make: no headers for $(RUNNING); use KVER=<version> or 'make modules-all'" >&2; exit 2; }
	@kver=$$($(TOP)/scripts/kver $(KVER) 2>/dev/null || echo $(KVER)); \
	test -d /lib/modules/$$kver/build || $(TOP)/scripts/setup; \
	test -d /lib/modules/$$kver/build || { echo "make: no headers for $$kver" >&2; exit 2; }; \
	out=$(BUILD)/$$kver; \
	mkdir -p $$out/module; \
	for f in $(SRCS); do ln -sfn $(TOP)/$$f $$out/$$f; done; \
	find $$out/module -xtype l -delete; \
	$(MAKE) -C /lib/modules/$$kver/build M=$$out modules \
		$(if $(W),W=$(W)) $(if $(C),C=$(C)) $(if $(V),V=$(V))

modules-all:
	@$(TOP)/scripts/setup
	@set -e; for k in $$($(TOP)/scripts/kver all); do \
		$(MAKE) -s --no-print-directory KVER=$$k module; \
		echo "built build/$$k/diofork.ko"; \
	done

selftests:
	@$(TOP)/scripts/setup
	@$(MAKE) -s --no-print-directory -C $(TOP)/selftests O=$(BUILD)/selftests

# The tools of make bench, profile and tcgperf (scripts/bench-tools/), built
# here only, all the same way.
BENCH_TOOLS := $(patsubst $(TOP)/scripts/bench-tools/%.c,$(BUILD)/bench/%, \
	$(wildcard $(TOP)/scripts/bench-tools/*.c))

bench-tools: $(BENCH_TOOLS)

$(BUILD)/bench/%: $(TOP)/scripts/bench-tools/%.c $(wildcard $(TOP)/scripts/bench-tools/*.h)
	@mkdir -p $(@D)
	gcc -O2 -Wall -Wextra -static -pthread -o $@ $< -laio

check:
	@$(TOP)/scripts/check

demo:
	@$(TOP)/scripts/demo

bench:
	@$(TOP)/scripts/bench $(BENCH_ARGS)

profile:
	@$(TOP)/scripts/profile $(PROFILE_ARGS)

tcgperf:
	@$(TOP)/scripts/tcgperf $(TCGPERF_ARGS)

lint:
	@$(TOP)/scripts/lint

clean:
	rm -rf $(BUILD)
