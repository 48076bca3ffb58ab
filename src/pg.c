/*
 * pg.c: wolkvox.pg, a small binding of libpq (PostgreSQL's own C client)
 * for the database destinations (issue #22): what the loader needs and no
 * more.  A connection is a userdata; its methods are
 *
 *   conn:exec(sql, ...)      one statement, its $1.. bound to the values
 *                            (strings, numbers, booleans; nil is NULL) as
 *                            text: rows (a list of tables by column name,
 *                            NULL left out) and the count of rows affected
 *   conn:copy_begin(sql)     a COPY ... FROM STDIN
 *   conn:copy_put(data)      data of that COPY (any length, sent in pieces)
 *   conn:copy_rows(list, first, rows, width)
 *                            `rows` rows of `width` values each, from
 *                            list[first] on (nil is NULL), encoded in COPY's
 *                            text format and sent (after a failure, some
 *                            rows of the call may be sent: end the COPY
 *                            with a reason, abandoning it)
 *   conn:copy_end([why])     its end (with `why`: abandoned): true and the
 *                            rows copied
 *   conn:send(sql)           statements (no parameters) sent, not waited
 *                            for: the server runs them while Lua works
 *   conn:ready()             true when what `send` sent is done (or failed)
 *   conn:wait()              its end: true, or nil and the first error
 *   conn:status()            the transaction's state ("idle", "intrans",
 *                            "inerror", "active", "copy", "unknown") and
 *                            whether the connection is still good
 *   conn:close()             idempotent; also the __gc
 *
 * Every failure is `nil, message` (and, from the server, its SQLSTATE);
 * nothing here raises but the Lua API itself (bad arguments, no memory).
 * libpq is never left holding memory only Lua knew about: the result being
 * read is kept in the userdata until it is cleared, so an error raised while
 * its rows are made into tables leaks nothing (the next call or __gc clears
 * it).  Notices are dropped by a processor that never calls into Lua.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "compat.h"

#define CONN_MT "wolkvox.pg.conn"

/* COPY data goes to libpq in pieces of at most this many bytes. */
#define PUT_PIECE (1 << 20)

/* copy_rows sends what it has encoded when it holds this many bytes. */
#define ROWS_PIECE (256 * 1024)

typedef struct {
    PGconn *pg;      /* NULL once closed */
    PGresult *res;   /* the result being read, or NULL */
    int copying;     /* a COPY FROM STDIN is open */
    int sent;        /* a statement sent (send) whose results are not read */
    char *out;       /* copy_rows' buffer (malloc), its size and use */
    size_t cap, len;
} conn_t;

static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static void drop_result(conn_t *c)
{
    PGresult *r = c->res;
    c->res = NULL;
    if (r != NULL)
        PQclear(r);
}

/* The libpq message (of the connection), without its last newline. */
static void push_message(lua_State *L, const char *msg)
{
    size_t n;
    if (msg == NULL || *msg == '\0')
        msg = "unknown libpq error";
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    lua_pushlstring(L, msg, n);
}

static int fail_conn(lua_State *L, conn_t *c)
{
    lua_pushnil(L);
    push_message(L, c->pg ? PQerrorMessage(c->pg) : "the connection is closed");
    return 2;
}

