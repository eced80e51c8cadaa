/* SPDX-License-Identifier: MIT
 * readline.c — `pgstore.readline`, the REPL's terminal: line editing,
 * history and completion from libedit's readline emulation, driven through
 * its alternate (callback) interface so that the Lua loop can poll() stdin
 * together with other descriptors (LISTEN sockets) and print above the
 * prompt while a line is being typed. Only the host executable registers
 * this module (package.preload); pgstore.core knows nothing of terminals.
 */
#define _GNU_SOURCE /* ppoll */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wchar.h>

#include <editline/readline.h>

#include <lauxlib.h>
#include <lua.h>

#include "host.h"

/* ---- state ----------------------------------------------------------------
 * libedit's readline emulation is one global editor, so this module is too.
 * `installed` is true between install() and the end of a line: the terminal
 * is then in raw mode and libedit owns the line on screen. */
static int initialized;
static int installed;
static char *prompt;         /* the installed prompt, for measuring it */
static char *done_line;      /* set by on_line: the finished line … */
static int done_state;       /* … 0 nothing yet, 1 a line, 2 end of input */
static lua_State *main_L;    /* where the interrupt hook goes */
static lua_State *cur_L;     /* non-NULL while libedit may call complete() */
static int complete_ref = LUA_NOREF;
static volatile sig_atomic_t pending_signal; /* INT, TERM or HUP while idle */
static volatile sig_atomic_t resized;
static volatile sig_atomic_t continued;
static volatile sig_atomic_t evaluating;

/* Lua chunks in the REPL split on these; '.' and ':' are not among them, so
 * `db:ev` reaches the completer whole; nor is the backslash, for `\listen`. */
static const char word_breaks[] = " \t\n\"'`@$><=;|&{}()[],+-*/%^~#";

/* ---- signals --------------------------------------------------------------
 * While idle, INT/TERM/HUP only set a flag that interrupts the poll (libedit
 * first restores the terminal, then forwards the signal here). While user
 * code runs, INT sends a cancel request for the statement in flight (as
 * psql does) and sets a hook that raises "interrupted" at the next Lua
 * instruction the interpreter runs, as luajit's own REPL does (the REPL
 * runs typed code with the JIT off, so loops see it). Code that still does
 * not (a loop compiled on purpose, a call blocked in C elsewhere than
 * waiting for the server) ends the process on a second INT, which cancels
 * the statement again first. TERM/HUP take their default action. */
static volatile sig_atomic_t interrupt_pending;
static volatile sig_atomic_t cancel_sent; /* a statement was cancelled too */
static int interrupted; /* the hook fired during this evaluation */
/* pgstore.core's pgs_conn_interrupt (rl.init's `cancel`): sends a cancel
 * request for the statement in flight, if any, async-signal-safely; a call
 * blocked waiting for the server then returns and the hook fires. */
static int (*cancel_statement)(void);

static void stop_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    interrupt_pending = 0;
    interrupted = 1;
    lua_sethook(L, NULL, 0, 0);
    luaL_error(L, cancel_sent ? "interrupted (the running statement was cancelled)" : "interrupted");
}

