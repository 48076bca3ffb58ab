# lua-wolkvox
#
#   make              build the C core for Lua 5.4       (build/5.4/wolkvox/core.so), and
#                     wolkvox.redis (fleet mode) when pkg-config finds hiredis; REDIS=no skips it;
#                     wolkvox.xlsx (--format xlsx) with libxlsxwriter (XLSX=no skips it) and
#                     wolkvox.pg (COPY into PostgreSQL) with libpq (PG=no skips it)
#   make LUA=luajit   build it for LuaJIT / OpenResty    (build/luajit/wolkvox/core.so)
#   make test         run the spec suite on every flavour (see spec/run)
#   make check        the quick loop: Lua 5.4 only, without the specs tagged
#                     #slow (property runs, kills, Redis), #nginx, #packaging
#   make demo         start the bundled fake server and run examples/seed_report.lua, then load
#                     last month's call detail into build/demo/calls.db (SQLite) and query it
#   make deps         install the Debian packages the build and tests use
#   make asan         the spec suite with ASan + UBSan
#   make valgrind     the spec suite under valgrind
#   make lint         luacheck over lua/, spec/, bin/, examples/, bench/, tools/
#   make docs         the API pages (LDoc) in build/docs/
#   make mutate       one-line mutations, each against its specs (slow; tools/mutations.txt)
#   make bench        the benchmarks in bench/
#   make fuzz         libFuzzer on the JSON decoder and on the incremental one (clang)
#   make install      install what the rock installs into LUA_CMOD / LUA_LMOD / PREFIX (DESTDIR honoured),
#                     with the man page wolkvox(1) (MANDIR) and the bash completion (BASHCOMPDIR)
#   make man          man/wolkvox.1 again from the parser of --help (tools/gen-man.lua)
#   make completion   completion/wolkvox.bash again from the parser and the registry
#   make rock         the source rock of the committed HEAD (build/rock/lua-wolkvox-<version>-1.src.rock)
#   make print        show the settings

LUA       ?= lua5.4
CC        ?= cc
PKG       ?= pkg-config

ifeq ($(LUA),luajit)
  LUA_PC  ?= luajit
  FLAVOUR ?= luajit
else
  LUA_PC  ?= $(LUA)
  FLAVOUR ?= $(patsubst lua%,%,$(LUA))
endif

BUILD     ?= build/$(FLAVOUR)
LUA_CFLAGS := $(shell $(PKG) --cflags $(LUA_PC))
LUA_LIBS  := $(shell $(PKG) --libs $(LUA_PC))
CURL_CFLAGS := $(shell $(PKG) --cflags libcurl)
CURL_LIBS := $(shell $(PKG) --libs libcurl)
# zlib (Debian zlib1g-dev): a gzip answer whose rows become CSV lines is
# inflated on a thread of the core's own (src/inflate.c).
ZLIB_CFLAGS := $(shell $(PKG) --cflags zlib)
ZLIB_LIBS := $(shell $(PKG) --libs zlib)
PREFIX    ?= /usr/local
# make install's module directories: under PREFIX, where the interpreter looks
# by default for PREFIX=/usr/local (Debian keeps /usr/share/lua and
# /usr/lib/<arch>/lua, pkg-config's INSTALL_LMOD and INSTALL_CMOD, for its own
# packages), and where the installed wolkvox looks for any other PREFIX
# (PREFIX=$HOME/.local: no root, no LUA_PATH).
LUA_V     ?= $(shell $(LUA) -e 'io.write((_VERSION:match"%d+%.%d+"))' 2>/dev/null)
LUA_CMOD  ?= $(if $(LUA_V),$(PREFIX)/lib/lua/$(LUA_V))
LUA_LMOD  ?= $(if $(LUA_V),$(PREFIX)/share/lua/$(LUA_V))
DESTDIR   ?=

WARN      = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
            -Wpointer-arith -Wcast-qual -Wformat=2 -Wundef
OPT       ?= -O2 -g
CFLAGS    ?=
ALL_CFLAGS = -std=c99 -D_POSIX_C_SOURCE=200809L -fPIC -fvisibility=hidden $(OPT) $(WARN) \
             $(LUA_CFLAGS) $(CURL_CFLAGS) $(ZLIB_CFLAGS) $(CFLAGS)
LDFLAGS   ?=
ALL_LDFLAGS = -shared $(LDFLAGS)

SRC  = src/cells.c src/core.c src/csv.c src/inflate.c src/json.c src/request.c src/rowjson.c src/session.c src/sha256.c src/spool.c src/stream.c src/sys.c src/token.c src/transfer.c
HDR  = src/wolkvox.h src/compat.h src/session.h
OBJ  = $(patsubst src/%.c,$(BUILD)/obj/%.o,$(SRC))
LIB  = $(BUILD)/wolkvox/core.so