static int fail_text(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* nil, the result's message, its SQLSTATE (or nil); the result is cleared. */
static int fail_result(lua_State *L, conn_t *c)
{
    const char *state;
    lua_pushnil(L);
    push_message(L, PQresultErrorMessage(c->res));
    state = PQresultErrorField(c->res, PG_DIAG_SQLSTATE);
    if (state != NULL)
        lua_pushstring(L, state);
    else
        lua_pushnil(L);
    drop_result(c);
    return 3;
}

static conn_t *check_conn(lua_State *L)
{
    return (conn_t *)luaL_checkudata(L, 1, CONN_MT);
}

static conn_t *open_conn(lua_State *L)
{
    conn_t *c = check_conn(L);
    if (c->pg == NULL)
        luaL_error(L, "wolkvox.pg: the connection is closed");
    return c;
}

static void close_conn(conn_t *c)
{
    PGconn *pg = c->pg;
    drop_result(c);
    c->pg = NULL;
    if (pg != NULL) {
        if (c->copying)
            (void)PQputCopyEnd(pg, "the connection was closed");
        PQfinish(pg);
    }
    c->copying = 0;
    c->sent = 0;
    free(c->out);
    c->out = NULL;
    c->cap = c->len = 0;
}

/* pg.connect(conninfo): a conninfo string or URL, or a table of libpq's
 * keywords to strings (host, port, dbname, user, password, ...). */
static int l_connect(lua_State *L)
{
    conn_t *c;
    const char **keys = NULL, **vals = NULL;
    const char *info = NULL;
    int n = 0;
    if (lua_type(L, 1) == LUA_TTABLE) {
        size_t size = 0;
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                return luaL_argerror(L, 1, "keywords and values must be strings");
            lua_pop(L, 1);
            size++;
        }
        if (size > 64)
            return luaL_argerror(L, 1, "too many keywords");
        /* Held by the stack until the end of this call (the strings by the table). */
        keys = (const char **)lua_newuserdata(L, (size + 1) * sizeof *keys);
        vals = (const char **)lua_newuserdata(L, (size + 1) * sizeof *vals);
        lua_pushnil(L);
        while (lua_next(L, 1) != 0 && (size_t)n < size) {
            keys[n] = lua_tostring(L, -2);
            vals[n] = lua_tostring(L, -1);
            n++;
            lua_pop(L, 1);
        }
        keys[n] = NULL;
        vals[n] = NULL;
    } else {
        size_t len;
        info = luaL_checklstring(L, 1, &len);
        if (strlen(info) != len)
            return fail_text(L, "the connection string holds a NUL byte");
    }
    /* The userdata first: from the connect on, its __gc owns the connection. */
    c = (conn_t *)lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_getmetatable(L, CONN_MT);
    lua_setmetatable(L, -2);
    c->pg = keys != NULL ? PQconnectdbParams(keys, vals, 0) : PQconnectdb(info);
    if (c->pg == NULL)
        return fail_text(L, "libpq could not allocate a connection");
    if (PQstatus(c->pg) != CONNECTION_OK) {
        int r = fail_conn(L, c);
        close_conn(c);
        return r;
    }
    PQsetNoticeProcessor(c->pg, quiet, NULL);
    return 1;
}

/* The rows of c->res: a list of tables by column name (NULLs left out). */
static void push_rows(lua_State *L, conn_t *c)
{
    int rows = PQntuples(c->res), cols = PQnfields(c->res), i, j;
    lua_createtable(L, rows, 0);
    for (i = 0; i < rows; i++) {
        lua_createtable(L, 0, cols);
        for (j = 0; j < cols; j++) {
            if (PQgetisnull(c->res, i, j))
                continue;
            lua_pushlstring(L, PQgetvalue(c->res, i, j), (size_t)PQgetlength(c->res, i, j));
            lua_setfield(L, -2, PQfname(c->res, j));
        }
        lua_rawseti(L, -2, i + 1);
    }
}

static void push_affected(lua_State *L, conn_t *c)
{
    const char *n = PQcmdTuples(c->res);
    lua_Integer v = 0;
    for (; n != NULL && *n >= '0' && *n <= '9'; n++)
        v = v * 10 + (*n - '0');
    lua_pushinteger(L, v);
}

/* Why statement `sql` (of `len` bytes) cannot be sent on `c` now, or NULL. */
static const char *not_ready(const conn_t *c, const char *sql, size_t len)
{
    if (c->copying)
        return "a COPY is in progress";
    if (c->sent)
        return "a statement sent is not done: wait for it first";
    if (strlen(sql) != len)
        return "the statement holds a NUL byte";
    return NULL;
}

