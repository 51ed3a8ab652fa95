/*
 * test_watch.c - FD watches: open makes the FIFO and a waiter row of kind
 * FD; arm reports records already queued; a send pokes an armed watch once
 * (no poke without arm, one poke per arm, also from rb_send_batch and
 * fan-out); several watches on one queue are all poked; close unregisters
 * and unlinks; a watcher killed with SIGKILL is swept (rb_recover) and its
 * FIFO unlinked; watchers SIGKILLed at random points leave no row and no
 * FIFO after one rb_recover; rb_unlink removes the FIFOs; futex receivers
 * keep working next to FD rows; the invariants (rb_check) hold throughout;
 * a FIFO at a watch's path that is not the watcher's (another user's, or
 * too open) gets no poke.
 */
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>

#include "check.h"
#include "../../_ringbuf/src/internal.h"

static rb_seg *S;

static int readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int n = poll(&p, 1, timeout_ms);
    CHECK(n >= 0);
    return n == 1 && (p.revents & POLLIN);
}

static int drain(int fd)
{
    char buf[64];
    int total = 0;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        total += (int)n;
    CHECK(n < 0 && errno == EAGAIN); /* never EOF: the keep-alive write end */
    return total;
}

static void drain_quiet(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

static int fifo_exists(uint32_t pid, uint64_t token)
{
    char path[512];
    rb_watch_path(S, pid, token, path, sizeof path);
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    CHECK(S_ISFIFO(st.st_mode));
    CHECK((st.st_mode & 0777) == 0600);
    return 1;
}

static void open_watch(const char *const *names, uint32_t n, int *fd, uint32_t *row,
                       uint64_t *token)
{
    char blob[1024];
    size_t bl = ct_blob(blob, sizeof blob, names, n);
    CHECK_OK(rb_watch_open(S, blob, bl, n, fd, row, token));
}

static void test_arm_poke_close(void)
{
    const char *names[2] = {"wa", "wb"};
    int fd;
    uint32_t row;
    uint64_t token;
    open_watch(names, 2, &fd, &row, &token);
    CHECK(fifo_exists((uint32_t)getpid(), token));
    CHECK(ct_qstats(S, "wa").waiters == 1 && ct_qstats(S, "wb").waiters == 1);
    CHECK(S->slots[rb_table_find(S, RB_SLOT_QUEUE, 0, "wa", 2)].fd_watchers == 1);
    CHECK_SEG(S);

    /* No poke without arm. */
    CHECK_OK(ct_send(S, "wb", "x", 1, 0, 0));
    CHECK(!readable(fd, 20));
    /* Arm with a record queued: 1, not armed (still no poke). */
    CHECK_RC(rb_watch_arm(S, row, token), 1);
    CHECK_OK(ct_send(S, "wb", "y", 1, 0, 0));
    CHECK(!readable(fd, 20));
    char buf[16];
    size_t len;
    CHECK_OK(ct_recv1(S, "wb", buf, sizeof buf, &len));
    CHECK_OK(ct_recv1(S, "wb", buf, sizeof buf, &len));
    /* Empty: armed; the next send pokes once, the second does not. */
    CHECK_RC(rb_watch_arm(S, row, token), 0);
    CHECK_OK(ct_send(S, "wa", "z", 1, 0, 0));
    CHECK(readable(fd, 1000));
    CHECK_OK(ct_send(S, "wa", "z", 1, 0, 0));
    CHECK(drain(fd) == 1);
    CHECK(!readable(fd, 20));
    CHECK_RC(rb_watch_arm(S, row, token), 1);
    CHECK_OK(ct_recv1(S, "wa", buf, sizeof buf, &len));
    CHECK_OK(ct_recv1(S, "wa", buf, sizeof buf, &len));

    /* Expired records do not count as ready. */
    CHECK_OK(ct_send(S, "wa", "old", 3, rb_now_ns() + 1000, 0));
    usleep(2000);
    CHECK_RC(rb_watch_arm(S, row, token), 0);

    /* rb_send_batch pokes. */
    const char data[] = "abc";
    uint32_t lens[3] = {1, 1, 1}, sent = 0;
    CHECK_OK(rb_send_batch(S, "wb", 2, data, lens, 3, 0, 0, &sent));
    CHECK(sent == 3 && readable(fd, 1000) && drain(fd) == 1);
    for (int i = 0; i < 3; i++)
        CHECK_OK(ct_recv1(S, "wb", buf, sizeof buf, &len));

    /* Fan-out pokes (one poke for two routed members sharing the queue). */
    CHECK_OK(rb_set_add_member(S, "g", 1, "wa!1", 4, 2, 0, 0));
    CHECK_OK(rb_set_add_member(S, "g", 1, "wa!2", 4, 2, 0, 0));
    CHECK_OK(rb_set_add_member(S, "g", 1, "wb", 2, 2, 0, 0));
    CHECK_RC(rb_watch_arm(S, row, token), 0);
    uint32_t skipped = 0;
    CHECK_OK(rb_fanout_tagged(S, "g", 1, "m", 1, 0, 0, RB_FANOUT_PLAIN, &sent, &skipped));
    CHECK(sent == 3 && skipped == 0);
    CHECK(readable(fd, 1000) && drain(fd) == 1); /* three copies, one arm: one poke */
    CHECK_OK(ct_recv1(S, "wb", buf, sizeof buf, &len));
    CHECK_OK(ct_recv1(S, "wa", buf, sizeof buf, &len));
    CHECK_OK(ct_recv1(S, "wa", buf, sizeof buf, &len));
    CHECK_SEG(S);

    CHECK_OK(rb_watch_close(S, row, token));
    CHECK(!fifo_exists((uint32_t)getpid(), token));
    CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);
    CHECK(ct_qstats(S, "wa").waiters == 0 && ct_qstats(S, "wb").waiters == 0);
    CHECK_RC(rb_watch_arm(S, row, token), RB_E_INVAL);
    CHECK_RC(rb_watch_close(S, row, token), RB_E_INVAL);
    CHECK_SEG(S);
}

