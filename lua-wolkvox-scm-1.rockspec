-- lua-wolkvox: the wolkvox contact-center API as native Lua tables.
--   luarocks --lua-version=5.4 make --deps-mode=none
-- For LuaJIT / OpenResty (5.1 ABI):
--   luarocks --lua-version=5.1 make --deps-mode=none LUA_INCDIR=/usr/include/luajit-2.1
-- Debian keeps curl/curl.h in a multiarch directory; the build only needs the
-- library, and CURL_INCDIR=/usr/include/x86_64-linux-gnu may be passed.
rockspec_format = "3.0"
package = "lua-wolkvox"
version = "scm-1"

source = {
    url = "git+file:///lua-wolkvox", -- no public repository yet: build from a checkout (luarocks make)
}

description = {
    summary = "The wolkvox contact-center API as native Lua tables (libcurl C core)",
    detailed = [[
A C module on libcurl (wolkvox.core) and a thin Lua layer (wolkvox): one
method per API endpoint, answers as plain Lua tables, structured errors,
and a fake wolkvox server (wolkvox.fake, bin/wolkvox-fake) for offline tests.
]],
    license = "MIT",
    labels = { "wolkvox", "contact-center", "http", "libcurl", "openresty" },
}

dependencies = {
    "lua >= 5.1",
    "lua-cjson",
    "luasocket",
}

external_dependencies = {
    CURL = { library = "curl" },
}

build = {
    type = "builtin",
    modules = {
        ["wolkvox.core"] = {
            sources = { "src/core.c", "src/json.c", "src/request.c", "src/session.c", "src/sha256.c", "src/sys.c",
                "src/token.c", "src/transfer.c" },
            libraries = { "curl", "pthread" },
            incdirs = { "$(CURL_INCDIR)" },
            libdirs = { "$(CURL_LIBDIR)" },
        },
        ["wolkvox"] = "lua/wolkvox/init.lua",
        ["wolkvox.client"] = "lua/wolkvox/client.lua",
        ["wolkvox.dates"] = "lua/wolkvox/dates.lua",
        ["wolkvox.endpoints"] = "lua/wolkvox/endpoints.lua",
        ["wolkvox.errors"] = "lua/wolkvox/errors.lua",
        ["wolkvox.fake"] = "lua/wolkvox/fake/init.lua",
        ["wolkvox.fake.api"] = "lua/wolkvox/fake/api.lua",
        ["wolkvox.fake.data"] = "lua/wolkvox/fake/data.lua",
        ["wolkvox.fake.http"] = "lua/wolkvox/fake/http.lua",
        ["wolkvox.fake.loop"] = "lua/wolkvox/fake/loop.lua",
        ["wolkvox.inflate"] = "lua/wolkvox/inflate.lua",
        ["wolkvox.json"] = "lua/wolkvox/json.lua",
        ["wolkvox.options"] = "lua/wolkvox/options.lua",
        ["wolkvox.pacer"] = "lua/wolkvox/pacer.lua",
        ["wolkvox.quota"] = "lua/wolkvox/quota.lua",
        ["wolkvox.registry"] = "lua/wolkvox/registry.lua",
        ["wolkvox.report"] = "lua/wolkvox/report.lua",
        ["wolkvox.request"] = "lua/wolkvox/request.lua",
        ["wolkvox.response"] = "lua/wolkvox/response.lua",
        ["wolkvox.retry"] = "lua/wolkvox/retry.lua",
        ["wolkvox.schedule"] = "lua/wolkvox/schedule.lua",
        ["wolkvox.transport.curl"] = "lua/wolkvox/transport/curl.lua",
        ["wolkvox.transport.ngx"] = "lua/wolkvox/transport/ngx.lua",
        ["wolkvox.windows"] = "lua/wolkvox/windows.lua",
    },
    install = {
        bin = { ["wolkvox-fake"] = "bin/wolkvox-fake" },
    },
    copy_directories = { "examples" },
}

test = {
    type = "command",
    command = "make test",
}
