-- lua-wolkvox-pg: wolkvox.pg, the optional C module that loads PostgreSQL
-- destinations (`into = "postgresql://..."`) with COPY: a small binding of
-- libpq, PostgreSQL's own C client.  Without it, lua-wolkvox loads
-- PostgreSQL through LuaDBI (Debian's lua-dbi-postgresql), more slowly.
-- Build it from a checkout, after lua-wolkvox itself, with Debian's
-- libpq-dev installed:
--   luarocks --lua-version=5.4 make --deps-mode=none extras/lua-wolkvox-pg-scm-1.rockspec
--   luarocks --lua-version=5.1 make --deps-mode=none extras/lua-wolkvox-pg-scm-1.rockspec \
--       LUA_INCDIR=/usr/include/luajit-2.1                       (LuaJIT)
-- (`make` builds the same module beside the core when pkg-config finds libpq.)
-- It lives in extras/, not rockspecs/: luarocks make with no argument looks in
-- ., rockspec/ and rockspecs/, and two rocks there would make it refuse.
rockspec_format = "3.0"
package = "lua-wolkvox-pg"
version = "scm-1"

source = {
    url = "git+https://github.com/lua-wolkvox/lua-wolkvox.git",
    branch = "main",
}

description = {
    summary = "COPY into PostgreSQL for lua-wolkvox's database destinations: the libpq binding wolkvox.pg",
    homepage = "https://github.com/lua-wolkvox/lua-wolkvox",
    license = "MIT",
    labels = { "wolkvox", "postgresql", "libpq" },
}

dependencies = {
    "lua >= 5.1",
    "lua-wolkvox",
}

external_dependencies = {
    -- (Debian keeps libpq-fe.h under /usr/include/postgresql)
    PQ = { header = "postgresql/libpq-fe.h", library = "pq" },
}

build = {
    type = "builtin",
    modules = {
        ["wolkvox.pg"] = {
            sources = { "src/pg.c" },
            libraries = { "pq" },
            incdirs = { "src", "$(PQ_INCDIR)/postgresql", "$(PQ_INCDIR)" },
            libdirs = { "$(PQ_LIBDIR)" },
        },
    },
}
