/*
 * wolkvox.xlsx: a small binding of libxlsxwriter (Debian libxlsxwriter-dev),
 * the maintained C library for .xlsx files, for `--format xlsx`
 * (wolkvox.out.xlsx).  Optional: the Makefile builds it only when pkg-config
 * finds xlsxwriter; the core never needs it.
 *
 *   xlsx.new([tmpdir])                  -> book | nil, message
 *   book:sheet(name)                    -> sheet number | nil, message
 *   book:format{ bold =, num_format = } -> format number | nil, message
 *   book:row(sheet, row, values, formats, n)        -> true | nil, message
 *   book:column(sheet, first, last, width [, format]) -> true | nil, message
 *   book:freeze(sheet, row, col), book:autofilter(sheet, r1, c1, r2, c2)
 *   book:print(sheet, { landscape =, fit_width =, fit_height = })  how it prints
 *   book:chart(sheet, row, col, spec)   -> true | nil, message
 *   book:close()                        -> path of the finished file | nil, message
 *   book:discard()                      removes the private directory
 *   xlsx.version, xlsx.max_rows, xlsx.max_string
 *
 * Rows, columns and sheets are numbered from 0 as libxlsxwriter numbers
 * them; `sheet` is what book:sheet gave.  The workbook is made in
 * libxlsxwriter's constant-memory mode: each sheet's rows go to a temporary
 * file as they are written (a row may not be written after a later one),
 * so a workbook of millions of cells holds one row in memory per sheet.
 *
 * Where it is written: a private directory made by mkdtemp (mode 0700, a
 * name nobody can guess) under `tmpdir` ($TMPDIR, else /tmp), which holds
 * libxlsxwriter's temporary files and the finished workbook
 * (DIR/book.xlsx).  book:close() gives that file's path: the caller copies
 * it where it belongs (any open file, a pipe included, in the mode it was
 * opened with: nothing here opens, truncates or follows a file it did not
 * create), then calls book:discard() (the collector does it too).
 * The directory's name holds the process id (wolkvox-xlsx-PID-XXXXXX):
 * one left by a process killed outright (kill -9, a power cut) is removed
 * by the next xlsx.new under the same tmpdir when that process is gone, the
 * directory is a real one (not a link), ours and private (mode 0700), and
 * it holds nothing but an unfinished book.xlsx; anything else stays as is.
 *
 * Values: a number is written as a number, a string as a string (never as
 * a formula, whatever it starts with), anything else leaves the cell blank.
 * A string holding a NUL byte is refused (the caller escapes them first).
 * Every failure is nil and a message (libxlsxwriter's lxw_strerror); no
 * state is global: each book is its own, any number of lua_States may use
 * the module at once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <xlsxwriter.h>

#include "compat.h"

#define BOOK_MT "wolkvox.xlsx.book"
#define MAX_FORMATS 64
#define MAX_SERIES 255
#define DIR_MAX 4096

typedef struct Book {
    lxw_workbook *wb;          /* NULL once closed (or never made) */
    lxw_worksheet **sheets;    /* malloc'd, nsheets of them */
    int nsheets, cap;
    lxw_format *formats[MAX_FORMATS];
    int nformats;
    char dir[DIR_MAX];         /* "" when there is no directory */
    char path[DIR_MAX + 16];   /* DIR/book.xlsx */
    int finished;              /* workbook_close succeeded: path holds the file */
} Book;

static Book *check_book(lua_State *L)
{
    return (Book *)luaL_checkudata(L, 1, BOOK_MT);
}

static int fail(lua_State *L, const char *what, const char *why)
{
    lua_pushnil(L);
    lua_pushfstring(L, "xlsx: %s: %s", what, why);
    return 2;
}

/* The book at 1, or (closed) return nil and a message from the caller. */
#define OPEN_BOOK(L, b)                                        \
    Book *b = check_book(L);                                   \
    if (b->wb == NULL)                                         \
        return fail(L, "the workbook is closed", "write a new one")

static int fail_lxw(lua_State *L, const char *what, lxw_error err)
{
    return fail(L, what, lxw_strerror(err));
}

static lxw_worksheet *sheet_at(lua_State *L, Book *b, int idx)
{
    lua_Integer n = luaL_checkinteger(L, idx);
    if (n < 1 || n > b->nsheets)
        luaL_argerror(L, idx, "no such sheet");
    return b->sheets[n - 1];
}