static void on_signal(int sig)
{
    if (evaluating) {
        /* Every Ctrl-C cancels the statement in flight, the last one too:
         * the server must not go on with it after the process is gone. */
        if (sig == SIGINT && cancel_statement && cancel_statement())
            cancel_sent = 1;
        if (sig == SIGINT && main_L && !interrupt_pending) {
            interrupt_pending = 1;
            lua_sethook(main_L, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
            return;
        }
        if (sig == SIGINT) {
            static const char msg[] = "\npgstore: interrupted twice, quitting\n";
            ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
            (void)w;
        }
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    pending_signal = sig;
}

static void on_winch(int sig)
{
    (void)sig;
    resized = 1;
}

static void on_cont(int sig)
{
    (void)sig;
    continued = 1;
}

static void catch_signal(int sig, void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL); /* no SA_RESTART: the poll must wake up */
}

/* ---- measuring the line on screen -----------------------------------------
 * To print above the prompt, the cursor goes up to the prompt's first row.
 * libedit does not say which row it is on, so this replays its layout:
 * the prompt, then the text up to the cursor, wrapping at the terminal's
 * width, embedded newlines starting a new row, tabs to the next multiple
 * of 8, control characters as ^X. */
static int term_cols(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

typedef struct {
    int row, col, cols;
} layout_t;

static void lay_char(layout_t *lo, wchar_t c)
{
    if (c == L'\n') {
        lo->row++;
        lo->col = 0;
        return;
    }
    int w;
    if (c == L'\t')
        w = 8 - lo->col % 8;
    else if (c < 0x20 || c == 0x7f)
        w = 2;
    else if ((w = wcwidth(c)) < 0)
        w = 4;
    if (lo->col + w > lo->cols && w <= lo->cols) { /* a wide char does not split */
        lo->row++;
        lo->col = 0;
    }
    lo->col += w;
    if (lo->col >= lo->cols) {
        lo->row += lo->col / lo->cols;
        lo->col %= lo->cols;
    }
}

static void lay_text(layout_t *lo, const char *s, size_t n, int prompt_text)
{
    mbstate_t st;
    memset(&st, 0, sizeof st);
    int ignoring = 0;
    while (n > 0) {
        if (prompt_text && (*s == RL_PROMPT_START_IGNORE || *s == RL_PROMPT_END_IGNORE)) {
            ignoring = *s == RL_PROMPT_START_IGNORE;
            s++, n--;
            continue;
        }
        wchar_t c;
        size_t k = mbrtowc(&c, s, n, &st);
        if (k == (size_t)-1 || k == (size_t)-2) { /* an invalid byte: libedit shows \ooo */
            memset(&st, 0, sizeof st);
            c = 0xfffd;
            k = 1;
        } else if (k == 0) {
            k = 1;
        }
        if (!ignoring)
            lay_char(lo, c);
        s += k, n -= k;
    }
}

/* Where the cursor (or the end of the line) is, counted from the prompt. */
static layout_t measure(int upto_end)
{
    layout_t lo = {0, 0, term_cols()};
    if (prompt)
        lay_text(&lo, prompt, strlen(prompt), 1);
    int n = upto_end ? rl_end : rl_point;
    if (rl_line_buffer && n > 0)
        lay_text(&lo, rl_line_buffer, (size_t)n, 0);
    return lo;
}

/* Moves the cursor to the prompt's first column and erases from there to
 * the end of the screen. */
static void erase_line_area(void)
{
    layout_t at = measure(0);
    fputc('\r', stdout);
    if (at.row > 0)
        fprintf(stdout, "\033[%dA", at.row);
    fputs("\033[J", stdout);
}

/* ---- completion -----------------------------------------------------------
 * libedit calls complete() from inside read_char(); it asks the Lua
 * completer for the candidates (whole replacement words) and returns them
 * readline's way: [common prefix, candidates…, NULL], malloc'd, freed by
 * libedit. */
static char **complete(const char *text, int start, int end)
{
    (void)start, (void)end;
    rl_attempted_completion_over = 1; /* never fall back to file names */
    lua_State *L = cur_L;
    if (!L || complete_ref == LUA_NOREF)
        return NULL;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, complete_ref);
    lua_pushstring(L, text);
    lua_pushlstring(L, rl_line_buffer ? rl_line_buffer : "", rl_line_buffer ? (size_t)rl_point : 0);
    if (lua_pcall(L, 2, 1, 0) != 0 || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return NULL;
    }
    size_t n = lua_objlen(L, -1);
    char **m = n ? calloc(n + 2, sizeof *m) : NULL;
    if (!m) {
        lua_settop(L, top);
        return NULL;
    }
    size_t got = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (int)i);
        const char *s = lua_tostring(L, -1);
        if (s && (m[got + 1] = strdup(s)) != NULL)
            got++;
        lua_pop(L, 1);
    }
    lua_settop(L, top);
    if (got == 0) {
        free(m);
        return NULL;
    }
    if (got == 1) {
        m[0] = m[1];
        m[1] = NULL;
        return m;
    }
    size_t common = strlen(m[1]);
    for (size_t i = 2; i <= got; i++) {
        size_t j = 0;
        while (j < common && m[i][j] == m[1][j])
            j++;
        common = j;
    }
    m[0] = strndup(m[1], common);
    if (!m[0]) {
        for (size_t i = 1; i <= got; i++)
            free(m[i]);
        free(m);
        return NULL;
    }
    return m;
}

