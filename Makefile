# mxlb - see README.md. `make`, `make run`, `make test`, `make fuzz`,
# `make SANITIZE=1 test`, `make deps`, `make install`, `make certs`.
#
# Packages (SPEC section 12): `make` alone installs nothing; it checks that
# the build packages are there and, when one is missing, stops before
# compiling and says so. `make deps` installs them; `make run`, `make test`
# (and unit, integration, test-bench), `make bench`, `make compare` and
# `make fuzz` install what they need. Either way tests/deps.sh runs at most
# once per make, for every goal at once, and before anything compiles: each
# compile has its stamp as an order-only prerequisite.
#
# Flags: CFLAGS (default -g -O2), CPPFLAGS, LDFLAGS and LDLIBS from the
# environment or the command line come after mxlb's own, so a packager's
# flags are added to them. -Werror only in developer builds (CFLAGS not
# given); WERROR=-Werror or WERROR= to choose. Hardening is on unless
# HARDEN= : stack protector, PIE, full RELRO (BIND_NOW) and, where the
# flags optimise and no sanitizer runs, _FORTIFY_SOURCE=2 (ASan's
# interceptors and the fortified _chk functions get in each other's way).
# The packager's own -D_FORTIFY_SOURCE in CPPFLAGS or CFLAGS wins.
#
# BoringSSL: Debian's android-libboringssl-dev, in the multiarch directory
# of the compiler's target; BORINGSSL_INCDIR and BORINGSSL_LIBDIR (or
# MULTIARCH) point elsewhere.
#
# make install: PREFIX (/usr/local), DESTDIR, and SBINDIR, BINDIR, MANDIR,
# DOCDIR, UNITDIR, SYSCONFDIR (/etc: the path in the unit) to move one part.
# It builds what is not built yet and installs nothing else.
#
# Every library source (core/ config/ tls/ proxy/ but proxy/main.c) goes into
# libmxlb.a, which mxlb, the unit tests (tests/unit/test_*.c) and the bench
# tools link: each takes only the objects it needs. bench/*.c other than the
# tools' own files is their toolkit. Fuzz targets (tests/fuzz/fuzz_*.c) link
# a clang-built archive of the same sources. New files are found by wildcard.

BUILD := build
ifeq ($(SANITIZE),1)
VARIANT := asan
SAN := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
VARIANT := rel
SAN :=
endif
OBJ := $(BUILD)/$(VARIANT)

ifeq ($(origin CFLAGS),undefined)
WERROR ?= -Werror
endif
CFLAGS ?= -g -O2
# DEB_HOST_MULTIARCH from dpkg-buildpackage, else the compiler's own
# target (right when cross-compiling), else dpkg's host.
ifeq ($(origin MULTIARCH),undefined)
MULTIARCH := $(or $(DEB_HOST_MULTIARCH),$(shell $(CC) -print-multiarch 2>/dev/null),$(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null))
endif
BORINGSSL_INCDIR ?= /usr/include/android
BORINGSSL_LIBDIR ?= /usr/lib/$(MULTIARCH)/android
SSL_CFLAGS := -I$(BORINGSSL_INCDIR)
# the directory is Debian's private one, not on the loader's path
SSL_LIBS := -L$(BORINGSSL_LIBDIR) -Wl,-rpath,$(BORINGSSL_LIBDIR) -lssl -lcrypto