static int l_exec(lua_State *L)
{
    conn_t *c = open_conn(L);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    int nparams = lua_gettop(L) - 2, i;
    const char **values = NULL;
    const char *why;
    if ((why = not_ready(c, sql, len)) != NULL)
        return fail_text(L, why);
    if (nparams > 65535)
        return fail_text(L, "too many parameters");
    if (nparams > 0) {
        values = (const char **)lua_newuserdata(L, (size_t)nparams * sizeof *values);
        for (i = 0; i < nparams; i++) {
            int at = i + 3;
            switch (lua_type(L, at)) {
            case LUA_TNIL:
                values[i] = NULL;
                break;
            case LUA_TBOOLEAN:
                values[i] = lua_toboolean(L, at) ? "true" : "false";
                break;
            case LUA_TNUMBER:
            case LUA_TSTRING: {
                size_t vlen;
                /* (a number becomes a string in its stack slot: held there) */
                const char *v = lua_tolstring(L, at, &vlen);
                if (strlen(v) != vlen) {
                    lua_pushnil(L);
                    lua_pushfstring(L, "parameter %d holds a NUL byte", i + 1);
                    return 2;
                }
                values[i] = v;
                break;
            }
            default:
                return luaL_argerror(L, at, "a string, number, boolean or nil expected");
            }
        }
    }
    drop_result(c);
    c->res = PQexecParams(c->pg, sql, nparams, NULL, values, NULL, NULL, 0);
    if (c->res == NULL)
        return fail_conn(L, c);
    switch (PQresultStatus(c->res)) {
    case PGRES_TUPLES_OK:
        push_rows(L, c);
        lua_pushinteger(L, PQntuples(c->res));
        drop_result(c);
        return 2;
    case PGRES_COMMAND_OK:
    case PGRES_EMPTY_QUERY:
        lua_newtable(L);
        push_affected(L, c);
        drop_result(c);
        return 2;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
        /* (copy_begin is the way to COPY: this one is ended at once) */
        drop_result(c);
        if (PQputCopyEnd(c->pg, "COPY goes through copy_begin") == 1) {
            PGresult *r;
            int guard = 0;
            while ((r = PQgetResult(c->pg)) != NULL && guard++ < 16)
                PQclear(r);
            if (r != NULL)
                PQclear(r);
        }
        return fail_text(L, "COPY goes through copy_begin");
    default:
        return fail_result(L, c);
    }
}

static int l_copy_begin(lua_State *L)
{
    conn_t *c = open_conn(L);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    const char *why;
    if ((why = not_ready(c, sql, len)) != NULL)
        return fail_text(L, why);
    drop_result(c);
    c->res = PQexec(c->pg, sql);
    if (c->res == NULL)
        return fail_conn(L, c);
    if (PQresultStatus(c->res) != PGRES_COPY_IN) {
        ExecStatusType st = PQresultStatus(c->res);
        if (st == PGRES_COPY_OUT) {
            /* (a COPY TO STDOUT: its data read and dropped) */
            char *data;
            PGresult *r;
            int guard = 0;
            drop_result(c);
            while (PQgetCopyData(c->pg, &data, 0) > 0)
                PQfreemem(data);
            while ((r = PQgetResult(c->pg)) != NULL && guard++ < 16)
                PQclear(r);
            if (r != NULL)
                PQclear(r);
        }
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_COPY_OUT) {
            drop_result(c);
            return fail_text(L, "not a COPY ... FROM STDIN");
        }
        return fail_result(L, c);
    }
    drop_result(c);
    c->copying = 1;
    lua_pushboolean(L, 1);
    return 1;
}