static lxw_format *format_at(lua_State *L, Book *b, int idx)
{
    lua_Integer n;
    if (lua_isnoneornil(L, idx))
        return NULL;
    n = luaL_checkinteger(L, idx);
    if (n == 0)
        return NULL;
    if (n < 1 || n > b->nformats)
        luaL_argerror(L, idx, "no such format");
    return b->formats[n - 1];
}

static lxw_row_t row_at(lua_State *L, int idx)
{
    lua_Integer n = luaL_checkinteger(L, idx);
    luaL_argcheck(L, n >= 0 && n < LXW_ROW_MAX, idx, "row out of range");
    return (lxw_row_t)n;
}

static lxw_col_t col_at(lua_State *L, int idx)
{
    lua_Integer n = luaL_checkinteger(L, idx);
    luaL_argcheck(L, n >= 0 && n < LXW_COL_MAX, idx, "column out of range");
    return (lxw_col_t)n;
}

/* Remove the finished file and the private directory (libxlsxwriter's
 * temporary files are gone by then: it removes them, or they were never
 * linked).  Idempotent. */
static void remove_files(Book *b)
{
    if (b->dir[0] == '\0')
        return;
    if (b->path[0] != '\0')
        (void)unlink(b->path);
    (void)rmdir(b->dir);
    b->dir[0] = '\0';
    b->path[0] = '\0';
    b->finished = 0;
}

/* Free what the book holds without writing anything. */
static void drop(Book *b)
{
    if (b->wb != NULL) {
        lxw_workbook_free(b->wb);
        b->wb = NULL;
    }
    free(b->sheets);
    b->sheets = NULL;
    b->nsheets = b->cap = 0;
    b->nformats = 0;
}

static int book_gc(lua_State *L)
{
    Book *b = check_book(L);
    drop(b);
    remove_files(b);
    return 0;
}

#define DIR_PREFIX "wolkvox-xlsx-"

/* The process id in a private directory's name, or 0 when the name is not
 * one of ours (DIR_PREFIX, digits, '-', six characters). */
static pid_t owner_pid(const char *name)
{
    const char *p = name + sizeof DIR_PREFIX - 1;
    long pid = 0;
    if (strncmp(name, DIR_PREFIX, sizeof DIR_PREFIX - 1) != 0)
        return 0;
    while (*p >= '0' && *p <= '9' && pid < 1000000000L)
        pid = pid * 10 + (*p++ - '0');
    if (pid <= 0 || *p != '-' || strlen(p + 1) != 6)
        return 0;
    return (pid_t)pid;
}

/* Remove the private directory `name` under the open directory `parent`
 * when it is a stale one (see the head of this file).  Nothing is followed:
 * the checks are made on the opened directory itself. */
static void sweep_one(int parent, const char *name)
{
    pid_t pid = owner_pid(name);
    struct stat st;
    struct dirent *e;
    DIR *d;
    int fd, clean = 1;
    if (pid == 0 || pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
        return;
    fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return;
    if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & 07777) != 0700 ||
        (d = fdopendir(fd)) == NULL) {
        (void)close(fd);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat f;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (strcmp(e->d_name, "book.xlsx") != 0 ||
            fstatat(fd, e->d_name, &f, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(f.st_mode) ||
            f.st_uid != geteuid())
            clean = 0;
    }
    if (clean) {
        (void)unlinkat(fd, "book.xlsx", 0);
        (void)unlinkat(parent, name, AT_REMOVEDIR);
    }
    (void)closedir(d);
}

/* Remove the stale private directories under `tmp` (best effort: a
 * directory that cannot be read is left as it is). */
static void sweep(const char *tmp)
{
    int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct dirent *e;
    DIR *d;
    if (fd < 0)
        return;
    d = fdopendir(fd);
    if (d == NULL) {
        (void)close(fd);
        return;
    }
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] == 'w')
            sweep_one(fd, e->d_name);
    (void)closedir(d);
}

