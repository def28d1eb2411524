# credfs: a FUSE filesystem that serves always-fresh OAuth tokens as files.
#
#   make                 build build/credfs and build/credfsctl
#   make check           unit + integration tests, plain and ASan+UBSan builds
#   make SANITIZE=1      the ASan+UBSan build, in build-asan/
#   make deps            install missing Debian packages (apt-get)
#   make demo            mount a demo against the fake provider
#   make install         PREFIX=/usr/local DESTDIR=

VERSION := 0.1.0

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/credfs
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
PKG_CONFIG ?= pkg-config
PYTHON ?= /usr/bin/python3
CLANG_FORMAT ?= clang-format
# Bounds: one integration test, and the whole integration run.
TEST_TIMEOUT_S ?= 180
TEST_LIMIT_S ?= 1200
# The three-daemon PostgreSQL test's length: 20 s in make check; by hand,
# make check PG_SHARE_SECONDS=60 for the long version (the test's own
# default when run directly).
PG_SHARE_SECONDS ?= 20

PKGS := fuse3 libcurl libcrypto jansson libpq liburcu-bp
DEB_PACKAGES := build-essential pkg-config libfuse3-dev fuse3 \
	libcurl4-openssl-dev libssl-dev libjansson-dev libcmocka-dev \
	python3 python3-pytest python3-pytest-timeout \
	python3-prometheus-client inotify-tools \
	python3-cryptography systemd man-db clang libclang-rt-14-dev \
	libpq-dev postgresql liburcu-dev debhelper lintian python3-yaml gdb

ifeq ($(SANITIZE),1)
BUILD ?= build-asan
SAN := -fsanitize=address,undefined -fno-sanitize-recover=all \
	-fno-omit-frame-pointer -DCREDFS_CHECK_SECTIONS
HARDEN :=
else ifeq ($(SANITIZE),fuzz)
# libFuzzer targets (tests/fuzz/): clang, ASan and UBSan.
BUILD ?= build-fuzz
CC := clang
SAN := -fsanitize=fuzzer-no-link,address,undefined \
	-fno-sanitize-recover=all -fno-omit-frame-pointer \
	-Wno-unknown-warning-option
HARDEN :=
else
BUILD ?= build
SAN :=
HARDEN := -D_FORTIFY_SOURCE=2 -fstack-protector-strong
endif

# CFLAGS, LDFLAGS and LDLIBS are the user's (make CFLAGS=-O0 works); what
# the build needs is added to them in ALL_*.
CFLAGS ?= -O2 -g
ALL_CFLAGS := -std=gnu11 -Wall -Wextra -Wformat=2 -Wshadow \
	-Wno-unused-parameter -Wno-format-truncation -D_GNU_SOURCE -fPIE $(HARDEN) $(SAN) -MMD -MP \
	-DCREDFS_VERSION='"$(VERSION)"' \
	$(shell $(PKG_CONFIG) --cflags $(PKGS))
ifneq ($(CI),)
ALL_CFLAGS += -Werror
endif
ALL_CFLAGS += $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS := -pie -Wl,-z,relro,-z,now $(SAN) $(LDFLAGS)
ALL_LDLIBS := $(LDLIBS) $(shell $(PKG_CONFIG) --libs $(PKGS)) -lpthread -lm

ifeq ($(V),1)
Q :=
else
Q := @
endif

