# mxlb - see README.md. `make`, `make run`, `make test`, `make fuzz`,
# `make SANITIZE=1 test`.

CC ?= cc
.SECONDEXPANSION:
BUILD := build
ifeq ($(SANITIZE),1)
VARIANT := asan
OPT := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
else
VARIANT := rel
OPT := -O2
endif
OBJ := $(BUILD)/$(VARIANT)

SSL_CFLAGS := -I/usr/include/android
SSL_LIBS := -L/usr/lib/x86_64-linux-gnu/android -Wl,-rpath,/usr/lib/x86_64-linux-gnu/android -lssl -lcrypto
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2
CFLAGS := -std=gnu11 -g $(OPT) $(WARN) -D_GNU_SOURCE -I. $(SSL_CFLAGS) -MMD -MP
LDFLAGS := $(OPT)
LIBS := -luring -lyaml $(SSL_LIBS) -lpthread

LIB_SRCS := $(wildcard core/*.c config/*.c tls/*.c) $(filter-out proxy/main.c,$(wildcard proxy/*.c))
LIB_OBJS := $(LIB_SRCS:%.c=$(OBJ)/%.o)
LIBA := $(OBJ)/libmxlb.a

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(UNIT_SRCS:tests/unit/%.c=$(OBJ)/tests/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_SECONDS ?= 20

# mxlb-bench (the load generator) is built once its source exists.
BINS := $(BUILD)/mxlb $(BUILD)/mxlb-sink $(if $(wildcard bench/bench.c),$(BUILD)/mxlb-bench)

.PHONY: all run test unit integration fuzz bench compare clean deps deps-test FORCE
all: deps $(BINS)

deps:
	@tests/deps.sh build
deps-test:
	@tests/deps.sh test

# The binaries are rebuilt when the variant (plain or sanitized) changes.
$(BUILD)/.variant: FORCE
	@mkdir -p $(BUILD)
	@[ "$$(cat $@ 2>/dev/null)" = "$(VARIANT)" ] || echo $(VARIANT) > $@

$(OBJ)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(LIBA): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/mxlb: $(OBJ)/proxy/main.o $(LIBA) $(BUILD)/.variant
	$(CC) $(LDFLAGS) -o $@ $(OBJ)/proxy/main.o $(LIBA) $(LIBS)
# Tools and tests link only the objects they use, so each builds on its own.
SINK_OBJS := bench/sink.o proxy/proxy_proto.o config/config.o
BENCH_OBJS := bench/bench.o proxy/smtp_parse.o config/config.o
$(BUILD)/mxlb-sink: $(SINK_OBJS:%=$(OBJ)/%) $(BUILD)/.variant
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIBS)
$(BUILD)/mxlb-bench: $(BENCH_OBJS:%=$(OBJ)/%) $(BUILD)/.variant
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIBS) -lm

# Each unit test: its own object plus the modules it tests.
UNIT_DEPS_test_config := config/config.o
UNIT_DEPS_test_smtp_parse := proxy/smtp_parse.o
UNIT_DEPS_test_proxy_proto := proxy/proxy_proto.o
UNIT_DEPS_test_smtp_track := proxy/smtp_track.o
UNIT_DEPS_test_clienthello := tls/clienthello.o
UNIT_DEPS_test_balance := proxy/pool.o proxy/lb_roundrobin.o proxy/lb_leastconn.o proxy/lb_chash.o \
	proxy/lb_random.o
$(OBJ)/tests/%: $(OBJ)/tests/unit/%.o $$(addprefix $(OBJ)/,$$(UNIT_DEPS_$$*))
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LIBS) -lcmocka

run: all
	@tests/quickstart.sh

unit: deps-test $(UNIT_BINS)
	@set -e; for t in $(UNIT_BINS); do echo "== $$t"; $$t; done

integration: deps-test $(BINS)
	cd tests/integration && MXLB_BUILD=$(CURDIR)/$(BUILD) /usr/bin/python3 -m pytest -q -rs $(PYTEST_ARGS)

test: deps-test all
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory integration

# libFuzzer targets, built with clang against the library sources.
FUZZ_CFLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -I. $(SSL_CFLAGS) -fsanitize=fuzzer,address,undefined
FUZZ_DEPS_fuzz_command := proxy/smtp_parse.c
FUZZ_DEPS_fuzz_reply := proxy/smtp_parse.c
FUZZ_DEPS_fuzz_proxy := proxy/proxy_proto.c
FUZZ_DEPS_fuzz_track := proxy/smtp_track.c
FUZZ_DEPS_fuzz_config := config/config.c
FUZZ_DEPS_fuzz_clienthello := tls/clienthello.c
$(BUILD)/fuzz/%: tests/fuzz/%.c $$(FUZZ_DEPS_$$*)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $(filter %.c,$^) $(LIBS)

fuzz:
	@tests/deps.sh fuzz
	$(MAKE) --no-print-directory $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); \
	  mkdir -p $(BUILD)/fuzz/corpus-$$n; \
	  echo "== $$n for $(FUZZ_SECONDS)s"; \
	  d=; [ -f tests/fuzz/$$n.dict ] && d=-dict=tests/fuzz/$$n.dict; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 $$d $(BUILD)/fuzz/corpus-$$n tests/fuzz/corpus/$$n 2>&1 | tail -3; done

# The load generator and the side-by-side comparison are not built yet.
bench: all
	@bench/bench.sh

compare: all
	@bench/compare.sh

clean:
	rm -rf $(BUILD)

FORCE:

# keep objects make would see as intermediate
.SECONDARY:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