/* ---- the callback interface ---------------------------------------------- */

static void on_line(char *line)
{
    done_line = line; /* malloc'd by libedit, ours now */
    done_state = line ? 1 : 2;
}

static void uninstall(void)
{
    if (installed) {
        rl_callback_handler_remove(); /* back to cooked mode */
        installed = 0;
    }
}

static void at_exit(void)
{
    uninstall();
}

/* rl.init{ name = "pgstore", complete = function(word, line_before_cursor) → {…},
 *          cancel = pgstore.core.interrupt } */
static int l_init(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!initialized) {
        setlocale(LC_CTYPE, ""); /* UTF-8 input and widths; numbers keep the C locale */
        lua_getfield(L, 1, "name");
        static char name[64];
        snprintf(name, sizeof name, "%s", luaL_optstring(L, -1, "pgstore"));
        lua_pop(L, 1);
        rl_readline_name = name;
        rl_instream = stdin;
        rl_outstream = stdout;
        rl_catch_signals = 1; /* libedit restores the terminal, then forwards */
        if (rl_initialize() != 0)
            return luaL_error(L, "cannot initialise the line editor");
        rl_basic_word_break_characters = word_breaks;
        rl_completer_word_break_characters = (char *)word_breaks;
        rl_attempted_completion_function = complete;
        rl_completion_append_character = '\0';
        rl_completion_query_items = 200;
        catch_signal(SIGINT, on_signal);
        catch_signal(SIGTERM, on_signal);
        catch_signal(SIGHUP, on_signal);
        catch_signal(SIGWINCH, on_winch);
        catch_signal(SIGCONT, on_cont);
        atexit(at_exit);
        main_L = L;
        initialized = 1;
    }
    lua_getfield(L, 1, "cancel");
    if (lua_islightuserdata(L, -1)) {
        void *p = lua_touserdata(L, -1);
        memcpy(&cancel_statement, &p, sizeof p);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "complete");
    if (lua_isfunction(L, -1)) {
        luaL_unref(L, LUA_REGISTRYINDEX, complete_ref);
        complete_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    } else {
        lua_pop(L, 1);
    }
    return 0;
}

static void check_init(lua_State *L)
{
    if (!initialized)
        luaL_error(L, "pgstore.readline: call init() first");
}

/* rl.install(prompt): shows the prompt and puts the terminal in raw mode. */
static int l_install(lua_State *L)
{
    const char *p = luaL_checkstring(L, 1);
    check_init(L);
    uninstall();
    char *copy = strdup(p);
    if (!copy)
        return luaL_error(L, "out of memory");
    free(prompt);
    prompt = copy;
    done_state = 0;
    continued = 0;
    rl_callback_handler_install(prompt, on_line);
    installed = 1;
    fflush(stdout);
    return 0;
}

/* rl.read_char() → line | false (end of input) | nil (not finished).
 * Call it when stdin is readable. A finished line leaves the terminal in
 * cooked mode; install() shows the next prompt. */
static int l_read_char(lua_State *L)
{
    check_init(L);
    if (!installed)
        return luaL_error(L, "pgstore.readline: read_char() without install()");
    done_state = 0;
    cur_L = L;
    rl_callback_read_char();
    cur_L = NULL;
    if (done_state == 0) {
        lua_pushnil(L);
        return 1;
    }
    uninstall();
    if (done_state == 2) {
        lua_pushboolean(L, 0);
    } else {
        lua_pushstring(L, done_line);
        free(done_line);
        done_line = NULL;
    }
    done_state = 0;
    return 1;
}