static void test_two_watches(void)
{
    const char *names[1] = {"two"};
    int fd1, fd2;
    uint32_t r1, r2;
    uint64_t t1, t2;
    open_watch(names, 1, &fd1, &r1, &t1);
    open_watch(names, 1, &fd2, &r2, &t2);
    CHECK(r1 != r2 && t1 != t2);
    CHECK_RC(rb_watch_arm(S, r1, t1), 0);
    CHECK_RC(rb_watch_arm(S, r2, t2), 0);
    CHECK_OK(ct_send(S, "two", "x", 1, 0, 0));
    CHECK(readable(fd1, 1000) && readable(fd2, 1000));
    CHECK(drain(fd1) == 1 && drain(fd2) == 1);
    /* A futex receiver next to FD rows still gets its record. */
    char buf[16];
    size_t len;
    CHECK_OK(ct_recv1(S, "two", buf, sizeof buf, &len));

    /* Fan-out with members of two queues interleaved ("two!a" routed to
     * "two", "oth",
     * "two!b", ...): each queue's rows are collected once, so each watch of
     * either queue gets exactly one poke, and every copy is there. */
    const char *other[1] = {"oth"};
    int fd3;
    uint32_t r3;
    uint64_t t3;
    open_watch(other, 1, &fd3, &r3, &t3);
    CHECK_OK(rb_set_add_member(S, "mix", 3, "two!a", 5, 3, 0, 0));
    CHECK_OK(rb_set_add_member(S, "mix", 3, "oth", 3, 3, 0, 0));
    CHECK_OK(rb_set_add_member(S, "mix", 3, "two!b", 5, 3, 0, 0));
    CHECK_OK(rb_set_add_member(S, "mix", 3, "two!c", 5, 3, 0, 0));
    CHECK_RC(rb_watch_arm(S, r1, t1), 0);
    CHECK_RC(rb_watch_arm(S, r2, t2), 0);
    CHECK_RC(rb_watch_arm(S, r3, t3), 0);
    uint32_t sent = 0, skipped = 0;
    CHECK_OK(rb_fanout_tagged(S, "mix", 3, "m", 1, 0, 0, 1, &sent, &skipped));
    CHECK(sent == 4 && skipped == 0);
    CHECK(readable(fd1, 1000) && readable(fd2, 1000) && readable(fd3, 1000));
    CHECK(drain(fd1) == 1 && drain(fd2) == 1 && drain(fd3) == 1);
    CHECK(ct_qstats(S, "two").pending == 3 && ct_qstats(S, "oth").pending == 1);
    /* Disarmed by the fan-out: a second one pokes nobody. */
    CHECK_OK(rb_fanout_tagged(S, "mix", 3, "n", 1, 0, 0, 1, &sent, &skipped));
    CHECK(!readable(fd1, 20) && !readable(fd2, 0) && !readable(fd3, 0));
    CHECK_OK(rb_flush(S));
    CHECK_OK(rb_watch_close(S, r3, t3));

    CHECK_OK(rb_watch_close(S, r1, t1));
    CHECK_OK(rb_watch_close(S, r2, t2));
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
}

