-- lua-wolkvox-redis: wolkvox.redis, the optional C module of lua-wolkvox's
-- fleet mode outside nginx (the redis option): a small binding of hiredis,
-- the Redis project's own C client, with TLS (rediss://) through OpenSSL.
-- Build it from a checkout, after lua-wolkvox itself, with Debian's
-- libhiredis-dev and libssl-dev installed:
--   luarocks --lua-version=5.4 make --deps-mode=none extras/lua-wolkvox-redis-scm-1.rockspec
--   luarocks --lua-version=5.1 make --deps-mode=none extras/lua-wolkvox-redis-scm-1.rockspec \
--       LUA_INCDIR=/usr/include/luajit-2.1                       (LuaJIT)
-- (`make` builds the same module beside the core when pkg-config finds hiredis.)
-- It lives in extras/, not rockspecs/: luarocks make with no argument looks in
-- ., rockspec/ and rockspecs/, and two rocks there would make it refuse.
rockspec_format = "3.0"
package = "lua-wolkvox-redis"
version = "scm-1"

source = {
    url = "git+https://github.com/lua-wolkvox/lua-wolkvox.git",
    branch = "main",
}

description = {
    summary = "Fleet mode of lua-wolkvox outside nginx: the hiredis binding wolkvox.redis",
    homepage = "https://github.com/lua-wolkvox/lua-wolkvox",
    license = "MIT",
    labels = { "wolkvox", "redis", "hiredis" },
}

dependencies = {
    "lua >= 5.1",
    "lua-wolkvox",
}

external_dependencies = {
    HIREDIS = { header = "hiredis/hiredis.h", library = "hiredis" },
    OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}

build = {
    type = "builtin",
    modules = {
        ["wolkvox.redis"] = {
            sources = { "src/redis.c" },
            defines = { "WV_REDIS_TLS" },
            libraries = { "hiredis", "ssl", "crypto" },
            incdirs = { "src", "$(HIREDIS_INCDIR)", "$(OPENSSL_INCDIR)" },
            libdirs = { "$(HIREDIS_LIBDIR)", "$(OPENSSL_LIBDIR)" },
        },
    },
}