/* xlsx.new([tmpdir]) */
static int x_new(lua_State *L)
{
    const char *tmp = luaL_optstring(L, 1, NULL);
    lxw_workbook_options opts;
    Book *b;
    int n;
    if (tmp == NULL || tmp[0] == '\0')
        tmp = getenv("TMPDIR");
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    /* The userdata first: a failure below leaves it to the collector. */
    b = (Book *)lua_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, BOOK_MT);
    lua_setmetatable(L, -2);
    sweep(tmp);
    n = snprintf(b->dir, sizeof b->dir, "%s/" DIR_PREFIX "%ld-XXXXXX", tmp, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof b->dir) {
        b->dir[0] = '\0';
        return fail(L, "the temporary directory", "its name is too long");
    }
    if (mkdtemp(b->dir) == NULL) {
        int e = errno;
        b->dir[0] = '\0';
        lua_pushnil(L);
        lua_pushfstring(L, "xlsx: cannot make a private directory under %s: %s", tmp, strerror(e));
        return 2;
    }
    (void)snprintf(b->path, sizeof b->path, "%s/book.xlsx", b->dir);
    memset(&opts, 0, sizeof opts);
    opts.constant_memory = LXW_TRUE;
    opts.tmpdir = b->dir;
    opts.use_zip64 = LXW_TRUE;
    b->wb = workbook_new_opt(b->path, &opts);
    if (b->wb == NULL) {
        remove_files(b);
        return fail(L, "new workbook", "libxlsxwriter could not make one (out of memory?)");
    }
    return 1;
}