/* A poke to a watch whose reader vanished without closing is harmless. */
static void test_stale_path(void)
{
    rb_pokes p;
    rb_pokes_init(&p);
    memset(&p.v[0], 0, sizeof p.v[0]); /* an FD entry (bell = 0) */
    p.v[0].pid = 1;
    p.v[0].token = 999999;
    p.n = 1;
    rb_watch_poke_all(S, &p); /* ENOENT: ignored */
    CHECK(p.n == 0);
}

static void test_dead_watcher_swept(void)
{
    int pipefd[2];
    CHECK(pipe(pipefd) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        const char *names[1] = {"dead"};
        int fd;
        uint32_t row;
        uint64_t token;
        open_watch(names, 1, &fd, &row, &token);
        CHECK_RC(rb_watch_arm(S, row, token), 0);
        ssize_t w = write(pipefd[1], &token, sizeof token);
        (void)w;
        for (;;)
            pause(); /* killed below, never closes the watch */
    }
    close(pipefd[1]);
    uint64_t token = 0;
    CHECK(read(pipefd[0], &token, sizeof token) == (ssize_t)sizeof token);
    close(pipefd[0]);
    CHECK(fifo_exists((uint32_t)pid, token));
    CHECK(ct_qstats(S, "dead").waiters == 1);
    kill(pid, SIGKILL);
    ct_reap(pid, SIGKILL);
    /* A send to the dead watcher's queue: the poke finds no reader (ENXIO). */
    CHECK_OK(ct_send(S, "dead", "x", 1, 0, 0));
    uint32_t swept = 0;
    CHECK_OK(rb_recover(S, &swept));
    CHECK(swept == 1);
    CHECK(!fifo_exists((uint32_t)pid, token));
    CHECK(ct_qstats(S, "dead").waiters == 0);
    CHECK(S->slots[rb_table_find(S, RB_SLOT_QUEUE, 0, "dead", 4)].fd_watchers == 0);
    char buf[16];
    size_t len;
    CHECK_OK(ct_recv1(S, "dead", buf, sizeof buf, &len));
    CHECK_SEG(S);
}

/* The repair (EOWNERDEAD path) recounts fd_watchers and unlinks dead rows' FIFOs. */
static void test_repair_recounts(void)
{
    const char *names[1] = {"rep"};
    int fd;
    uint32_t row;
    uint64_t token;
    open_watch(names, 1, &fd, &row, &token);
    /* A second, dead row forged in the table: a pid that cannot exist. */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(0);
    ct_reap(pid, 0);
    uint32_t ids[1] = {rb_table_find(S, RB_SLOT_QUEUE, 0, "rep", 3)};
    CHECK_OK(rb_lock(S));
    uint32_t drow;
    uint64_t dtok;
    CHECK_OK(rb_waiter_register(S, ids, 1, RB_WAITER_FD, 0, &drow, &dtok));
    S->waiters[drow].pid = (uint32_t)pid; /* now dead */
    char path[512];
    rb_watch_path(S, (uint32_t)pid, dtok, path, sizeof path);
    CHECK(mkfifo(path, 0600) == 0);
    S->slots[ids[0]].fd_watchers = 7; /* derived: the repair must fix it */
    rb_repair(S);
    rb_unlock(S);
    CHECK(access(path, F_OK) != 0);
    CHECK(S->slots[ids[0]].fd_watchers == 1);
    CHECK(ct_qstats(S, "rep").waiters == 1);
    CHECK_SEG(S);
    CHECK_OK(rb_watch_close(S, row, token));
    CHECK_SEG(S);
}

/* FIFOs of this test's prefix now in /dev/shm. */
static int count_fifos(void)
{
    char want[300];
    snprintf(want, sizeof want, "rbuf.%s~w~", ct_prefix);
    DIR *d = opendir("/dev/shm");
    CHECK(d != NULL);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, want, strlen(want)) == 0;
    closedir(d);
    return n;
}

