-- luacheck configuration: Lua 5.1 syntax everywhere in lua/ so LuaJIT runs
-- the same files; 5.4-only idioms are reached through load() in specs.
std = "max"
max_line_length = 120
codes = true

files["spec"] = { std = "+busted" }
files["spec/support.lua"] = { std = "max" }
files["lua/wolkvox/api/endpoints.lua"] = { max_line_length = false }
-- Only the nginx transport and its HTTP client read the `ngx` global (lua-nginx-module's API).
files["lua/wolkvox/transport/ngx_http.lua"] = { read_globals = { "ngx" } }
files["lua/wolkvox/transport/ngx.lua"] = {
    read_globals = { ngx = { other_fields = true, fields = { ctx = { read_only = false, other_fields = true } } } },
}
-- The OpenResty example is a handler: it reads the `ngx` global too.
files["examples/openresty/wallboard.lua"] = { globals = { "ngx" } }