CTL_SRCS := $(wildcard src/ctl*.c)
LIB_SRCS := $(filter-out src/main.c $(CTL_SRCS),$(wildcard src/*.c))
LIB_OBJS := $(LIB_SRCS:src/%.c=$(BUILD)/%.o)
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/%)

all: $(BUILD)/credfs $(BUILD)/credfsctl

# The dependency file names the object both ways, so that a build run
# with BUILD given as an absolute path (the packaging test does) does not
# hide header changes from the next relative one.
$(BUILD)/%.o: src/%.c | $(BUILD)
	@echo "  CC      $@"
	$(Q)$(CC) $(ALL_CFLAGS) -MT $(BUILD)/$*.o -MT $(abspath $(BUILD))/$*.o \
		-Isrc -c -o $@ $<

$(BUILD)/libcredfs.a: $(LIB_OBJS)
	@echo "  AR      $@"
	$(Q)$(AR) rcs $@ $^

$(BUILD)/credfs: $(BUILD)/main.o $(BUILD)/libcredfs.a
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

$(BUILD)/credfsctl: $(CTL_SRCS:src/%.c=$(BUILD)/%.o) $(BUILD)/libcredfs.a
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS)

$(BUILD)/test_%.o: tests/unit/test_%.c | $(BUILD)
	@echo "  CC      $@"
	$(Q)$(CC) $(ALL_CFLAGS) -MT $(BUILD)/test_$*.o \
		-MT $(abspath $(BUILD))/test_$*.o -Isrc -c -o $@ $<

$(BUILD)/test_%: $(BUILD)/test_%.o $(BUILD)/libcredfs.a
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(ALL_LDLIBS) -lcmocka

$(BUILD):
	$(Q)mkdir -p $@

# One build: unit tests, then the integration suite against real mounts.
check-one: all $(UNIT_BINS) $(BUILD)/bench-tokend $(BUILD)/bench-seed \
		$(BUILD)/bench-nullfs
	$(Q)set -e; for t in $(UNIT_BINS); do echo "  UNIT    $$t"; ./$$t; done
	$(Q)CREDFS_BUILD=$(abspath $(BUILD)) CREDFS_TEST_TAG=$(CREDFS_TEST_TAG) \
		PG_SHARE_SECONDS=$(PG_SHARE_SECONDS) \
		timeout -k 30 $(TEST_LIMIT_S) \
		$(PYTHON) -m pytest -q -p no:cacheprovider --durations=10 \
		--timeout=$(TEST_TIMEOUT_S) tests/integration

# The fault-injection soak (tests/soak/) for SOAK_SECONDS; by hand, for
# example SOAK_SECONDS=600 make soak (SANITIZE=1 for the ASan build).
SOAK_SECONDS ?= 60
soak: all
	$(Q)CREDFS_BUILD=$(abspath $(BUILD)) SOAK_SECONDS=$(SOAK_SECONDS) \
		CREDFS_TEST_TAG=$(CREDFS_TEST_TAG) \
		timeout -k 30 $$(( $(SOAK_SECONDS) * 2 + 300 )) \
		$(PYTHON) -m pytest -q -s -p no:cacheprovider \
		--timeout=$$(( $(SOAK_SECONDS) * 2 + 240 )) tests/soak

# Everything, side by side: the plain build with the soak, the ASan+UBSan
# build of the same tests (their users and groups named apart by
# CREDFS_TEST_TAG), and each fuzz target for a short while, one at a time
# (a fuzzer takes a core; the suites mostly wait). Each run's output is
# printed whole when it ends.
check:
	$(Q)$(MAKE) --no-print-directory -j3 --output-sync=recurse \
		check-plain check-asan check-fuzz

check-fuzz:
	$(Q)$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(CHECK_FUZZ_SECONDS) \
		FUZZ_JOBS=1

check-plain:
	$(Q)$(MAKE) --no-print-directory check-one CREDFS_TEST_TAG=p
	$(Q)$(MAKE) --no-print-directory soak CREDFS_TEST_TAG=p

check-asan:
	$(Q)$(MAKE) --no-print-directory check-one SANITIZE=1 CREDFS_TEST_TAG=a

FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 60
CHECK_FUZZ_SECONDS ?= 30
FUZZ_JOBS ?= 2

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(BUILD)/libcredfs.a
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_CFLAGS) -Isrc -fsanitize=fuzzer $(ALL_LDFLAGS) -o $@ $< \
		$(BUILD)/libcredfs.a $(ALL_LDLIBS)

# Each target for FUZZ_SECONDS from its committed seeds (new inputs go to
# a scratch directory); a crash fails, and its input is kept in build-fuzz/.
fuzz:
	$(Q)$(MAKE) --no-print-directory SANITIZE=fuzz \
		$(FUZZ_TARGETS:%=build-fuzz/%)
	$(Q)$(MAKE) --no-print-directory -j$(FUZZ_JOBS) --output-sync=target \
		$(FUZZ_TARGETS:%=fuzz-run-%)

fuzz-run-%:
	$(Q)t=$*; c=tests/fuzz/corpus/$${t#fuzz_}; w=build-fuzz/$$t.corpus; \
	mkdir -p $$w; echo "  FUZZ    $$t ($(FUZZ_SECONDS) s)"; \
	build-fuzz/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 \
		-artifact_prefix=build-fuzz/$$t- $$w $$c \
		2> build-fuzz/$$t.log || { tail -40 build-fuzz/$$t.log; \
		exit 1; }; \
	grep -h "stat::number_of_executed_units" build-fuzz/$$t.log

deps:
	$(Q)missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | \
			grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "  APT    $$missing"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $$missing; \
	else echo "  DEPS    all present"; fi
	$(Q)command -v npm >/dev/null || { echo "  APT     nodejs npm"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends nodejs npm; }
	$(Q)if ! cmp -s tests/mcp/package-lock.json \
		tests/mcp/node_modules/.credfs-lock 2>/dev/null; then \
		echo "  NPM     tests/mcp (package-lock.json)"; \
		cd tests/mcp && npm ci --no-audit --no-fund --loglevel=error && \
		cp package-lock.json node_modules/.credfs-lock; \
	else echo "  NPM     tests/mcp present"; fi

$(BUILD)/bench-%: bench/%.c bench/bench.h | $(BUILD)
	@echo "  CC      $@"
	$(Q)$(CC) -O2 -g -std=gnu11 -Wall -Wextra $(SAN) -pthread -o $@ $<

$(BUILD)/bench-nullfs: bench/nullfs.c | $(BUILD)
	@echo "  CC      $@"
	$(Q)$(CC) -O2 -g -std=gnu11 -Wall -Wextra $(SAN) \
		$$($(PKG_CONFIG) --cflags fuse3) -o $@ $< \
		$$($(PKG_CONFIG) --libs fuse3)

$(BUILD)/bench-seed: bench/seed.c bench/bench.h $(BUILD)/libcredfs.a
	@echo "  LD      $@"
	$(Q)$(CC) $(ALL_CFLAGS) -Isrc $(ALL_LDFLAGS) -o $@ $< $(BUILD)/libcredfs.a \
		$(ALL_LDLIBS)

# The read-path benchmark (docs/performance.md); BENCH_SECONDS, BENCH_ROUNDS,
# BENCH_THREADS.
bench: all $(BUILD)/bench-reader $(BUILD)/bench-httpd $(BUILD)/bench-nullfs
	$(Q)CREDFS_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) bash bench/run.sh

# The longest stall a reader sees across upgrades and crashes
# (docs/performance.md); BENCH_STALL_EVENTS of each.
bench-stall: all
	$(Q)CREDFS_BUILD=$(abspath $(BUILD)) $(PYTHON) bench/stall.py

# Refresh at scale (docs/performance.md): BENCH_TENANTS (x 10
# credentials; 10000 for 100,000), BENCH_SCALE_SECONDS, BENCH_LIFETIME,
# BENCH_STORE (disk, tmpfs, postgres), BENCH_DAEMONS, BENCH_DOWNTIME,
# BENCH_TENANTS_DIR, BENCH_SERIES.
bench-scale: all $(BUILD)/bench-tokend $(BUILD)/bench-seed
	$(Q)CREDFS_BUILD=$(abspath $(BUILD)) $(PYTHON) bench/scale.py

demo: all
	$(Q)CREDFS_BUILD=$(abspath $(BUILD)) PYTHON=$(PYTHON) \
		bash examples/demo.sh

UNITS := credfs.service credfs@.service

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSTEMDUNITDIR) \
		$(DESTDIR)$(DOCDIR)/examples/providers $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(BASHCOMPDIR)
	install -m 0755 $(BUILD)/credfs $(BUILD)/credfsctl $(DESTDIR)$(BINDIR)/
	for u in $(UNITS); do \
		sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
			systemd/$$u.in > $(DESTDIR)$(SYSTEMDUNITDIR)/$$u && \
		chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
	done
	install -m 0644 man/credfs.8 man/credfsctl.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 man/credfs.json.5 $(DESTDIR)$(MANDIR)/man5/
	install -m 0644 src/completion/credfsctl.bash \
		$(DESTDIR)$(BASHCOMPDIR)/credfsctl
	install -m 0644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	install -m 0644 examples/config.json $(DESTDIR)$(DOCDIR)/examples/
	install -m 0644 examples/providers/*.json \
		$(DESTDIR)$(DOCDIR)/examples/providers/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/credfs $(DESTDIR)$(BINDIR)/credfsctl \
		$(DESTDIR)$(MANDIR)/man8/credfs.8 \
		$(DESTDIR)$(MANDIR)/man8/credfsctl.8 \
		$(DESTDIR)$(MANDIR)/man5/credfs.json.5 \
		$(DESTDIR)$(BASHCOMPDIR)/credfsctl
	for u in $(UNITS); do rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/$$u; done
	rm -rf $(DESTDIR)$(DOCDIR)

format:
	$(CLANG_FORMAT) -i src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all bench bench-scale bench-stall check check-one check-plain check-asan check-fuzz deps demo fuzz install uninstall format clean soak
.SECONDARY:

-include $(wildcard $(BUILD)/*.d)