/* Watchers SIGKILLed at random points (inside open, arm, close, or holding
 * the lock) while a sender pokes: afterwards one rb_recover leaves no row,
 * no FIFO, and every invariant holds. */
static void test_kill_loop(void)
{
    uint64_t seed = 0x5eedu ^ (uint64_t)getpid();
    uint32_t kills = 40 * ct_scale();
    const char *names[2] = {"kq", "kq2"};
    char blob[64];
    size_t bl = ct_blob(blob, sizeof blob, names, 2);
    for (uint32_t k = 0; k < kills; k++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a parent that timed out */
            for (;;) {
                int fd;
                uint32_t row;
                uint64_t token;
                if (rb_watch_open(S, blob, bl, 2, &fd, &row, &token) != RB_OK)
                    continue; /* the table may be full of rows of killed siblings */
                for (int i = 0; i < 20; i++)
                    if (rb_watch_arm(S, row, token) == 0)
                        drain_quiet(fd);
                rb_watch_close(S, row, token);
            }
        }
        uint64_t until = rb_now_ns() + (ct_rand(&seed) % 3000) * 1000ULL;
        while (rb_now_ns() < until) {
            ct_send(S, "kq", "x", 1, 0, 0);
            char buf[16];
            size_t len;
            ct_recv1(S, "kq", buf, sizeof buf, &len);
        }
        kill(pid, SIGKILL);
        ct_reap(pid, SIGKILL);
    }
    uint32_t swept = 0;
    CHECK_OK(rb_recover(S, &swept));
    CHECK_SEG(S);
    CHECKF(ct_info(S).waiters_used == 0, "%u rows left", ct_info(S).waiters_used);
    CHECKF(count_fifos() == 0, "%d FIFOs left after %u kills (%u rows swept)", count_fifos(), kills,
           swept);
    printf("  kill loop: %u watchers killed, %u rows swept, no FIFO left\n", kills, swept);
}

/* rb_unlink removes the prefix's FIFOs with the segment. */
static void test_unlink_removes_fifos(void)
{
    char prefix[160];
    snprintf(prefix, sizeof prefix, "%sU", ct_prefix);
    rb_options o = {.size = 8 << 20, .slots = 64, .waiters = 4, .max_record = 4096, .create = 1};
    rb_seg *t = NULL;
    CHECK_OK(rb_open(prefix, &o, &t));
    const char *names[1] = {"u"};
    char blob[64];
    size_t bl = ct_blob(blob, sizeof blob, names, 1);
    int fd;
    uint32_t row;
    uint64_t token;
    CHECK_OK(rb_watch_open(t, blob, bl, 1, &fd, &row, &token));
    char path[512];
    rb_watch_path(t, (uint32_t)getpid(), token, path, sizeof path);
    CHECK(access(path, F_OK) == 0);
    CHECK_OK(rb_unlink(prefix, 1));
    CHECK(access(path, F_OK) != 0);
    CHECK_OK(rb_watch_close(t, row, token)); /* still fine: ENOENT on unlink ignored */
    rb_close(t);
}

/* How many of this process's descriptors are open on `path` (via /proc/self/fd);
 * `not_in` (bitmap of fd numbers < 1024, or NULL): report in *other one that is not in it. */
static int fds_on_except(const char *path, const unsigned char *not_in, int *other)
{
    DIR *d = opendir("/proc/self/fd");
    CHECK(d != NULL);
    struct dirent *e;
    int n = 0;
    char link[600], target[600];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = 0;
        int num = atoi(e->d_name);
        if (strncmp(target, path, strlen(path)) != 0)
            continue;
        n++;
        if (not_in && other && num < 1024 && !(not_in[num / 8] & (1u << (num % 8))))
            *other = num;
    }
    closedir(d);
    return n;
}

static int fds_on(const char *path) { return fds_on_except(path, NULL, NULL); }

