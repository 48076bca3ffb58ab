--- Database connections for the destinations: what `into` names (a SQLite
-- file or a PostgreSQL URL), the driver (LuaDBI: Debian's lua-dbi-sqlite3
-- and lua-dbi-postgresql, loaded only when a destination is used; for
-- PostgreSQL, wolkvox.pg, lua-wolkvox's own libpq binding, when it is
-- built: it can COPY), and a small face over it: statements prepared once,
-- every value bound as a parameter (never spliced into SQL), transactions
-- said in SQL, errors as `output` errors that never carry the password.
-- @module wolkvox.out.db

local errors = require "wolkvox.errors"

local type, tostring, tonumber, pcall, pairs, next, select, format, setmetatable, unpack, concat =
    type, tostring, tonumber, pcall, pairs, next, select, string.format, setmetatable, table.unpack or unpack,
    table.concat

local M = {}

--- The dialects, with the LuaDBI driver and the Debian package that has it.
M.DIALECTS = {
    sqlite = { driver = "SQLite3", package = "lua-dbi-sqlite3" },
    postgresql = { driver = "PostgreSQL", package = "lua-dbi-postgresql",
        -- (unless WOLKVOX_PG_DRIVER=dbi asked for LuaDBI)
        other = " (or build wolkvox.pg, lua-wolkvox's libpq binding, with libpq-dev installed)" },
}

--- How long a SQLite write waits for another writer of the same file (ms).
M.BUSY_TIMEOUT = 10000