# wolkvox.redis, the optional hiredis binding of fleet mode: built when
# pkg-config finds hiredis (Debian libhiredis-dev), unless REDIS=no; with
# TLS when it finds OpenSSL too.
REDIS     ?= auto
ifneq ($(REDIS),no)
  HIREDIS_OK := $(shell $(PKG) --exists hiredis && echo yes)
endif
ifeq ($(HIREDIS_OK),yes)
  REDIS_LIB = $(BUILD)/wolkvox/redis.so
  HIREDIS_CFLAGS := $(shell $(PKG) --cflags hiredis)
  HIREDIS_LIBS := $(shell $(PKG) --libs hiredis)
  # rediss:// through OpenSSL (Debian libssl-dev), unless REDIS_TLS=no.
  ifneq ($(REDIS_TLS),no)
    ifeq ($(shell $(PKG) --exists openssl && echo yes),yes)
      HIREDIS_CFLAGS += -DWV_REDIS_TLS $(shell $(PKG) --cflags openssl)
      HIREDIS_LIBS += $(shell $(PKG) --libs openssl)
    endif
  endif
else
  REDIS_LIB =
endif

# wolkvox.xlsx, the optional libxlsxwriter binding of --format xlsx: built
# when pkg-config finds xlsxwriter (Debian libxlsxwriter-dev), unless XLSX=no.
XLSX      ?= auto
ifneq ($(XLSX),no)
  ifneq ($(wildcard src/xlsx.c),)
    XLSX_OK := $(shell $(PKG) --exists xlsxwriter && echo yes)
  endif
endif
ifeq ($(XLSX_OK),yes)
  XLSX_LIB = $(BUILD)/wolkvox/xlsx.so
  XLSX_CFLAGS := $(shell $(PKG) --cflags xlsxwriter)
  XLSX_LIBS := $(shell $(PKG) --libs xlsxwriter)
else
  XLSX_LIB =
endif

# wolkvox.pg, the optional libpq binding that loads PostgreSQL with COPY:
# built when pkg-config finds libpq (Debian libpq-dev), unless PG=no.
PG        ?= auto
ifneq ($(PG),no)
  ifneq ($(wildcard src/pg.c),)
    LIBPQ_OK := $(shell $(PKG) --exists libpq && echo yes)
  endif
endif
ifeq ($(LIBPQ_OK),yes)
  PG_LIB = $(BUILD)/wolkvox/pg.so
  LIBPQ_CFLAGS := $(shell $(PKG) --cflags libpq)
  LIBPQ_LIBS := $(shell $(PKG) --libs libpq)
else
  PG_LIB =
endif

OPTIONAL_LIBS = $(REDIS_LIB) $(XLSX_LIB) $(PG_LIB)

LUA_FILES = $(shell find lua -name '*.lua' | sort)

.PHONY: all spec-tools test check demo deps asan valgrind lint docs mutate bench fuzz fuzz-json fuzz-stream install uninstall clean print man completion

all: $(LIB) $(OPTIONAL_LIBS)

$(BUILD)/obj/%.o: src/%.c $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# Lua symbols come from the host; only libcurl, zlib and pthread are linked.
$(LIB): $(OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_LDFLAGS) -o $@ $(OBJ) $(CURL_LIBS) $(ZLIB_LIBS) -pthread

# Host programs the specs run (they embed Lua, so they link it).
spec-tools: $(BUILD)/states

$(BUILD)/states: spec/c/states.c
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -D_POSIX_C_SOURCE=200809L $(OPT) $(WARN) $(LUA_CFLAGS) -o $@ $< $(LUA_LIBS) -pthread

$(BUILD)/wolkvox/redis.so: src/redis.c src/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(HIREDIS_CFLAGS) $(ALL_LDFLAGS) -o $@ src/redis.c $(HIREDIS_LIBS) -pthread

$(BUILD)/wolkvox/xlsx.so: src/xlsx.c src/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(XLSX_CFLAGS) $(ALL_LDFLAGS) -o $@ src/xlsx.c $(XLSX_LIBS)

$(BUILD)/wolkvox/pg.so: src/pg.c src/compat.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(LIBPQ_CFLAGS) $(ALL_LDFLAGS) -o $@ src/pg.c $(LIBPQ_LIBS)

test: deps
	spec/run

# The whole suite stays `make test`; this is the loop while working.
check: all spec-tools
	TZ=America/Bogota busted --lua=lua5.4 --cpath='build/5.4/?.so' --exclude-tags=slow,nginx,packaging -o utfTerminal