/* Mark the descriptors open on `path` in `bits` (fd numbers < 1024). */
static void mark_fds_on(const char *path, unsigned char *bits)
{
    for (int num = 0; num < 1024; num++) {
        char link[64], target[600];
        snprintf(link, sizeof link, "/proc/self/fd/%d", num);
        ssize_t len = readlink(link, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = 0;
        if (strcmp(target, path) == 0)
            bits[num / 8] |= (unsigned char)(1u << (num % 8));
    }
}

/* Senders keep FIFO write ends open (poke.c): reused, dropped when the
 * reader is gone (EPIPE without dying of SIGPIPE, whatever its disposition),
 * never written through a number that now names another file, closed in a
 * forked child. */
static void test_poke_cache(void)
{
    const char *names[1] = {"pc"};
    int fd;
    uint32_t row;
    uint64_t token;
    open_watch(names, 1, &fd, &row, &token);
    char path[512];
    rb_watch_path(S, (uint32_t)getpid(), token, path, sizeof path);
    char buf[16];
    size_t len;
    /* Owner: read end + keep-alive write end.  The first poke adds one cached
     * end; later pokes reuse it. */
    CHECK(fds_on(path) == 2);
    unsigned char owners[128] = {0};
    mark_fds_on(path, owners);
    int cache_end = -1;
    for (int i = 0; i < 5; i++) {
        CHECK_RC(rb_watch_arm(S, row, token), 0);
        CHECK_OK(ct_send(S, "pc", "x", 1, 0, 0));
        CHECK(readable(fd, 1000) && drain(fd) == 1);
        CHECK_OK(ct_recv1(S, "pc", buf, sizeof buf, &len));
        CHECK(fds_on_except(path, owners, &cache_end) == 3);
    }
    int cached = rb_poke_cached();
    CHECK(cached >= 1);

    /* The cached end's number closed behind the cache's back and reused for
     * a regular file: the poke must not write into that file. */
    CHECK(cache_end >= 0);
    int victim = cache_end;
    char tmp[] = "/tmp/rb_poke_victim_XXXXXX";
    int file = mkstemp(tmp);
    CHECK(file >= 0);
    CHECK(dup2(file, victim) == victim);
    close(file);
    CHECK_RC(rb_watch_arm(S, row, token), 0);
    CHECK_OK(ct_send(S, "pc", "y", 1, 0, 0));
    CHECK(readable(fd, 1000) && drain(fd) == 1);
    CHECK_OK(ct_recv1(S, "pc", buf, sizeof buf, &len));
    struct stat st;
    CHECK(stat(tmp, &st) == 0 && st.st_size == 0); /* nothing written into the file */
    close(victim);
    unlink(tmp);

    /* A forked child starts with an empty cache and none of the ends. */
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        int ok = rb_poke_cached() == 0 && fds_on(path) == 2; /* only the owner's inherited pair */
        _exit(ok ? 0 : 1);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The reader goes away (watch closed): the next poke through the cached
     * end gets EPIPE, drops it, and the process survives SIGPIPE, both with
     * the default disposition (blocked and consumed) and ignored. */
    for (int ignore = 0; ignore < 2; ignore++) {
        signal(SIGPIPE, ignore ? SIG_IGN : SIG_DFL);
        int wfd;
        uint32_t wrow;
        uint64_t wtoken;
        const char *q[1] = {ignore ? "pc-ign" : "pc-dfl"};
        open_watch(q, 1, &wfd, &wrow, &wtoken);
        char wpath[512];
        rb_watch_path(S, (uint32_t)getpid(), wtoken, wpath, sizeof wpath);
        CHECK_RC(rb_watch_arm(S, wrow, wtoken), 0);
        CHECK_OK(ct_send(S, q[0], "z", 1, 0, 0));
        CHECK(readable(wfd, 1000) && drain(wfd) == 1);
        CHECK(fds_on(wpath) == 3); /* read end, keep-alive end, cached end */
        CHECK_OK(rb_watch_close(S, wrow, wtoken));
        CHECK(fds_on(wpath) == 1); /* only the cached end: the pipe has no reader */
        rb_pokes p;
        rb_pokes_init(&p);
        memset(&p.v[0], 0, sizeof p.v[0]); /* an FD entry (bell = 0) */
        p.v[0].pid = (uint32_t)getpid();
        p.v[0].token = wtoken;
        p.n = 1;
        rb_watch_poke_all(S, &p); /* EPIPE: dropped, no SIGPIPE death */
        CHECK(fds_on(wpath) == 0);
        sigset_t pending;
        sigpending(&pending);
        CHECK(!sigismember(&pending, SIGPIPE)); /* the one it caused was consumed */
        CHECK_OK(rb_flush(S));
    }
    signal(SIGPIPE, SIG_DFL);
    CHECK_OK(rb_watch_close(S, row, token));
    CHECK_OK(rb_flush(S));
    CHECK_SEG(S);
}

/* rb_watch_seq: lock-free, changes with every send to a watched queue (and
 * with nothing else), refuses a closed watch and another process's. */
static void test_watch_seq(void)
{
    const char *names[2] = {"sq1", "sq2"};
    int fd;
    uint32_t row;
    uint64_t token;
    open_watch(names, 2, &fd, &row, &token);
    uint64_t a = rb_watch_seq(S, row, token);
    CHECK(a != RB_SEQ_INVALID);
    CHECK(rb_watch_seq(S, row, token) == a); /* nothing sent: stable */
    CHECK_OK(ct_send(S, "sq2", "x", 1, 0, 0));
    uint64_t b = rb_watch_seq(S, row, token);
    CHECK(b != a && b != RB_SEQ_INVALID);
    CHECK_OK(ct_send(S, "other", "x", 1, 0, 0)); /* not watched: no change */
    CHECK(rb_watch_seq(S, row, token) == b);
    char buf[16];
    size_t len;
    CHECK_OK(ct_recv1(S, "sq2", buf, sizeof buf, &len)); /* receiving does not change it */
    CHECK(rb_watch_seq(S, row, token) == b);
    CHECK_OK(ct_send(S, "sq1", "y", 1, 0, 0));
    CHECK(rb_watch_seq(S, row, token) != b);
    CHECK(rb_watch_seq(S, row, token + 1) == RB_SEQ_INVALID);
    CHECK(rb_watch_seq(S, S->hdr->waiter_count, token) == RB_SEQ_INVALID);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0)
        _exit(rb_watch_seq(S, row, token) == RB_SEQ_INVALID ? 0 : 1);
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_OK(rb_watch_close(S, row, token));
    CHECK(rb_watch_seq(S, row, token) == RB_SEQ_INVALID);
    CHECK_OK(rb_flush(S));
    CHECK_SEG(S);
}

