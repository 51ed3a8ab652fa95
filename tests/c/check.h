/*
 * check.h - the tiny harness shared by the C unit tests of _ringbuf.
 *
 * Every test binary calls ct_init("<name>") first.  That picks a segment
 * prefix of its own ("ctest_<name>_<pid>"), arms a per-test timeout
 * (SIGALRM) and makes sure the segment is unlinked however the test ends:
 * normally (ct_done), on a failed CHECK (exit(1) runs the atexit hook), on
 * a sanitizer report (death callback), or on the timeout (the handler
 * unlinks with async-signal-safe calls only).
 * Forked children never unlink: only the process that called ct_init does.
 *
 * A failed CHECK prints file:line, the expression, the RB_* codes when it
 * compared one, and rb_last_error() of the calling thread, then exits 1.
 */
#ifndef CT_CHECK_H
#define CT_CHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ringbuf.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#include <sanitizer/common_interface_defs.h>
#define CT_HAVE_SANITIZER 1
#endif

#ifndef CT_TIMEOUT_S
#define CT_TIMEOUT_S 60 /* per test binary; make test runs them one by one */
#endif

static char ct_prefix[128];
static char ct_path[192]; /* /dev/shm/rbuf.<prefix>, for the signal handler */
static pid_t ct_owner;

static inline void ct_cleanup(void)
{
    if (ct_owner == getpid() && ct_prefix[0])
        unlink(ct_path); /* like rb_unlink(prefix, 1), but safe anywhere */
}

static inline void ct_on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "TIMEOUT: test binary exceeded its time limit\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    ct_cleanup();
    _exit(2);
}

static inline __attribute__((noreturn, format(printf, 3, 4))) void
ct_fail(const char *file, int line, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s:%d: CHECK failed: %s\n    rb_last_error(): %s\n    (pid %d, prefix %s)\n",
            file, line, buf, rb_last_error(), (int)getpid(), ct_prefix);
    fflush(stderr);
    exit(1); /* the atexit hook unlinks the segment in the owning process */
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ct_fail(__FILE__, __LINE__, "%s", #cond);                                              \
    } while (0)

/* Like CHECK, with a printf-style explanation. */
static inline __attribute__((noreturn, format(printf, 4, 5))) void
ct_failf(const char *file, int line, const char *cond, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ct_fail(file, line, "%s: %s", cond, msg);
}

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ct_failf(__FILE__, __LINE__, #cond, __VA_ARGS__);                                      \
    } while (0)