# Paths that make the tree's modules win over installed ones.
TREE_ENV = LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_PATH_5_4="lua/?.lua;lua/?/init.lua;;" \
           LUA_CPATH="$(BUILD)/?.so;;" LUA_CPATH_5_4="$(BUILD)/?.so;;"

demo: deps
	$(MAKE) -s all
	$(TREE_ENV) $(LUA) examples/seed_report.lua
	@mkdir -p build/demo
	@echo
	$(TREE_ENV) $(LUA) examples/calls_into_sqlite.lua build/demo/calls.db

deps:
	tools/install-deps

asan:
	spec/run asan

valgrind:
	spec/run valgrind

lint:
	spec/run lint

mutate:
	tools/mutate $(MUTATE_ARGS)

# LDoc (Debian lua-ldoc, lua-discount); config.ld says what goes in.
docs:
	lua5.4 tools/docs-site.lua

bench:
	bench/run

# libFuzzer on the JSON decoder (needs clang with libclang-rt), FUZZ_SECONDS long.
FUZZ_SECONDS ?= 60
fuzz: fuzz-json fuzz-stream

# (undefined behaviour stops the run, as in the asan flavour: a report that
# scrolls by is a finding too)
FUZZ_CC = clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -std=c99 \
	  -D_POSIX_C_SOURCE=200809L \
	  $(LUA_CFLAGS) $(CURL_CFLAGS) -Isrc

# The whole-text decoder on any input.
fuzz-json:
	@mkdir -p build/fuzz/corpus
	$(FUZZ_CC) spec/c/fuzz_json.c $(SRC) $(LUA_LIBS) $(CURL_LIBS) $(ZLIB_LIBS) -pthread -o build/fuzz/fuzz_json
	build/fuzz/fuzz_json -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz/corpus spec/fuzz

# The incremental decoder, chunk boundaries chosen by the input, against the whole-text one.
fuzz-stream:
	@mkdir -p build/fuzz/corpus-stream
	$(FUZZ_CC) spec/c/fuzz_stream.c $(SRC) $(LUA_LIBS) $(CURL_LIBS) $(ZLIB_LIBS) -pthread -o build/fuzz/fuzz_stream
	build/fuzz/fuzz_stream -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz/corpus-stream spec/fuzz

# The generated man page and bash completion (committed; specs check they are current).
man:
	lua5.4 tools/gen-man.lua

completion:
	lua5.4 tools/gen-completion.lua