/* book:sheet(name): a new worksheet, its number. */
static int x_sheet(lua_State *L)
{
    OPEN_BOOK(L, b);
    const char *name = luaL_checkstring(L, 2);
    lxw_error err = workbook_validate_sheet_name(b->wb, name);
    lxw_worksheet *ws;
    if (err != LXW_NO_ERROR)
        return fail_lxw(L, name, err);
    if (b->nsheets == b->cap) {
        int cap = b->cap ? b->cap * 2 : 8;
        lxw_worksheet **grown = (lxw_worksheet **)realloc(b->sheets, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return fail(L, name, "out of memory");
        b->sheets = grown;
        b->cap = cap;
    }
    ws = workbook_add_worksheet(b->wb, name);
    if (ws == NULL)
        return fail(L, name, "libxlsxwriter could not add the sheet");
    b->sheets[b->nsheets++] = ws;
    lua_pushinteger(L, b->nsheets);
    return 1;
}

/* book:format{ bold = true, num_format = "0.00%", wrap = true } */
static int x_format(lua_State *L)
{
    OPEN_BOOK(L, b);
    lxw_format *f;
    luaL_checktype(L, 2, LUA_TTABLE);
    if (b->nformats == MAX_FORMATS)
        return fail(L, "format", "too many formats");
    f = workbook_add_format(b->wb);
    if (f == NULL)
        return fail(L, "format", "libxlsxwriter could not add it");
    lua_getfield(L, 2, "bold");
    if (lua_toboolean(L, -1))
        format_set_bold(f);
    lua_pop(L, 1);
    lua_getfield(L, 2, "wrap");
    if (lua_toboolean(L, -1))
        format_set_text_wrap(f);
    lua_pop(L, 1);
    lua_getfield(L, 2, "num_format");
    if (lua_type(L, -1) == LUA_TSTRING)
        format_set_num_format(f, lua_tostring(L, -1));
    lua_pop(L, 1);
    b->formats[b->nformats++] = f;
    lua_pushinteger(L, b->nformats);
    return 1;
}

/* book:row(sheet, row, values, formats, n): cells 0 .. n-1 of `row` from
 * values[1..n] (a number, a string, else blank) with formats[1..n] (a
 * format number, 0 or nil for none). */
static int x_row(lua_State *L)
{
    OPEN_BOOK(L, b);
    lxw_worksheet *ws = sheet_at(L, b, 2);
    lxw_row_t row = row_at(L, 3);
    lua_Integer n = luaL_checkinteger(L, 6), i;
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_argcheck(L, n >= 0 && n <= LXW_COL_MAX, 6, "too many cells");
    if (!lua_isnoneornil(L, 5))
        luaL_checktype(L, 5, LUA_TTABLE);
    for (i = 0; i < n; i++) {
        lxw_format *f = NULL;
        lxw_error err = LXW_NO_ERROR;
        int t;
        if (!lua_isnoneornil(L, 5)) {
            lua_rawgeti(L, 5, (int)(i + 1));
            if (!lua_isnil(L, -1)) {
                lua_Integer k = lua_tointeger(L, -1);
                if (k < 0 || k > b->nformats) {
                    lua_pop(L, 1);
                    return fail(L, "row", "no such format");
                }
                f = k > 0 ? b->formats[k - 1] : NULL;
            }
            lua_pop(L, 1);
        }
        lua_rawgeti(L, 4, (int)(i + 1));
        t = lua_type(L, -1);
        if (t == LUA_TNUMBER) {
            err = worksheet_write_number(ws, row, (lxw_col_t)i, (double)lua_tonumber(L, -1), f);
        } else if (t == LUA_TSTRING) {
            size_t len;
            const char *s = lua_tolstring(L, -1, &len);
            if (memchr(s, '\0', len) != NULL) {
                lua_pop(L, 1);
                return fail(L, "row", "a string holds a NUL byte");
            }
            /* (the string stays on the stack, anchored, while written) */
            err = worksheet_write_string(ws, row, (lxw_col_t)i, s, f);
        }
        lua_pop(L, 1);
        if (err != LXW_NO_ERROR)
            return fail_lxw(L, "row", err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* book:column(sheet, first, last, width [, format]) */
static int x_column(lua_State *L)
{
    OPEN_BOOK(L, b);
    lxw_worksheet *ws = sheet_at(L, b, 2);
    lxw_col_t first = col_at(L, 3), last = col_at(L, 4);
    double width = (double)luaL_checknumber(L, 5);
    lxw_error err = worksheet_set_column(ws, first, last, width, format_at(L, b, 6));
    if (err != LXW_NO_ERROR)
        return fail_lxw(L, "column", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* book:freeze(sheet, row, col): rows above `row` and columns left of `col` stay. */
static int x_freeze(lua_State *L)
{
    OPEN_BOOK(L, b);
    lxw_worksheet *ws = sheet_at(L, b, 2);
    worksheet_freeze_panes(ws, row_at(L, 3), col_at(L, 4));
    lua_pushboolean(L, 1);
    return 1;
}

/* book:autofilter(sheet, first_row, first_col, last_row, last_col) */
static int x_autofilter(lua_State *L)
{
    OPEN_BOOK(L, b);
    lxw_worksheet *ws = sheet_at(L, b, 2);
    lxw_error err = worksheet_autofilter(ws, row_at(L, 3), col_at(L, 4), row_at(L, 5), col_at(L, 6));
    if (err != LXW_NO_ERROR)
        return fail_lxw(L, "autofilter", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* book:print(sheet, { landscape = true, fit_width = 1, fit_height = 0 }):
 * how the sheet prints (0 pages: as many as it takes). */
static int x_print(lua_State *L)
{
    OPEN_BOOK(L, b);
    lxw_worksheet *ws = sheet_at(L, b, 2);
    lua_Integer w, h;
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_getfield(L, 3, "landscape");
    if (lua_toboolean(L, -1))
        worksheet_set_landscape(ws);
    lua_getfield(L, 3, "fit_width");
    lua_getfield(L, 3, "fit_height");
    w = lua_tointeger(L, -2);
    h = lua_tointeger(L, -1);
    lua_pop(L, 3);
    if (w > 0 || h > 0) {
        if (w < 0 || h < 0 || w > 65535 || h > 65535)
            return fail(L, "print", "fit_width and fit_height are 0 to 65535 pages");
        worksheet_fit_to_pages(ws, (uint16_t)w, (uint16_t)h);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* The string field `k` of the table at `idx`, or NULL (left on the stack:
 * the caller pops `*pushed` values when done with it). */
static const char *field(lua_State *L, int idx, const char *k, int *pushed)
{
    lua_getfield(L, idx, k);
    (*pushed)++;
    return lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
}

/* book:chart(sheet, row, col, spec): a native chart placed at (row, col).
 * spec: type ("line" | "column"), title, y_title, y_format, x_scale,
 * y_scale, series = { { categories =, values =, name_ref = }, ... }, each a
 * reference ("='Chart data'!$B$2:$B$9"). Titles are text, never formulas. */
static int x_chart(lua_State *L)
{
    OPEN_BOOK(L, b);
    lxw_worksheet *ws = sheet_at(L, b, 2);
    lxw_row_t row = row_at(L, 3);
    lxw_col_t col = col_at(L, 4);
    lxw_chart *chart;
    lxw_chart_options opts;
    const char *s;
    int pushed = 0, i, n;
    lxw_error err;
    luaL_checktype(L, 5, LUA_TTABLE);
    s = field(L, 5, "type", &pushed);
    chart = workbook_add_chart(b->wb, (s != NULL && strcmp(s, "column") == 0) ? LXW_CHART_COLUMN : LXW_CHART_LINE);
    lua_pop(L, pushed);
    pushed = 0;
    if (chart == NULL)
        return fail(L, "chart", "libxlsxwriter could not add it");
    s = field(L, 5, "title", &pushed);
    if (s != NULL && s[0] != '=')
        chart_title_set_name(chart, s);
    s = field(L, 5, "y_title", &pushed);
    if (s != NULL && s[0] != '=')
        chart_axis_set_name(chart->y_axis, s);
    s = field(L, 5, "y_format", &pushed);
    if (s != NULL)
        chart_axis_set_num_format(chart->y_axis, s);
    lua_pop(L, pushed);
    pushed = 0;
    chart_legend_set_position(chart, LXW_CHART_LEGEND_BOTTOM);
    lua_getfield(L, 5, "series");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        return fail(L, "chart", "no series");
    }
    n = (int)lua_rawlen(L, -1);
    if (n < 1 || n > MAX_SERIES) {
        lua_pop(L, 1);
        return fail(L, "chart", n < 1 ? "no series" : "too many series");
    }
    for (i = 1; i <= n; i++) {
        const char *cats, *vals, *name;
        lxw_chart_series *series;
        int top;
        lua_rawgeti(L, -1, i);
        if (!lua_istable(L, -1)) {
            lua_pop(L, 2);
            return fail(L, "chart", "a series must be a table");
        }
        top = lua_gettop(L);
        cats = field(L, top, "categories", &pushed);
        vals = field(L, top, "values", &pushed);
        name = field(L, top, "name_ref", &pushed);
        if (vals == NULL) {
            lua_pop(L, pushed + 2);
            return fail(L, "chart", "a series without values");
        }
        series = chart_add_series(chart, cats, vals);
        if (series == NULL) {
            lua_pop(L, pushed + 2);
            return fail(L, "chart", "libxlsxwriter could not add a series");
        }
        if (name != NULL)
            chart_series_set_name(series, name);
        lua_pop(L, pushed + 1);
        pushed = 0;
    }
    lua_pop(L, 1);
    memset(&opts, 0, sizeof opts);
    lua_getfield(L, 5, "x_scale");
    opts.x_scale = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 1.0;
    lua_getfield(L, 5, "y_scale");
    opts.y_scale = lua_isnumber(L, -1) ? (double)lua_tonumber(L, -1) : 1.0;
    lua_pop(L, 2);
    err = worksheet_insert_chart_opt(ws, row, col, chart, &opts);
    if (err != LXW_NO_ERROR)
        return fail_lxw(L, "chart", err);
    lua_pushboolean(L, 1);
    return 1;
}

/* book:close(): the workbook written to DIR/book.xlsx; its path. */
static int x_close(lua_State *L)
{
    Book *b = check_book(L);
    lxw_error err;
    if (b->wb == NULL) {
        if (b->finished) {
            lua_pushstring(L, b->path);
            return 1;
        }
        return fail(L, "close", "the workbook is closed");
    }
    err = workbook_close(b->wb); /* frees the workbook, whatever it answers */
    b->wb = NULL;
    free(b->sheets);
    b->sheets = NULL;
    b->nsheets = b->cap = 0;
    b->nformats = 0;
    if (err != LXW_NO_ERROR)
        return fail_lxw(L, "close", err);
    b->finished = 1;
    lua_pushstring(L, b->path);
    return 1;
}

/* book:discard(): forget the workbook (unwritten if still open) and remove
 * the private directory and what it holds. */
static int x_discard(lua_State *L)
{
    Book *b = check_book(L);
    drop(b);
    remove_files(b);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg book_methods[] = {
    { "sheet", x_sheet },
    { "format", x_format },
    { "row", x_row },
    { "column", x_column },
    { "freeze", x_freeze },
    { "autofilter", x_autofilter },
    { "chart", x_chart },
    { "print", x_print },
    { "close", x_close },
    { "discard", x_discard },
    { NULL, NULL },
};

static const luaL_Reg funcs[] = {
    { "new", x_new },
    { NULL, NULL },
};

int luaopen_wolkvox_xlsx(lua_State *L);

__attribute__((visibility("default"))) int luaopen_wolkvox_xlsx(lua_State *L)
{
    if (luaL_newmetatable(L, BOOK_MT)) {
        lua_newtable(L);
        luaL_setfuncs(L, book_methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, book_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, BOOK_MT);
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    lua_pushstring(L, LXW_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, LXW_ROW_MAX);
    lua_setfield(L, -2, "max_rows");
    lua_pushinteger(L, 32767); /* characters in a cell: Excel's limit, libxlsxwriter's too */
    lua_setfield(L, -2, "max_string");
    return 1;
}