HARDEN ?= 1
ifeq ($(HARDEN),1)
HARDEN_CFLAGS := -fstack-protector-strong -fPIE
HARDEN_LDFLAGS := -pie -Wl,-z,relro,-z,now
ifeq ($(SANITIZE)$(findstring _FORTIFY_SOURCE,$(CPPFLAGS) $(CFLAGS)),)
ifneq ($(filter-out -O0,$(filter -O%,$(CFLAGS))),)
# -U first: some compilers (Ubuntu's) define it already
HARDEN_CFLAGS += -U_FORTIFY_SOURCE -D_FORTIFY_SOURCE=2
endif
endif
endif
WARN := -Wall -Wextra $(WERROR) -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
MXLB_CFLAGS := -std=gnu11 -D_GNU_SOURCE -I. $(SSL_CFLAGS) $(WARN) $(HARDEN_CFLAGS)
COMPILE = $(CC) $(MXLB_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(SAN) -MMD -MP
LINK = $(CC) $(HARDEN_LDFLAGS) $(CFLAGS) $(SAN) $(LDFLAGS)
LIBS = -luring -lyaml -lcares $(SSL_LIBS) -lpthread $(LDLIBS)

LIB_SRCS := $(wildcard core/*.c config/*.c tls/*.c) $(filter-out proxy/main.c,$(wildcard proxy/*.c))
LIBA := $(OBJ)/libmxlb.a
TOOL_MAINS := bench/bench.c bench/sink.c
TOOL_SRCS := $(filter-out $(TOOL_MAINS),$(wildcard bench/*.c))
TOOLA := $(OBJ)/libbenchtool.a
BINS := $(BUILD)/mxlb $(BUILD)/mxlb-sink $(BUILD)/mxlb-bench

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(OBJ)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 20

.PHONY: all run test unit integration test-bench fuzz bench compare clean deps deps-test format \
	install uninstall certs FORCE
all: $(BINS)

# ---- packages: one stamp for the goals of this make (see the top)

DEPS_FOR_deps := build
DEPS_FOR_run := build
DEPS_FOR_bench := build
DEPS_FOR_compare := build
DEPS_FOR_deps-test := test
DEPS_FOR_test := test
DEPS_FOR_unit := test
DEPS_FOR_integration := test
DEPS_FOR_test-bench := test
DEPS_FOR_fuzz := fuzz
DEPS_SETS := $(sort $(foreach g,$(MAKECMDGOALS),$(DEPS_FOR_$(g))))
empty :=
space := $(empty) $(empty)
DEPS_STAMP := $(BUILD)/.deps/$(if $(DEPS_SETS),$(subst $(space),+,$(DEPS_SETS)),check)
# `make DEPS_CHECK=` skips the check of `make` alone (packages installed
# some other way than Debian's).
DEPS_CHECK ?= 1

$(DEPS_STAMP): tests/deps.sh $(if $(filter deps deps-test,$(MAKECMDGOALS)),FORCE)
	@mkdir -p $(@D)
	@$(if $(DEPS_SETS),tests/deps.sh $(DEPS_SETS),$(if $(DEPS_CHECK),tests/deps.sh --check build,:))
	@touch $@

deps deps-test: $(DEPS_STAMP)

# ---- compiling and linking

# The binaries are relinked when the variant (plain or sanitized) changes.
$(BUILD)/.variant: FORCE
	@mkdir -p $(BUILD)
	@[ "$$(cat $@ 2>/dev/null)" = "$(VARIANT)" ] || echo $(VARIANT) > $@

# ... and everything is rebuilt when the flags change (CFLAGS, HARDEN=...).
FLAGS_LINE = $(COMPILE) | $(LINK) | $(LIBS)
$(OBJ)/.flags: FORCE
	@mkdir -p $(@D)
	@echo '$(FLAGS_LINE)' | cmp -s - $@ || echo '$(FLAGS_LINE)' > $@

$(OBJ)/%.o: %.c $(OBJ)/.flags | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(COMPILE) -c -o $@ $<

$(LIBA): $(LIB_SRCS:%.c=$(OBJ)/%.o)
	@rm -f $@
	$(AR) rcs $@ $^

$(TOOLA): $(TOOL_SRCS:%.c=$(OBJ)/%.o)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/mxlb: $(OBJ)/proxy/main.o $(LIBA) $(BUILD)/.variant $(OBJ)/.flags
	$(LINK) -o $@ $< $(LIBA) $(LIBS)
$(BUILD)/mxlb-sink: $(OBJ)/bench/sink.o $(TOOLA) $(LIBA) $(BUILD)/.variant $(OBJ)/.flags
	$(LINK) -o $@ $< $(TOOLA) $(LIBA) $(LIBS)
$(BUILD)/mxlb-bench: $(OBJ)/bench/bench.o $(TOOLA) $(LIBA) $(BUILD)/.variant $(OBJ)/.flags
	$(LINK) -o $@ $< $(TOOLA) $(LIBA) $(LIBS) -lm

$(UNIT_BINS): $(OBJ)/tests/%: $(OBJ)/tests/unit/%.o $(LIBA)
	$(LINK) -o $@ $< $(LIBA) $(LIBS) -lcmocka

# ---- running

run: all
	@tests/quickstart.sh

# pytest in tests/$(1). With PYTEST_ARGS (say -k tls) a folder where
# nothing matches (pytest's status 5) is no failure.
pytest = cd tests/$(1) && MXLB_BUILD=$(abspath $(BUILD)) /usr/bin/python3 -m pytest -q -rs \
	$(PYTEST_ARGS)$(if $(PYTEST_ARGS), || [ $$? -eq 5 ])

unit: $(UNIT_BINS) | $(DEPS_STAMP)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: $(BINS) | $(DEPS_STAMP)
	$(call pytest,integration)

# The bench tools' own tests: mxlb-sink, mxlb-bench, bench/compare.sh.
test-bench: $(BINS) | $(DEPS_STAMP)
	$(call pytest,bench)

# Everything is built first (in parallel with -j), then run one suite
# after the other.
test: $(BINS) $(UNIT_BINS) | $(DEPS_STAMP)
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory test-bench

# libFuzzer targets: clang, the library sources instrumented in an archive
# of their own.
FUZZ_CC ?= clang
FUZZ_CFLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -I. $(SSL_CFLAGS)
FUZZ_OBJ := $(BUILD)/fuzz/obj
FUZZ_LIBA := $(BUILD)/fuzz/libmxlb-fuzz.a

$(FUZZ_OBJ)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c -o $@ $<

$(FUZZ_LIBA): $(LIB_SRCS:%.c=$(FUZZ_OBJ)/%.o)
	@rm -f $@
	$(AR) rcs $@ $^

$(FUZZ_BINS): $(BUILD)/fuzz/%: $(FUZZ_OBJ)/tests/fuzz/%.o $(FUZZ_LIBA)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_LIBA) $(LIBS)

fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); \
	  mkdir -p $(BUILD)/fuzz/corpus-$$n; \
	  echo "== $$n for $(FUZZ_SECONDS)s"; \
	  d=; [ -f tests/fuzz/$$n.dict ] && d=-dict=tests/fuzz/$$n.dict; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 $$d $(BUILD)/fuzz/corpus-$$n tests/fuzz/corpus/$$n 2>&1 | tail -3; done

# Benchmarks: bench/README.md.
bench: all
	@MXLB_BUILD=$(abspath $(BUILD)) bench/bench.sh

compare: all
	@MXLB_BUILD=$(abspath $(BUILD)) bench/compare.sh

# ---- installing

PREFIX ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/mxlb
UNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
INSTALL ?= install
EXAMPLES := $(wildcard config/examples/*.yaml)

# The binaries as they are: `sudo make install` after `make` builds
# nothing (and a tree never built gets built, by whoever runs it).
install: $(BINS)
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR) $(DESTDIR)$(UNITDIR) \
		$(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	$(INSTALL) -m 0755 $(BUILD)/mxlb $(DESTDIR)$(SBINDIR)/mxlb
	$(INSTALL) -m 0755 $(BUILD)/mxlb-sink $(BUILD)/mxlb-bench $(DESTDIR)$(BINDIR)/
	sed -e 's|@SBINDIR@|$(SBINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' config/mxlb.service \
		> $(DESTDIR)$(UNITDIR)/mxlb.service.tmp
	chmod 0644 $(DESTDIR)$(UNITDIR)/mxlb.service.tmp
	mv -f $(DESTDIR)$(UNITDIR)/mxlb.service.tmp $(DESTDIR)$(UNITDIR)/mxlb.service
	$(INSTALL) -m 0644 $(EXAMPLES) $(DESTDIR)$(DOCDIR)/examples/
	$(INSTALL) -m 0644 README.md $(DESTDIR)$(DOCDIR)/
	$(INSTALL) -m 0644 man/mxlb.8 $(DESTDIR)$(MANDIR)/man8/mxlb.8
	$(INSTALL) -m 0644 man/mxlb.yaml.5 $(DESTDIR)$(MANDIR)/man5/mxlb.yaml.5

# What install wrote, file by file (never a directory tree: DOCDIR may
# have been pointed anywhere), then the doc directories if left empty.
uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/mxlb $(DESTDIR)$(BINDIR)/mxlb-sink $(DESTDIR)$(BINDIR)/mxlb-bench \
		$(DESTDIR)$(UNITDIR)/mxlb.service $(DESTDIR)$(MANDIR)/man8/mxlb.8 \
		$(DESTDIR)$(MANDIR)/man5/mxlb.yaml.5 $(DESTDIR)$(DOCDIR)/README.md \
		$(EXAMPLES:config/examples/%=$(DESTDIR)$(DOCDIR)/examples/%)
	-rmdir $(DESTDIR)$(DOCDIR)/examples $(DESTDIR)$(DOCDIR) 2>/dev/null

# Self-signed certificates where the TLS examples name them, in /etc/mxlb
# (as root): to try an example as it is. A file that exists is never
# touched. Nothing else makes or installs certificates.
certs:
	@config/make-certs.sh /etc/mxlb $(EXAMPLES)

# Layout by .clang-format (Debian's clang-format), applied to every C file.
format:
	clang-format -i $(wildcard core/*.[ch] config/*.[ch] tls/*.[ch] proxy/*.[ch] bench/*.[ch] tests/unit/*.c tests/fuzz/*.[ch])

clean:
	rm -rf $(BUILD)

FORCE:

# keep objects make would see as intermediate
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