/* rl.print_above(text): prints text (a newline is added when missing)
 * above the prompt and redraws the prompt and the line being typed, cursor
 * where it was. Without an installed prompt it just prints. */
static int l_print_above(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    if (installed)
        erase_line_area();
    fwrite(s, 1, n, stdout);
    if (n == 0 || s[n - 1] != '\n')
        fputc('\n', stdout);
    if (installed)
        rl_forced_update_display(); /* redraws from the cursor's row, and flushes */
    else
        fflush(stdout);
    return 0;
}

/* rl.cancel(): abandons the line being typed (Ctrl-C): shows ^C after it,
 * moves below it and returns the terminal to cooked mode. */
static int l_cancel(lua_State *L)
{
    check_init(L);
    if (installed) {
        layout_t at = measure(0), end = measure(1);
        if (end.row > at.row)
            fprintf(stdout, "\033[%dB", end.row - at.row);
        fputc('\r', stdout);
        if (end.col > 0)
            fprintf(stdout, "\033[%dC", end.col);
        fputs("^C\n", stdout);
        fflush(stdout);
        uninstall();
    }
    return 0;
}

/* rl.finish(): the terminal back in cooked mode (harmless when it is). */
static int l_finish(lua_State *L)
{
    (void)L;
    uninstall();
    fflush(stdout);
    return 0;
}

/* rl.poll(fds, timeout_seconds?) → ready | nil, reason[, signal number]
 * Waits until one of the descriptors is readable; ready[fd] = true for each
 * that is (or has hung up or failed: reading will tell). reason is
 * "interrupt" (SIGINT), "terminate" (SIGTERM/SIGHUP) or "hangup" (the
 * terminal on stdin went away). A timeout returns an empty table. Terminal
 * resizes and the return from a suspension (Ctrl-Z, then fg) are handled
 * here. */
#define MAX_FDS 64
static int l_poll(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout = luaL_optnumber(L, 2, -1);
    struct pollfd pfd[MAX_FDS];
    int n = (int)lua_objlen(L, 1);
    luaL_argcheck(L, n <= MAX_FDS, 1, "too many descriptors");
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 1, i + 1);
        pfd[i].fd = (int)luaL_checkinteger(L, -1);
        pfd[i].events = POLLIN;
        pfd[i].revents = 0;
        lua_pop(L, 1);
    }
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGWINCH);
    /* Blocked between the flag checks and ppoll, which unblocks atomically:
     * a signal cannot slip in between and leave the poll asleep. */
    sigprocmask(SIG_BLOCK, &block, &old);
    struct timespec ts, *tsp = NULL;
    if (timeout >= 0) {
        ts.tv_sec = (time_t)timeout;
        ts.tv_nsec = (long)((timeout - (double)ts.tv_sec) * 1e9);
        tsp = &ts;
    }
    int rc;
    for (;;) {
        if (resized) {
            /* libedit forgets what it drew when its size changes: draw the
             * line again where the terminal (which may have reflowed it to
             * the new width) now shows the prompt. */
            resized = 0;
            if (initialized)
                rl_resize_terminal();
            if (installed) {
                erase_line_area();
                rl_forced_update_display();
            }
        }
        if (continued) {
            /* Back from Ctrl-Z: the shell has had the terminal and set
             * its own modes; libedit may believe it is still in raw mode,
             * so leave it and enter it again, then redraw the line on the
             * fresh row below the shell's output. */
            continued = 0;
            if (installed) {
                rl_deprep_terminal();
                rl_prep_terminal(1);
                rl_forced_update_display();
            }
        }
        if (pending_signal)
            break;
        rc = ppoll(pfd, (nfds_t)n, tsp, &old);
        if (rc >= 0 || errno != EINTR)
            break;
        /* A resize or a signal: the time left is not tracked, so a timed
         * wait may run long by one timeout; callers use timeouts as ticks. */
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    int sig = pending_signal;
    if (sig) {
        pending_signal = 0;
        lua_pushnil(L);
        lua_pushstring(L, sig == SIGINT ? "interrupt" : "terminate");
        lua_pushinteger(L, sig);
        return 3;
    }
    if (rc < 0)
        return luaL_error(L, "poll: %s", strerror(errno));
    lua_createtable(L, 0, rc > 0 ? rc : 0);
    for (int i = 0; i < n; i++) {
        short r = pfd[i].revents;
        if (pfd[i].fd == STDIN_FILENO && (r & (POLLHUP | POLLERR | POLLNVAL))) {
            lua_pushnil(L);
            lua_pushliteral(L, "hangup");
            return 2;
        }
        if (r) {
            lua_pushboolean(L, 1);
            lua_rawseti(L, -2, pfd[i].fd);
        }
    }
    return 1;
}