static int l_copy_put(lua_State *L)
{
    conn_t *c = open_conn(L);
    size_t len, done = 0;
    const char *data = luaL_checklstring(L, 2, &len);
    if (!c->copying)
        return fail_text(L, "no COPY is in progress");
    while (done < len) {
        size_t piece = len - done > PUT_PIECE ? PUT_PIECE : len - done;
        if (PQputCopyData(c->pg, data + done, (int)piece) != 1)
            return fail_conn(L, c);
        done += piece;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* Room for `more` bytes in c->out; 0 when there is no memory. */
static int reserve(conn_t *c, size_t more)
{
    if (c->cap - c->len < more) {
        size_t cap = c->cap ? c->cap : ROWS_PIECE + 4096;
        char *p;
        while (cap - c->len < more) {
            if (cap > ((size_t)-1) / 2)
                return 0;
            cap *= 2;
        }
        p = (char *)realloc(c->out, cap);
        if (p == NULL)
            return 0;
        c->out = p;
        c->cap = cap;
    }
    return 1;
}

/* Send what c->out holds; 0 (with libpq's message) when it cannot. */
static int send_out(conn_t *c)
{
    size_t done = 0;
    while (done < c->len) {
        size_t piece = c->len - done > PUT_PIECE ? PUT_PIECE : c->len - done;
        if (PQputCopyData(c->pg, c->out + done, (int)piece) != 1)
            return 0;
        done += piece;
    }
    c->len = 0;
    return 1;
}

/* One value in COPY's text format: backslash, tab, newline and carriage
 * return escaped; 0 for a NUL byte (PostgreSQL's text holds none). */
static int add_text(conn_t *c, const char *v, size_t n)
{
    size_t i;
    char *o;
    if (!reserve(c, 2 * n + 2))
        return -1;
    o = c->out + c->len;
    for (i = 0; i < n; i++) {
        char ch = v[i];
        switch (ch) {
        case '\\': *o++ = '\\'; *o++ = '\\'; break;
        case '\t': *o++ = '\\'; *o++ = 't'; break;
        case '\n': *o++ = '\\'; *o++ = 'n'; break;
        case '\r': *o++ = '\\'; *o++ = 'r'; break;
        case '\0': return 0;
        default: *o++ = ch; break;
        }
    }
    c->len = (size_t)(o - c->out);
    return 1;
}

static int l_copy_rows(lua_State *L)
{
    conn_t *c = open_conn(L);
    lua_Integer first, rows, width, r, k;
    luaL_checktype(L, 2, LUA_TTABLE);
    first = luaL_checkinteger(L, 3);
    rows = luaL_checkinteger(L, 4);
    width = luaL_checkinteger(L, 5);
    if (first < 1 || rows < 0 || width < 1 || width > 65535 || first > INT_MAX || rows > (INT_MAX - first) / width)
        return luaL_argerror(L, 4, "rows and columns out of range");
    if (!c->copying)
        return fail_text(L, "no COPY is in progress");
    c->len = 0;
    for (r = 0; r < rows; r++) {
        for (k = 0; k < width; k++) {
            char num[64];
            const char *v = NULL;
            size_t n = 0;
            int ok = 1;
            lua_rawgeti(L, 2, (lua_Integer)(first + r * width + k));
            switch (lua_type(L, -1)) {
            case LUA_TNIL:
                v = "\\N";
                n = 2;
                break;
            case LUA_TSTRING:
                /* (the list holds the string: the pointer outlives the pop) */
                v = lua_tolstring(L, -1, &n);
                ok = 2;
                break;
            case LUA_TNUMBER:
#if WV_HAVE_INTEGERS
                if (lua_isinteger(L, -1))
                    n = (size_t)snprintf(num, sizeof num, LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, -1));
                else
#endif
                    n = (size_t)snprintf(num, sizeof num, "%.17g", (double)lua_tonumber(L, -1));
                v = num;
                break;
            case LUA_TBOOLEAN:
                v = lua_toboolean(L, -1) ? "true" : "false";
                n = strlen(v);
                break;
            default:
                ok = 0;
                break;
            }
            lua_pop(L, 1);
            if (!ok) {
                c->len = 0;
                lua_pushnil(L);
                lua_pushfstring(L, "row %d, column %d: a value COPY cannot take", (int)(r + 1), (int)(k + 1));
                return 2;
            }
            if (ok == 2) {
                int added = add_text(c, v, n);
                if (added <= 0) {
                    c->len = 0;
                    lua_pushnil(L);
                    if (added < 0)
                        lua_pushliteral(L, "out of memory");
                    else
                        lua_pushfstring(L, "row %d, column %d holds a NUL byte", (int)(r + 1), (int)(k + 1));
                    return 2;
                }
            } else {
                if (!reserve(c, n + 1)) {
                    c->len = 0;
                    return fail_text(L, "out of memory");
                }
                memcpy(c->out + c->len, v, n);
                c->len += n;
            }
            if (!reserve(c, 1)) {
                c->len = 0;
                return fail_text(L, "out of memory");
            }
            c->out[c->len++] = k + 1 < width ? '\t' : '\n';
        }
        if (c->len >= ROWS_PIECE && !send_out(c)) {
            c->len = 0;
            return fail_conn(L, c);
        }
    }
    if (!send_out(c)) {
        c->len = 0;
        return fail_conn(L, c);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_copy_end(lua_State *L)
{
    conn_t *c = open_conn(L);
    const char *why = luaL_optstring(L, 2, NULL);
    PGresult *r;
    int failed = 0, guard = 0;
    lua_Integer copied = 0;
    if (!c->copying)
        return fail_text(L, "no COPY is in progress");
    c->copying = 0;
    lua_settop(L, 2);
    if (PQputCopyEnd(c->pg, why) != 1) {
        failed = 1;
        lua_pushnil(L);
        push_message(L, PQerrorMessage(c->pg));
        lua_pushnil(L);
    }
    /* Its results until libpq says there are no more (a broken connection
     * gives one error, then none). */
    while ((r = PQgetResult(c->pg)) != NULL) {
        ExecStatusType st;
        drop_result(c);
        c->res = r;
        st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK) {
            push_affected(L, c);
            copied = lua_tointeger(L, -1);
            lua_pop(L, 1);
        } else if (!failed) {
            failed = 1;
            lua_settop(L, 2);
            (void)fail_result(L, c);
        }
        drop_result(c);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH || ++guard > 16) {
            if (!failed) {
                failed = 1;
                lua_settop(L, 2);
                lua_pushnil(L);
                lua_pushstring(L, "the COPY did not end");
                lua_pushnil(L);
            }
            break;
        }
    }
    if (failed)
        return 3;
    lua_pushboolean(L, 1);
    lua_pushinteger(L, copied);
    return 2;
}

static int l_send(lua_State *L)
{
    conn_t *c = open_conn(L);
    size_t len;
    const char *sql = luaL_checklstring(L, 2, &len);
    const char *why;
    if ((why = not_ready(c, sql, len)) != NULL)
        return fail_text(L, why);
    drop_result(c);
    if (!PQsendQuery(c->pg, sql))
        return fail_conn(L, c);
    c->sent = 1;
    lua_pushboolean(L, 1);
    return 1;
}

static int l_ready(lua_State *L)
{
    conn_t *c = open_conn(L);
    /* (a connection that fails here is ready: wait() says why) */
    lua_pushboolean(L, !c->sent || !PQconsumeInput(c->pg) || !PQisBusy(c->pg));
    return 1;
}

static int l_wait(lua_State *L)
{
    conn_t *c = open_conn(L);
    PGresult *r;
    int failed = 0, guard = 0;
    if (!c->sent) {
        lua_pushboolean(L, 1);
        return 1;
    }
    c->sent = 0;
    lua_settop(L, 1);
    while ((r = PQgetResult(c->pg)) != NULL) {
        ExecStatusType st;
        drop_result(c);
        c->res = r;
        st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY && !failed) {
            failed = 1;
            (void)fail_result(L, c);
        }
        drop_result(c);
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH || ++guard > 64) {
            /* (not what send is for: the connection is given up) */
            close_conn(c);
            if (!failed) {
                failed = 1;
                lua_pushnil(L);
                lua_pushstring(L, "send is not for COPY");
                lua_pushnil(L);
            }
            break;
        }
    }
    if (failed)
        return 3;
    lua_pushboolean(L, 1);
    return 1;
}