/* Compare an RB_* return code. */
#define CHECK_RC(expr, want)                                                                       \
    do {                                                                                           \
        int ct_got_ = (expr);                                                                      \
        int ct_want_ = (want);                                                                     \
        if (ct_got_ != ct_want_)                                                                   \
            ct_fail(__FILE__, __LINE__, "%s returned %d, expected %d (%s)", #expr, ct_got_,        \
                    ct_want_, #want);                                                              \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, RB_OK)

/* rb_check must pass; on failure print its report. */
#define CHECK_SEG(seg)                                                                             \
    do {                                                                                           \
        char ct_rep_[512];                                                                         \
        int ct_r_ = rb_check((seg), ct_rep_, sizeof ct_rep_);                                      \
        if (ct_r_ != RB_OK)                                                                        \
            ct_fail(__FILE__, __LINE__, "rb_check returned %d: %s", ct_r_, ct_rep_);               \
    } while (0)

/* CT_SCALE=<n> in the environment multiplies the fuzz tests' workloads (and
 * the time limit) for soak runs: CT_SCALE=20 make -C _ringbuf test. */
static inline uint32_t ct_scale(void)
{
    const char *e = getenv("CT_SCALE");
    long v = e ? strtol(e, NULL, 10) : 1;
    return v < 1 ? 1 : v > 10000 ? 10000 : (uint32_t)v;
}

/* Pick the prefix, remove a stale segment of the same name, arm cleanup. */
static inline void ct_init(const char *name)
{
    ct_owner = getpid();
    snprintf(ct_prefix, sizeof ct_prefix, "ctest_%s_%d", name, (int)ct_owner);
    snprintf(ct_path, sizeof ct_path, "/dev/shm/rbuf.%s", ct_prefix);
    unlink(ct_path);
    atexit(ct_cleanup);
#ifdef CT_HAVE_SANITIZER
    /* A sanitizer report ends the process without atexit handlers. */
    __sanitizer_set_death_callback(ct_cleanup);
#endif
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ct_on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    alarm(CT_TIMEOUT_S * ct_scale());
    setvbuf(stdout, NULL, _IOLBF, 0);
}

/* Unlink the segment and report success. */
static inline void ct_done(const char *name)
{
    int r = rb_unlink(ct_prefix, 1);
    if (r != RB_OK && r != RB_E_NOTFOUND)
        ct_fail(__FILE__, __LINE__, "rb_unlink(%s) returned %d", ct_prefix, r);
    if (access(ct_path, F_OK) == 0)
        ct_fail(__FILE__, __LINE__, "%s still exists after rb_unlink", ct_path);
    printf("%s: all checks passed\n", name);
}

/* Open (creating) the test's segment with the given options. */
static inline rb_seg *ct_open(rb_options *o)
{
    rb_options d = {0};
    if (!o)
        o = &d;
    o->create = 1;
    rb_seg *s = NULL;
    int r = rb_open(ct_prefix, o, &s);
    if (r != RB_OK || !s)
        ct_fail(__FILE__, __LINE__, "rb_open(%s) returned %d", ct_prefix, r);
    return s;
}

/* Build a receive/wait names blob (u16 little-endian length + bytes each). */
static inline size_t ct_blob(char *buf, size_t cap, const char *const *names, uint32_t n)
{
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(names[i]);
        if (off + 2 + len > cap)
            ct_fail(__FILE__, __LINE__, "names blob buffer too small");
        buf[off] = (char)(len & 0xFF);
        buf[off + 1] = (char)(len >> 8);
        memcpy(buf + off + 2, names[i], len);
        off += 2 + len;
    }
    return off;
}

/* Send a NUL-terminated queue name / payload (tests' shorthand). */
static inline int ct_send(rb_seg *s, const char *q, const void *data, size_t len, uint64_t deadline,
                          uint32_t capacity)
{
    return rb_send(s, q, strlen(q), (const char *)data, len, deadline, capacity);
}

/* Non-blocking receive from one queue. */
static inline int ct_recv1(rb_seg *s, const char *q, void *buf, size_t cap, size_t *out_len)
{
    char blob[RB_NAME_MAX + 2];
    const char *names[1] = {q};
    size_t bl = ct_blob(blob, sizeof blob, names, 1);
    uint32_t idx = 99;
    return rb_receive(s, blob, bl, 1, (char *)buf, cap, out_len, &idx, 0, 0);
}

static inline rb_info ct_info(rb_seg *s)
{
    rb_info i;
    int r = rb_info_get(s, &i);
    if (r != RB_OK)
        ct_fail(__FILE__, __LINE__, "rb_info_get returned %d", r);
    return i;
}

static inline rb_queue_stats ct_qstats(rb_seg *s, const char *q)
{
    rb_queue_stats st;
    int r = rb_queue_stats_get(s, q, strlen(q), &st);
    if (r != RB_OK)
        ct_fail(__FILE__, __LINE__, "rb_queue_stats_get(%s) returned %d", q, r);
    return st;
}

/* Wait for a forked child; it must exit 0 (or die of `want_sig` if nonzero). */
static inline void ct_reap(pid_t pid, int want_sig)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            ct_fail(__FILE__, __LINE__, "waitpid(%d): %s", (int)pid, strerror(errno));
    }
    if (want_sig) {
        if (!WIFSIGNALED(st) || WTERMSIG(st) != want_sig)
            ct_fail(__FILE__, __LINE__, "child %d: status 0x%x, expected death by signal %d",
                    (int)pid, st, want_sig);
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        ct_fail(__FILE__, __LINE__, "child %d failed: status 0x%x", (int)pid, st);
    }
}

static inline uint64_t ct_ms(uint64_t ns) { return ns / 1000000ULL; }

/* A small, fast, reproducible PRNG (xorshift64*), one state per thread. */
static inline uint64_t ct_rand(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *st = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* FNV-1a over a payload, for integrity checks. */
static inline uint64_t ct_sum(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ULL;
    }
    return h;
}

#endif