/* rl.interruptible(on): while on, Ctrl-C interrupts running Lua code.
 * Turning it off returns whether that happened. */
static int l_interruptible(lua_State *L)
{
    int on = lua_toboolean(L, 1);
    evaluating = on;
    if (on) {
        interrupted = 0;
        cancel_sent = 0;
        return 0;
    }
    interrupt_pending = 0;
    if (lua_gethook(L) == stop_hook)
        lua_sethook(L, NULL, 0, 0); /* a Ctrl-C that came too late */
    lua_pushboolean(L, interrupted);
    interrupted = 0;
    return 1;
}

static int l_add_history(lua_State *L)
{
    const char *line = luaL_checkstring(L, 1);
    check_init(L);
    add_history(line);
    return 0;
}

static int l_clear_history(lua_State *L)
{
    check_init(L);
    clear_history();
    return 0;
}

static int l_stifle_history(lua_State *L)
{
    int n = (int)luaL_checkinteger(L, 1);
    check_init(L);
    stifle_history(n);
    return 0;
}

static int mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        int rc = mkdir(path, 0700);
        *p = '/';
        if (rc != 0 && errno != EEXIST)
            return -1;
    }
    return 0;
}

/* rl.write_file(path, data, "a"|"w") → true | nil, message
 * Appends to or replaces a file that only its owner may read (history may
 * hold secrets), creating missing directories (0700). */
static int l_write_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    const char *mode = luaL_optstring(L, 3, "a");
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (mode[0] == 'w' ? O_TRUNC : O_APPEND);
    int fd = open(path, flags, 0600);
    if (fd < 0 && errno == ENOENT) {
        size_t len = strlen(path);
        char *dir = lua_newuserdata(L, len + 1);
        memcpy(dir, path, len + 1);
        if (mkdirs(dir) == 0)
            fd = open(path, flags, 0600);
    }
    if (fd < 0)
        goto fail;
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int e = errno;
            close(fd);
            errno = e;
            goto fail;
        }
        data += w, n -= (size_t)w;
    }
    if (close(fd) != 0)
        goto fail;
    lua_pushboolean(L, 1);
    return 1;
fail:
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
}

static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, STDIN_FILENO)));
    return 1;
}

/* rl.columns() → the terminal's width */
static int l_columns(lua_State *L)
{
    lua_pushinteger(L, term_cols());
    return 1;
}

int luaopen_pgstore_readline(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"init", l_init},
        {"install", l_install},
        {"read_char", l_read_char},
        {"print_above", l_print_above},
        {"cancel", l_cancel},
        {"finish", l_finish},
        {"poll", l_poll},
        {"interruptible", l_interruptible},
        {"add_history", l_add_history},
        {"clear_history", l_clear_history},
        {"stifle_history", l_stifle_history},
        {"write_file", l_write_file},
        {"isatty", l_isatty},
        {"columns", l_columns},
        {NULL, NULL},
    };
    lua_newtable(L);
    luaL_register(L, NULL, fns);
    lua_pushstring(L, rl_library_version ? rl_library_version : "libedit");
    lua_setfield(L, -2, "library");
    return 1;
}