static int l_status(lua_State *L)
{
    conn_t *c = check_conn(L);
    const char *s = "unknown";
    if (c->pg == NULL) {
        lua_pushstring(L, "closed");
        lua_pushboolean(L, 0);
        return 2;
    }
    if (c->copying) {
        s = "copy";
    } else if (c->sent) {
        s = "active";
    } else {
        switch (PQtransactionStatus(c->pg)) {
        case PQTRANS_IDLE: s = "idle"; break;
        case PQTRANS_ACTIVE: s = "active"; break;
        case PQTRANS_INTRANS: s = "intrans"; break;
        case PQTRANS_INERROR: s = "inerror"; break;
        default: break;
        }
    }
    lua_pushstring(L, s);
    lua_pushboolean(L, PQstatus(c->pg) == CONNECTION_OK);
    return 2;
}

static int l_close(lua_State *L)
{
    close_conn(check_conn(L));
    lua_pushboolean(L, 1);
    return 1;
}

static int l_tostring(lua_State *L)
{
    conn_t *c = check_conn(L);
    lua_pushfstring(L, "wolkvox.pg.conn (%s)", c->pg ? "open" : "closed");
    return 1;
}

static const luaL_Reg conn_methods[] = {
    { "exec", l_exec },
    { "copy_begin", l_copy_begin },
    { "copy_put", l_copy_put },
    { "copy_rows", l_copy_rows },
    { "copy_end", l_copy_end },
    { "send", l_send },
    { "ready", l_ready },
    { "wait", l_wait },
    { "status", l_status },
    { "close", l_close },
    { NULL, NULL },
};

static const luaL_Reg funcs[] = {
    { "connect", l_connect },
    { NULL, NULL },
};

__attribute__((visibility("default"))) int luaopen_wolkvox_pg(lua_State *L);

int luaopen_wolkvox_pg(lua_State *L)
{
    if (luaL_newmetatable(L, CONN_MT)) {
        luaL_newlib(L, conn_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_pushinteger(L, PQlibVersion());
    lua_setfield(L, -2, "libpq_version");
    return 1;
}