/* Another user's FIFO (or one of ours with a mode wider than the segment
 * allows) put at a watch's path - where the real FIFO was removed - is
 * never written: senders check owner and mode on the descriptor they open,
 * as rb_open does for the segment.  Needs root for chown. */
static void test_foreign_fifo_not_poked(void)
{
    if (geteuid() != 0) {
        printf("  foreign FIFO: skipped (needs root to chown)\n");
        return;
    }
    const char *names[1] = {"ff"};
    for (int variant = 0; variant < 2; variant++) {
        int fd;
        uint32_t row;
        uint64_t token;
        open_watch(names, 1, &fd, &row, &token);
        char path[RB_NAME_MAX + 96];
        rb_watch_path(S, (uint32_t)getpid(), token, path, sizeof path);
        CHECK(unlink(path) == 0);
        mode_t old = umask(0);
        CHECK(mkfifo(path, variant == 0 ? 0600 : 0666) == 0);
        umask(old);
        if (variant == 0)
            CHECK(chown(path, 65534, 65534) == 0); /* nobody's FIFO */
        int planted = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        CHECK(planted >= 0);
        CHECK_RC(rb_watch_arm(S, row, token), 0);
        CHECK_OK(ct_send(S, "ff", "secret", 6, 0, 0));
        CHECK(!readable(planted, 50)); /* no byte for the planted FIFO */
        CHECK(!readable(fd, 0));       /* (nor for the unlinked real one: it has no path) */
        char buf[16];
        size_t len;
        CHECK_OK(ct_recv1(S, "ff", buf, sizeof buf, &len));
        close(planted);
        CHECK(unlink(path) == 0);
        CHECK_OK(rb_watch_close(S, row, token));
    }
    CHECK_SEG(S);
}

int main(void)
{
    ct_init("watch");
    rb_options o = {.size = 8 << 20, .slots = 512, .waiters = 16, .max_record = 4096};
    S = ct_open(&o);
    test_arm_poke_close();
    test_two_watches();
    test_stale_path();
    test_dead_watcher_swept();
    test_repair_recounts();
    test_kill_loop();
    test_unlink_removes_fifos();
    test_poke_cache();
    test_watch_seq();
    test_foreign_fifo_not_poked();
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
    rb_close(S);
    ct_done("test_watch");
    return 0;
}
