-- lua-wolkvox-xlsx: wolkvox.xlsx, the optional C module of lua-wolkvox's
-- Excel workbooks (--format xlsx, format = "xlsx"): a small binding of
-- libxlsxwriter, the maintained C library for .xlsx files, in its
-- constant-memory mode. The format itself (wolkvox.out.xlsx) is in
-- lua-wolkvox; without this module it says what to install.
-- Build it from a checkout, after lua-wolkvox itself, with Debian's
-- libxlsxwriter-dev installed:
--   luarocks --lua-version=5.4 make --deps-mode=none extras/lua-wolkvox-xlsx-scm-1.rockspec
--   luarocks --lua-version=5.1 make --deps-mode=none extras/lua-wolkvox-xlsx-scm-1.rockspec \
--       LUA_INCDIR=/usr/include/luajit-2.1                       (LuaJIT)
-- (`make` builds the same module beside the core when pkg-config finds xlsxwriter.)
-- It lives in extras/, not rockspecs/: luarocks make with no argument looks in
-- ., rockspec/ and rockspecs/, and two rocks there would make it refuse.
rockspec_format = "3.0"
package = "lua-wolkvox-xlsx"
version = "scm-1"

source = {
    url = "git+https://github.com/lua-wolkvox/lua-wolkvox.git",
    branch = "main",
}

description = {
    summary = "Excel workbooks for lua-wolkvox: the libxlsxwriter binding wolkvox.xlsx",
    homepage = "https://github.com/lua-wolkvox/lua-wolkvox",
    license = "MIT",
    labels = { "wolkvox", "xlsx", "excel", "libxlsxwriter" },
}

dependencies = {
    "lua >= 5.1",
    "lua-wolkvox",
}

external_dependencies = {
    XLSXWRITER = { header = "xlsxwriter.h", library = "xlsxwriter" },
}

build = {
    type = "builtin",
    modules = {
        ["wolkvox.xlsx"] = {
            sources = { "src/xlsx.c" },
            libraries = { "xlsxwriter" },
            incdirs = { "src", "$(XLSXWRITER_INCDIR)" },
            libdirs = { "$(XLSXWRITER_LIBDIR)" },
        },
    },
}