local function unescape(s)
    return s and (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

--- What `into` names: `{ dialect, path }` for SQLite ("sqlite:PATH",
-- "sqlite://PATH" or a plain path such as "calls.db"), `{ dialect, user,
-- password, host, port, db }` for "postgresql://user[:password]@host[:port]/db"
-- (also "postgres://"); `display` is the name without the password.  Nil
-- and why for anything else.
function M.parse(into)
    if type(into) ~= "string" or into == "" then
        return nil, "into must be a database: a SQLite file (calls.db, sqlite:PATH) or postgresql://user@host/db"
    end
    if into:find("\0", 1, true) or into:find("[\r\n]") then
        return nil, "into holds a control character"
    end
    local scheme, rest = into:match("^(%a[%w+.-]*)://(.*)$")
    if not scheme then
        local path = into:match("^sqlite:(.+)$") or into
        return { dialect = "sqlite", path = path, display = "sqlite:" .. path }
    end
    scheme = scheme:lower()
    if scheme == "sqlite" then
        if rest == "" then
            return nil, "sqlite:// needs a path (sqlite:///var/lib/calls.db, or sqlite:calls.db)"
        end
        return { dialect = "sqlite", path = rest, display = "sqlite:" .. rest }
    end
    if scheme ~= "postgresql" and scheme ~= "postgres" then
        return nil, "into: unknown database '" .. scheme .. "://' (sqlite and postgresql are known)"
    end
    rest = rest:gsub("%?.*$", "")
    local auth, hostport, db = rest:match("^([^@/]*)@([^/]*)/(.*)$")
    if not auth then
        auth, hostport, db = nil, rest:match("^([^/]*)/(.*)$")
    end
    if not hostport then
        return nil, "into: a PostgreSQL URL is postgresql://user@host:port/database"
    end
    local user, password
    if auth then
        user, password = auth:match("^([^:]*):(.*)$")
        user = user or auth
    end
    local host, port = hostport:match("^%[(.+)%]:?(%d*)$")
    if not host then
        host, port = hostport:match("^([^:]*):?(%d*)$")
    end
    if not host then
        return nil, "into: cannot read the host of the PostgreSQL URL"
    end
    local t = { dialect = "postgresql", user = unescape(user ~= "" and user or nil),
        password = unescape(password), host = host ~= "" and unescape(host) or nil,
        port = tonumber(port ~= "" and port or nil), db = unescape(db ~= "" and db or nil) }
    if t.port and (t.port < 1 or t.port > 65535) then
        return nil, "into: the port must be between 1 and 65535"
    end
    t.display = format("postgresql://%s%s%s/%s", t.user and (t.user .. "@") or "", t.host or "",
        t.port and (":" .. t.port) or "", t.db or "")
    return t
end

-- A message from the driver, without the password.
local function clean(msg, target)
    msg = tostring(msg):gsub("%s+", " "):gsub(" $", "")
    if target.password and target.password ~= "" then
        local pw = target.password:gsub("%p", "%%%0")
        msg = msg:gsub(pw, "***")
    end
    return errors.snippet(msg)
end

local Conn = {}
Conn.__index = Conn

local function fail(self, what, why)
    errors.throw("output", { message = format("%s: %s: %s", self.display, what, clean(why, self.target)) })
end

--- Which driver PostgreSQL goes through: `pg_driver` when set ("libpq" or
-- "dbi"), else $WOLKVOX_PG_DRIVER, else "libpq" when wolkvox.pg loads and
-- "dbi" when it does not.  Nil and why for a choice that cannot be had.
M.pg_driver = nil

local native_cache
local function native()
    if native_cache == nil then
        local ok, mod = pcall(require, "wolkvox.pg")
        native_cache = ok and type(mod) == "table" and mod.connect and mod or false
    end
    return native_cache or nil
end

function M.pg_choice()
    local want = M.pg_driver or os.getenv("WOLKVOX_PG_DRIVER")
    if want == nil or want == "" then
        return native() and "libpq" or "dbi"
    end
    if want == "dbi" then
        return "dbi"
    end
    if want == "libpq" then
        if native() then
            return "libpq"
        end
        return nil, "WOLKVOX_PG_DRIVER=libpq, but wolkvox.pg (lua-wolkvox's libpq binding) is not built: "
            .. "build it with libpq-dev installed (make, or extras/lua-wolkvox-pg-scm-1.rockspec)"
    end
    return nil, "WOLKVOX_PG_DRIVER must be libpq or dbi, not '" .. tostring(want) .. "'"
end

--- Load the driver of `dialect` (LuaDBI, or wolkvox.pg for PostgreSQL
-- when built); nil and why (naming the Debian package) when it is not
-- installed.
function M.driver(dialect)
    local d = M.DIALECTS[dialect]
    if dialect == "postgresql" then
        local which, why = M.pg_choice()
        if not which then
            return nil, why
        end
        if which == "libpq" then
            return native()
        end
    end
    local ok, DBI = pcall(require, "DBI")
    if not ok then
        return nil, format("writing into %s needs LuaDBI: install the Debian package %s%s", dialect, d.package,
            M.pg_driver ~= "dbi" and os.getenv("WOLKVOX_PG_DRIVER") ~= "dbi" and d.other or "")
    end
    local found = pcall(require, "dbd." .. d.driver:lower())
    if not found then
        return nil, format("writing into %s needs LuaDBI's %s driver: install the Debian package %s%s",
            dialect, d.driver, d.package, M.pg_driver ~= "dbi" and os.getenv("WOLKVOX_PG_DRIVER") ~= "dbi"
            and d.other or "")
    end
    return DBI
end

--- Open a connection to `target` (from `parse`); raises `params` when
-- the driver is missing, `output` when the database cannot be opened.
function M.connect(target)
    local DBI, why = M.driver(target.dialect)
    if not DBI then
        errors.throw("params", { message = why })
    end
    if target.dialect == "postgresql" and DBI == native() then
        return M.connect_libpq(target, DBI)
    end
    local self = setmetatable({ target = target, dialect = target.dialect, display = target.display,
        statements = {}, driver = "dbi" }, Conn)
    local ok, h, err
    if target.dialect == "sqlite" then
        ok, h, err = errors.try(DBI.Connect, "SQLite3", target.path)
    else
        ok, h, err = errors.try(DBI.Connect, "PostgreSQL", target.db, target.user, target.password, target.host,
            target.port)
    end
    if not ok or not h then
        -- (LuaDBI's PostgreSQL driver says only "no connection to the
        -- server", whatever the cause: the likely ones are named.)
        local reason = ok and err or h
        if target.dialect == "postgresql" then
            reason = tostring(reason) .. " (is the server up at that host and port, and do the user, the password "
                .. "(~/.pgpass or $PGPASSWORD) and the database match?)"
        end
        fail(self, "cannot connect", reason)
    end
    self.h = h
    -- The driver begins a transaction of its own before each statement
    -- unless autocommit is on; ours are said in SQL (`begin`, `commit`).
    local on = errors.try(h.autocommit, h, true)
    if not on then
        fail(self, "cannot connect", "the driver refused autocommit")
    end
    if target.dialect == "sqlite" then
        self:exec(format("PRAGMA busy_timeout = %d", M.BUSY_TIMEOUT))
    else
        -- Server notices would go to our stderr through libpq.
        self:exec("SET client_min_messages = error")
    end
    return self
end

--- A name quoted for SQL ("name"; names are checked before they get here).
function M.quote(name)
    return '"' .. tostring(name):gsub('"', '""') .. '"'
end

-- The statement of `sql`, prepared once per connection.
function Conn:statement(sql)
    local st = self.statements[sql]
    if not st then
        local err
        st, err = self.h:prepare(sql)
        if not st then
            fail(self, "cannot prepare " .. sql:match("^%S+"), err)
        end
        self.statements[sql] = st
    end
    return st
end

--- Run `sql` with the values `...` bound to its `?` (nil is NULL).  The
-- driver returns false on most failures but raises on some (a connection
-- the server closed): both become an `output` error.
function Conn:exec(sql, ...)
    if not self.h then
        fail(self, "cannot run " .. sql:match("^%S+"), "the connection is closed")
    end
    local st = self:statement(sql)
    local called, ok, err = errors.try(st.execute, st, ...)
    if not (called and ok) then
        self.broken = self.broken or not called
        fail(self, "cannot run " .. sql:match("^%S+"), called and err or ok)
    end
    return st
end

--- Run `sql` with the values of the list `vals` (`n` of them, nils
-- included, from its index `from`, default 1).
function Conn:exec_list(sql, vals, n, from)
    from = from or 1
    return self:exec(sql, unpack(vals, from, from + n - 1))
end

--- The rows `sql` selects (tables by column name).
function Conn:rows(sql, ...)
    local st = self:exec(sql, ...)
    local out = {}
    local ok, err = errors.try(function()
        for row in st:rows(true) do
            local copy = {}
            for k, v in pairs(row) do
                copy[k] = v
            end
            out[#out + 1] = copy
        end
    end)
    if not ok then
        fail(self, "cannot read " .. sql:match("^%S+"), err)
    end
    return out
end

--- The first value of the first row `sql` selects, or nil.
function Conn:value(sql, ...)
    local row = self:rows(sql, ...)[1]
    return row and select(2, next(row)) or nil
end

--- Begin a transaction (SQLite: IMMEDIATE, so a second writer waits here
-- rather than fail at its first write).
function Conn:begin()
    self:exec(self.dialect == "sqlite" and "BEGIN IMMEDIATE" or "BEGIN")
    self.open = true
end

function Conn:commit()
    self:exec("COMMIT")
    self.open = false
end

--- Roll back an open transaction; never raises (the connection may be gone).
function Conn:rollback()
    if self.open then
        self.open = false
        local st = self.h and self.h:prepare("ROLLBACK")
        if st then
            pcall(st.execute, st)
        end
    end
end

--- Forget the prepared statements (after a table's columns changed).
function Conn:forget()
    for _, st in pairs(self.statements) do
        pcall(st.close, st)
    end
    self.statements = {}
end

function Conn:close()
    self:rollback()
    self:forget()
    if self.h then
        pcall(self.h.close, self.h)
        self.h = nil
    end
end

-- ---- PostgreSQL through wolkvox.pg (libpq): COPY ---------------------------

local Native = {}
Native.__index = Native

local function nfail(self, what, why)
    if self.h then
        local _, good = self.h:status()
        self.broken = self.broken or not good
    end
    errors.throw("output", { message = format("%s: %s: %s", self.display, what, clean(why, self.target)) })
end

--- Open `target` through wolkvox.pg (`pg`, the module); raises `output`
-- when the database cannot be opened.
function M.connect_libpq(target, pg)
    local self = setmetatable({ target = target, dialect = "postgresql", display = target.display, sqls = {},
        copy = true, driver = "libpq" }, Native)
    -- libpq's keywords, never one string: a value needs no quoting.
    local info = { dbname = target.db, user = target.user, password = target.password, host = target.host,
        port = target.port and format("%d", target.port) or nil, application_name = "lua-wolkvox" }
    local h, err = pg.connect(info)
    if not h then
        nfail(self, "cannot connect", err)
    end
    self.h = h
    -- Server notices: libpq's processor is set to drop them; none asked.
    self:exec("SET client_min_messages = error")
    return self
end

-- `sql` with its `?` as $1, $2 ... (our statements: no `?` in a name or a
-- literal; quoted parts are left as they are all the same).
local function numbered(sql)
    local out, n, quote = {}, 0, nil
    for ch in sql:gmatch(".") do
        if quote then
            if ch == quote then
                quote = nil
            end
        elseif ch == "'" or ch == '"' then
            quote = ch
        elseif ch == "?" then
            n = n + 1
            ch = "$" .. n
        end
        out[#out + 1] = ch
    end
    return concat(out)
end

local function numbered_cached(self, sql)
    local s = self.sqls[sql]
    if not s then
        s = numbered(sql)
        self.sqls[sql] = s
    end
    return s
end

--- As `Conn:exec`: the rows and the count of rows affected.
function Native:exec(sql, ...)
    if not self.h then
        nfail(self, "cannot run " .. sql:match("^%S+"), "the connection is closed")
    end
    local rows, n = self.h:exec(numbered_cached(self, sql), ...)
    if not rows then
        nfail(self, "cannot run " .. sql:match("^%S+"), n)
    end
    return rows, n
end

function Native:exec_list(sql, vals, n, from)
    from = from or 1
    return self:exec(sql, unpack(vals, from, from + n - 1))
end

function Native:rows(sql, ...)
    return (self:exec(sql, ...))
end

function Native:value(sql, ...)
    local row = self:exec(sql, ...)[1]
    return row and select(2, next(row)) or nil
end

function Native:begin()
    self:exec("BEGIN")
    self.open = true
end

function Native:commit()
    self:exec("COMMIT")
    self.open = false
end

--- Start `COPY sql` (inside the caller's transaction).
function Native:copy_begin(sql)
    local ok, err = false, "the connection is closed"
    if self.h then
        ok, err = self.h:copy_begin(sql)
    end
    if not ok then
        nfail(self, "cannot start COPY", err)
    end
    self.copying = true
end

--- Send `rows` rows of `width` values of `list` from its index `first`.
function Native:copy_rows(list, first, rows, width)
    local ok, err = self.h:copy_rows(list, first, rows, width)
    if not ok then
        -- (the COPY is abandoned: the window fails and rolls back)
        self:copy_end("lua-wolkvox gave up this COPY", true)
        nfail(self, "cannot COPY", err)
    end
end

--- End the COPY; with `why`, abandon it (and, `quiet`, say nothing);
-- `what` says what it held, for the error.
function Native:copy_end(why, quiet, what)
    if not self.copying then
        return
    end
    self.copying = false
    local ok, err = self.h:copy_end(why)
    if not ok and not quiet then
        nfail(self, "cannot COPY" .. (what and " " .. what or ""), err)
    end
end

--- Send `sql` (statements without parameters) and go on: the server runs
-- it meanwhile; `wait()` before anything else on the connection.
function Native:send(sql)
    local ok, err = self.h:send(sql)
    if not ok then
        nfail(self, "cannot run " .. sql:match("^%S+"), err)
    end
    self.sent = sql:match("^%S+")
end

--- True when what `send` sent is done.
function Native:ready()
    return not self.sent or self.h:ready()
end

--- The end of what `send` sent; raises its error.
function Native:wait()
    if self.sent then
        local what = self.sent
        self.sent = nil
        local ok, err = self.h:wait()
        if not ok then
            nfail(self, "cannot run " .. what, err)
        end
    end
end

--- Roll back an open transaction (an open COPY abandoned first); never
-- raises.
function Native:rollback()
    if self.open and self.h then
        self.open = false
        if self.sent then
            pcall(self.wait, self)
        end
        if self.copying then
            pcall(self.copy_end, self, "rolled back", true)
        end
        pcall(self.h.exec, self.h, "ROLLBACK")
    end
end

function Native.forget()
end

function Native:close()
    self:rollback()
    if self.h then
        self.h:close()
        self.h = nil
    end
end

return M