# What the rock installs: the Lua modules, the C core, bin/ (its first line
# names $(LUA), as LuaRocks' wrappers do) and the examples (the rock keeps them
# in its own directory; here they go with the docs), and the man page and the
# bash completion (the rock keeps them in its directory too: luarocks installs
# no man pages).  DESTDIR is honoured.
DOCDIR    ?= $(PREFIX)/share/doc/lua-wolkvox
MANDIR    ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
install: $(LIB) $(OPTIONAL_LIBS)
	@test -n "$(LUA_CMOD)" && test -n "$(LUA_LMOD)" || { echo "make install: LUA_CMOD and LUA_LMOD are unknown ($(LUA) does not run); set them" >&2; exit 1; }
	install -d $(DESTDIR)$(LUA_CMOD)/wolkvox $(DESTDIR)$(LUA_LMOD)/wolkvox
	install -m 0644 $(LIB) $(DESTDIR)$(LUA_CMOD)/wolkvox/core.so
	$(if $(REDIS_LIB),install -m 0644 $(REDIS_LIB) $(DESTDIR)$(LUA_CMOD)/wolkvox/redis.so)
	$(if $(XLSX_LIB),install -m 0644 $(XLSX_LIB) $(DESTDIR)$(LUA_CMOD)/wolkvox/xlsx.so)
	$(if $(PG_LIB),install -m 0644 $(PG_LIB) $(DESTDIR)$(LUA_CMOD)/wolkvox/pg.so)
	for f in $(LUA_FILES); do \
	  d=$(DESTDIR)$(LUA_LMOD)/$$(dirname $${f#lua/}); install -d $$d; install -m 0644 $$f $$d/; \
	done
	install -d $(DESTDIR)$(PREFIX)/bin
	for f in bin/*; do \
	  sed '1s|^#!.*|#!/usr/bin/env $(LUA)|' $$f > $(DESTDIR)$(PREFIX)/$$f.tmp && chmod 0755 $(DESTDIR)$(PREFIX)/$$f.tmp && \
	  mv -f $(DESTDIR)$(PREFIX)/$$f.tmp $(DESTDIR)$(PREFIX)/$$f || exit 1; \
	done
	for f in $$(find examples -type f | sort); do \
	  d=$(DESTDIR)$(DOCDIR)/$$(dirname $$f); install -d $$d; install -m 0644 $$f $$d/ || exit 1; \
	done
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(BASHCOMPDIR)
	install -m 0644 man/wolkvox.1 $(DESTDIR)$(MANDIR)/man1/wolkvox.1
	install -m 0644 completion/wolkvox.bash $(DESTDIR)$(BASHCOMPDIR)/wolkvox

uninstall:
	@test -n "$(LUA_CMOD)" && test -n "$(LUA_LMOD)" || { echo "make uninstall: LUA_CMOD and LUA_LMOD are unknown ($(LUA) does not run); set them" >&2; exit 1; }
	rm -f $(DESTDIR)$(LUA_CMOD)/wolkvox/core.so $(DESTDIR)$(LUA_CMOD)/wolkvox/redis.so \
	  $(DESTDIR)$(LUA_CMOD)/wolkvox/xlsx.so $(DESTDIR)$(LUA_CMOD)/wolkvox/pg.so
	rmdir $(DESTDIR)$(LUA_CMOD)/wolkvox 2>/dev/null || true
	rm -rf $(DESTDIR)$(LUA_LMOD)/wolkvox $(DESTDIR)$(DOCDIR)
	for f in bin/*; do rm -f $(DESTDIR)$(PREFIX)/$$f; done
	rm -f $(DESTDIR)$(MANDIR)/man1/wolkvox.1 $(DESTDIR)$(BASHCOMPDIR)/wolkvox

# The source rock of the committed HEAD, as luarocks packs it from the public
# repository's tag: HEAD is tagged v<version of lua/wolkvox/version.lua> in a
# temporary clone (never here), and git's insteadOf (environment only) sends
# luarocks' clone of the rockspec's source.url to that clone.  Uncommitted work
# is not in the rock.  The release's rockspec is rockspecs/lua-wolkvox-<version>-1.rockspec.
# Writes $(ROCK_DIR)/lua-wolkvox-<version>-1.src.rock.
ROCK_DIR  ?= build/rock
.PHONY: rock
rock:
	@set -e; out=$$(mkdir -p $(ROCK_DIR) && cd $(ROCK_DIR) && pwd); \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	git clone -q --no-hardlinks "$$(git rev-parse --show-toplevel)" "$$tmp/repo"; \
	v=$$(sed -n 's/^return "\(.*\)"$$/\1/p' "$$tmp/repo/lua/wolkvox/version.lua" 2>/dev/null) || true; \
	spec=rockspecs/lua-wolkvox-$$v-1.rockspec; \
	test -n "$$v" && test -f "$$tmp/repo/$$spec" || { echo "make rock: no committed $$spec" >&2; exit 1; }; \
	url=$$(sed -n 's/^ *url = "git+\(.*\)",.*$$/\1/p' "$$tmp/repo/$$spec"); \
	test -n "$$url" || { echo "make rock: no git+ source.url in $$spec" >&2; exit 1; }; \
	test -z "$$(git status --porcelain --untracked-files=no)" || echo "make rock: uncommitted changes are not in the rock" >&2; \
	git -C "$$tmp/repo" tag "v$$v"; \
	cd "$$tmp" && GIT_CONFIG_COUNT=2 GIT_CONFIG_KEY_0="url.file://$$tmp/repo.insteadOf" GIT_CONFIG_VALUE_0="$$url" \
	  GIT_CONFIG_KEY_1=advice.detachedHead GIT_CONFIG_VALUE_1=false luarocks pack "repo/$$spec" >"$$tmp/log" 2>&1 || { cat "$$tmp/log" >&2; exit 1; }; \
	mv -f "$$tmp/lua-wolkvox-$$v-1.src.rock" "$$out/"; echo "$$out/lua-wolkvox-$$v-1.src.rock"

clean:
	rm -rf build

print:
	@echo "LUA=$(LUA) LUA_PC=$(LUA_PC) FLAVOUR=$(FLAVOUR) BUILD=$(BUILD)"
	@echo "LUA_CFLAGS=$(LUA_CFLAGS)"
	@echo "CURL_CFLAGS=$(CURL_CFLAGS) CURL_LIBS=$(CURL_LIBS)"
	@echo "REDIS=$(REDIS) REDIS_LIB=$(REDIS_LIB) HIREDIS_LIBS=$(HIREDIS_LIBS)"
	@echo "XLSX=$(XLSX) XLSX_LIB=$(XLSX_LIB) PG=$(PG) PG_LIB=$(PG_LIB)"
	@echo "LUA_CMOD=$(LUA_CMOD) LUA_LMOD=$(LUA_LMOD) PREFIX=$(PREFIX)"
