-- lua-wolkvox: the wolkvox contact-center API as native Lua tables.
-- The development rockspec: build and install the checkout you are in.
--   luarocks --lua-version=5.4 make --deps-mode=none
-- For LuaJIT / OpenResty (5.1 ABI):
--   luarocks --lua-version=5.1 make --deps-mode=none LUA_INCDIR=/usr/include/luajit-2.1
-- Debian keeps curl/curl.h in a multiarch directory; the build only needs the
-- library, and CURL_INCDIR=/usr/include/x86_64-linux-gnu may be passed.
-- It is the only rockspec at the top, so that `luarocks make` with no argument
-- takes it from a clone of any name (luarocks looks in ., rockspec/ and
-- rockspecs/, and gives up when it finds two rocks there).  Releases have their
-- own rockspec (rockspecs/lua-wolkvox-X.Y.Z-1.rockspec: the same rock, and scm
-- is newer than any release, so they never compete) with the same dependencies
-- and build table; spec/rockspec_spec.lua keeps them equal.  The optional
-- wolkvox.redis is another rock: extras/lua-wolkvox-redis-scm-1.rockspec.
rockspec_format = "3.0"
package = "lua-wolkvox"
version = "scm-1"

-- The project's intended public home; nothing is published there yet, so
-- build from a checkout (luarocks make).
source = {
    url = "git+https://github.com/lua-wolkvox/lua-wolkvox.git",
    branch = "main",
}

description = {
    summary = "The wolkvox contact-center API as native Lua tables (libcurl C core)",
    detailed = [[
A C module on libcurl (wolkvox.core) and a thin Lua layer (wolkvox): one
method per API endpoint, answers as plain Lua tables, structured errors,
and a fake wolkvox server (wolkvox.fake, bin/wolkvox-fake) for offline tests.
The fake needs LuaSocket and lua-cjson, which are not dependencies of the rock:
install them to use it.  Loading into SQLite or PostgreSQL (`into`) needs
LuaDBI (Debian lua-dbi-sqlite3, lua-dbi-postgresql), not a dependency either.
]],
    homepage = "https://github.com/lua-wolkvox/lua-wolkvox",
    license = "MIT",
    labels = { "wolkvox", "contact-center", "http", "libcurl", "openresty" },
}

