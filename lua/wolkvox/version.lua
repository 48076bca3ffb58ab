--- The version of lua-wolkvox: the one place the Lua side reads it from.
-- `wolkvox._VERSION` and the ngx transport's user agent derive from it; the
-- C core keeps its own copy (`WV_VERSION` in src/wolkvox.h), and
-- spec/version_spec.lua checks that both, the released rockspec and the top
-- entry of CHANGELOG.md agree.
-- @module wolkvox.version
return "0.2.0"
