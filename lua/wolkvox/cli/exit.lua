--- The exit codes of the `wolkvox` command, one per kind of failure a
-- script may want to branch on.
--
-- | code | when |
-- |---|---|
-- | 0 | success |
-- | 1 | a local failure: a file or directory (output, state, checkpoint, spool) missing, not
--   writable or full (`output`), or an internal error |
-- | 2 | usage, bad parameters, an unknown endpoint (`params`, `not_found`) |
-- | 3 | authentication (`auth`) |
-- | 4 | the daily quota refused or spent (`quota`) |
-- | 5 | the service or the network failed (`transport`, `http`, `decode`, `too_large`,
--   `maintenance`, `concurrency` after retries, `closed`, `state`: the fleet's Redis) |
-- | 6 | truncated: a window still full at its smallest span (`truncated`) |
-- | 7 | incomplete: a window failed after others were written (their rows are kept in FILE.part) |
-- | 8 | busy: another run holds this checkpoint or sync state now (`busy`); nothing was spent |
-- | 9 | budget: a plan (`sync --plan`) spent its share of the day's quota; everything finished is
--   kept, and the next run (the next day) goes on |
-- | 130, 143 | interrupted by SIGINT (Ctrl-C) or SIGTERM: the command stops as cleanly as on
--   a failure (no temporary file left; a `--checkpoint` or a sync state consistent: the next
--   run goes on from it) |
-- @module wolkvox.cli.exit

local M = {}

M.OK, M.LOCAL, M.USAGE, M.AUTH, M.QUOTA, M.SERVICE, M.TRUNCATED, M.INCOMPLETE, M.BUSY = 0, 1, 2, 3, 4, 5, 6, 7, 8
M.BUDGET = 9
M.INTERRUPTED, M.TERMINATED = 130, 143

--- The exit code of each error kind.
M.BY_KIND = {
    params = 2, not_found = 2,
    auth = 3,
    quota = 4,
    transport = 5, http = 5, decode = 5, too_large = 5, maintenance = 5, concurrency = 5, closed = 5,
    state = 5,
    truncated = 6,
    busy = 8,
}

--- The exit code for `err`: a structured error's kind, else 1.
-- @param err a structured error (a table with `kind`) or anything else
-- @treturn number
function M.code(err)
    return type(err) == "table" and M.BY_KIND[err.kind] or M.LOCAL
end

--- The lines of `--help` that list the codes.
M.HELP = [[
Exit codes:
   0  success
   1  a local failure: a file or directory (output, state, checkpoint, spool)
      missing, not writable or full
   2  usage, bad parameters, unknown endpoint
   3  authentication (no token, a token refused)
   4  the daily quota (refused before sending, or spent)
   5  the service or the network failed (transport, http, decode, too_large,
      maintenance, concurrency after retries)
   6  truncated (a window still full at its smallest span)
   7  incomplete: a window failed after others were written (their rows are
      kept in FILE.part, never under FILE; with --checkpoint, run the command
      again to finish; sync --append keeps them in its file and state)
   8  busy: another run holds this checkpoint or sync state now (nothing spent)
   9  budget: sync --plan spent the plan's share of the day; the next run
      (the next day) goes on
 130  interrupted (Ctrl-C); 143: stopped by SIGTERM.  Nothing half is left;
      with --checkpoint, run the same command again to finish.]]

return M