-- Only what the library needs: the C core decodes JSON itself.  Optional,
-- and not listed so that luarocks neither forces nor warns about them
-- (Debian's lua-cjson and lua-socket are not in any rocks tree):
--   lua-cjson  the ngx transport's decoder inside nginx when the rock's C
--              module is not installed there; the fake server; tools/
--   luasocket  the fake server (wolkvox.fake, bin/wolkvox-fake) and the specs
-- Fleet mode (the redis option) outside nginx needs the C module
-- wolkvox.redis, from "src/redis.c" on hiredis: not built here, so that the
-- rock never needs hiredis; extras/lua-wolkvox-redis-scm-1.rockspec or
-- `make` (when pkg-config finds hiredis) build it.  Inside nginx it needs
-- resty.redis (Debian lua-nginx-redis) instead.
-- Excel workbooks (format "xlsx") need the C module wolkvox.xlsx, from
-- "src/xlsx.c" on libxlsxwriter: not built here either, so that the rock
-- never needs libxlsxwriter (wolkvox.out.xlsx then says what to install);
-- extras/lua-wolkvox-xlsx-scm-1.rockspec or `make` (when pkg-config finds
-- xlsxwriter) build it.
-- PostgreSQL destinations load with COPY through the C module wolkvox.pg,
-- from "src/pg.c" on libpq: not built here either, so that the rock never
-- needs libpq (without it they go through LuaDBI);
-- extras/lua-wolkvox-pg-scm-1.rockspec or `make` (when pkg-config finds
-- libpq) build it.
dependencies = {
    "lua >= 5.1",
}

external_dependencies = {
    CURL = { library = "curl" },
    ZLIB = { header = "zlib.h", library = "z" },
}

build = {
    type = "builtin",
    modules = {
        ["wolkvox.core"] = {
            sources = { "src/cells.c", "src/core.c", "src/csv.c", "src/inflate.c", "src/json.c", "src/request.c", "src/rowjson.c", "src/session.c",
                "src/sha256.c", "src/spool.c", "src/stream.c", "src/sys.c", "src/token.c", "src/transfer.c" },
            libraries = { "curl", "z", "pthread" },
            incdirs = { "$(CURL_INCDIR)" },
            libdirs = { "$(CURL_LIBDIR)" },
        },
        ["wolkvox"] = "lua/wolkvox/init.lua",
        ["wolkvox.client"] = "lua/wolkvox/client.lua",
        ["wolkvox.cli"] = "lua/wolkvox/cli/init.lua",
        ["wolkvox.cli.args"] = "lua/wolkvox/cli/args.lua",
        ["wolkvox.cli.exit"] = "lua/wolkvox/cli/exit.lua",
        ["wolkvox.cli.output"] = "lua/wolkvox/cli/output.lua",
        ["wolkvox.cli.profile"] = "lua/wolkvox/cli/profile.lua",
        ["wolkvox.cli.progress"] = "lua/wolkvox/cli/progress.lua",
        ["wolkvox.cli.words"] = "lua/wolkvox/cli/words.lua",
        ["wolkvox.limits.cache"] = "lua/wolkvox/limits/cache.lua",
        ["wolkvox.coerce"] = "lua/wolkvox/coerce.lua",
        ["wolkvox.dates"] = "lua/wolkvox/dates.lua",
        ["wolkvox.defaults"] = "lua/wolkvox/defaults.lua",
        ["wolkvox.api.endpoints"] = "lua/wolkvox/api/endpoints.lua",
        ["wolkvox.errors"] = "lua/wolkvox/errors.lua",
        ["wolkvox.export"] = "lua/wolkvox/export.lua",
        ["wolkvox.fake"] = "lua/wolkvox/fake/init.lua",
        ["wolkvox.fake.api"] = "lua/wolkvox/fake/api.lua",
        ["wolkvox.fake.data"] = "lua/wolkvox/fake/data.lua",
        ["wolkvox.fake.http"] = "lua/wolkvox/fake/http.lua",
        ["wolkvox.fake.loop"] = "lua/wolkvox/fake/loop.lua",
        ["wolkvox.fake.rules"] = "lua/wolkvox/fake/rules.lua",
        ["wolkvox.inflate"] = "lua/wolkvox/inflate.lua",
        ["wolkvox.call.prepare"] = "lua/wolkvox/call/prepare.lua",
        ["wolkvox.call.run"] = "lua/wolkvox/call/run.lua",
        ["wolkvox.job.export"] = "lua/wolkvox/job/export.lua",
        ["wolkvox.job.into"] = "lua/wolkvox/job/into.lua",
        ["wolkvox.job.plan"] = "lua/wolkvox/job/plan.lua",
        ["wolkvox.out.state"] = "lua/wolkvox/out/state.lua",
        ["wolkvox.call.spooled"] = "lua/wolkvox/call/spooled.lua",
        ["wolkvox.job.sync"] = "lua/wolkvox/job/sync.lua",
        ["wolkvox.out.file"] = "lua/wolkvox/out/file.lua",
        ["wolkvox.out.formats"] = "lua/wolkvox/out/formats.lua",
        ["wolkvox.out.html"] = "lua/wolkvox/out/html.lua",
        ["wolkvox.out.xlsx"] = "lua/wolkvox/out/xlsx.lua",
        ["wolkvox.out.db"] = "lua/wolkvox/out/db.lua",
        ["wolkvox.out.load"] = "lua/wolkvox/out/load.lua",
        ["wolkvox.out.sinks"] = "lua/wolkvox/out/sinks.lua",
        ["wolkvox.out.metrics"] = "lua/wolkvox/out/metrics.lua",
        ["wolkvox.call.sizing"] = "lua/wolkvox/call/sizing.lua",
        ["wolkvox.json"] = "lua/wolkvox/json.lua",
        ["wolkvox.options"] = "lua/wolkvox/options.lua",
        ["wolkvox.limits.pacer"] = "lua/wolkvox/limits/pacer.lua",
        ["wolkvox.api.pages"] = "lua/wolkvox/api/pages.lua",
        ["wolkvox.limits.quota"] = "lua/wolkvox/limits/quota.lua",
        ["wolkvox.api.registry"] = "lua/wolkvox/api/registry.lua",
        ["wolkvox.api.schema"] = "lua/wolkvox/api/schema.lua",
        ["wolkvox.api.request"] = "lua/wolkvox/api/request.lua",
        ["wolkvox.api.response"] = "lua/wolkvox/api/response.lua",
        ["wolkvox.call.retry"] = "lua/wolkvox/call/retry.lua",
        ["wolkvox.runtime"] = "lua/wolkvox/runtime.lua",
        ["wolkvox.call.schedule"] = "lua/wolkvox/call/schedule.lua",
        ["wolkvox.sha256"] = "lua/wolkvox/sha256.lua",
        ["wolkvox.limits.shared"] = "lua/wolkvox/limits/shared.lua",
        ["wolkvox.state"] = "lua/wolkvox/state/init.lua",
        ["wolkvox.limits.redis"] = "lua/wolkvox/limits/redis.lua",
        ["wolkvox.transport"] = "lua/wolkvox/transport/init.lua",
        ["wolkvox.transport.curl"] = "lua/wolkvox/transport/curl.lua",
        ["wolkvox.transport.fake"] = "lua/wolkvox/transport/fake.lua",
        ["wolkvox.transport.ngx"] = "lua/wolkvox/transport/ngx.lua",
        ["wolkvox.transport.gc_hold"] = "lua/wolkvox/transport/gc_hold.lua",
        ["wolkvox.transport.ngx_http"] = "lua/wolkvox/transport/ngx_http.lua",
        ["wolkvox.transport.select"] = "lua/wolkvox/transport/select.lua",
        ["wolkvox.version"] = "lua/wolkvox/version.lua",
        ["wolkvox.call.windows"] = "lua/wolkvox/call/windows.lua",
    },
    install = {
        bin = { ["wolkvox"] = "bin/wolkvox", ["wolkvox-fake"] = "bin/wolkvox-fake" },
    },
    -- The rock keeps these in its directory (luarocks installs no man pages
    -- and no shell completion): man/wolkvox.1, completion/wolkvox.bash.
    copy_directories = { "examples", "man", "completion" },
}

test = {
    type = "command",
    command = "make test",
}
