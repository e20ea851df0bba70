# mxlb - see README.md. `make`, `make run`, `make test`, `make fuzz`,
# `make SANITIZE=1 test`, `make deps`.
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
# given); WERROR=-Werror or WERROR= to choose.
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
SSL_CFLAGS := -I/usr/include/android
SSL_LIBS := -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android -lssl -lcrypto
WARN := -Wall -Wextra $(WERROR) -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
MXLB_CFLAGS := -std=gnu11 -D_GNU_SOURCE -I. $(SSL_CFLAGS) $(WARN)
COMPILE = $(CC) $(MXLB_CFLAGS) $(CPPFLAGS) $(CFLAGS) $(SAN) -MMD -MP
LINK = $(CC) $(CFLAGS) $(SAN) $(LDFLAGS)
LIBS = -luring -lyaml $(SSL_LIBS) -lpthread $(LDLIBS)

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

.PHONY: all run test unit integration test-bench fuzz bench compare clean deps deps-test format FORCE
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

$(OBJ)/%.o: %.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(COMPILE) -c -o $@ $<

$(LIBA): $(LIB_SRCS:%.c=$(OBJ)/%.o)
	@rm -f $@
	$(AR) rcs $@ $^

$(TOOLA): $(TOOL_SRCS:%.c=$(OBJ)/%.o)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/mxlb: $(OBJ)/proxy/main.o $(LIBA) $(BUILD)/.variant
	$(LINK) -o $@ $< $(LIBA) $(LIBS)
$(BUILD)/mxlb-sink: $(OBJ)/bench/sink.o $(TOOLA) $(LIBA) $(BUILD)/.variant
	$(LINK) -o $@ $< $(TOOLA) $(LIBA) $(LIBS)
$(BUILD)/mxlb-bench: $(OBJ)/bench/bench.o $(TOOLA) $(LIBA) $(BUILD)/.variant
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

# Layout by .clang-format (Debian's clang-format), applied to every C file.
format:
	clang-format -i $(wildcard core/*.[ch] config/*.[ch] tls/*.[ch] proxy/*.[ch] bench/*.[ch] tests/unit/*.c tests/fuzz/*.[ch])

clean:
	rm -rf $(BUILD)

FORCE:

# keep objects make would see as intermediate
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
