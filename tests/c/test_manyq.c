/*
 * test_manyq.c - receive, wait and FD watches over more queues than
 * futex_waitv takes (RB_WAIT_MAX = 64): 65 and 5,000 queues.
 *
 *   - non-blocking receive over N finds a record in any of them (the last
 *     one too) and reports its index; oldest first across them;
 *   - a blocking receive over N sleeps on its row's bell (BELL row, list in
 *     cells) and is woken by a send to the last queue, by a fan-out to a
 *     set holding all N, and not by a send to a queue it does not watch;
 *   - rb_wait over N, and an FD watch over N (arm, poke, seq, close);
 *   - repeated names collapse in the row's list;
 *   - the list's cells come back when the receive returns, when a killed
 *     bell waiter is swept, and when a kill lands while the victim holds
 *     the lock (EOWNERDEAD repair); rb_check is clean after each step.
 */
#include <poll.h>
#include <pthread.h>
#include <signal.h>

#include "check.h"
#include "../../_ringbuf/src/internal.h"

#define MS 1000000LL
#define BIG 5000

static rb_seg *S;
static char *NAMES[BIG + 1];
static char *BLOB; /* the names blob of NAMES[0..n) for the n in use */

static size_t blob_for(uint32_t n)
{
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t len = strlen(NAMES[i]);
        BLOB[off] = (char)len;
        BLOB[off + 1] = 0;
        memcpy(BLOB + off + 2, NAMES[i], len);
        off += 2 + len;
    }
    return off;
}

static uint32_t cells_free(void)
{
    rb_info i = ct_info(S);
    return i.cells_free;
}

static uint32_t queue_id(const char *q) { return rb_table_find(S, RB_SLOT_QUEUE, 0, q, strlen(q)); }

struct rx {
    uint32_t n;
    int wait_only;
    int64_t timeout_ns;
    int rc;
    uint32_t index;
    size_t len;
    char buf[64];
    int finished;
};

static void *rx_thread(void *vp)
{
    struct rx *r = vp;
    size_t bl = blob_for(r->n);
    if (r->wait_only)
        r->rc = rb_wait(S, BLOB, bl, r->n, r->timeout_ns, 0);
    else
        r->rc = rb_receive(S, BLOB, bl, r->n, r->buf, sizeof r->buf, &r->len, &r->index,
                           r->timeout_ns, 0);
    __atomic_store_n(&r->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Wait until a receiver is registered on queue q (its row is live). */
static void await_waiter(const char *q)
{
    for (int i = 0; i < 10000; i++) {
        if (ct_qstats(S, q).waiters >= 1)
            return;
        usleep(200);
    }
    ct_fail(__FILE__, __LINE__, "no waiter registered on %s within 2 s", q);
}

static void test_nonblocking(uint32_t n)
{
    size_t bl = blob_for(n);
    char buf[64];
    size_t len;
    uint32_t idx = 99999;
    CHECK_RC(rb_receive(S, BLOB, bl, n, buf, sizeof buf, &len, &idx, 0, 0), RB_E_EMPTY);
    CHECK_OK(ct_send(S, NAMES[n - 1], "last", 4, 0, 0));
    CHECK_OK(rb_receive(S, BLOB, bl, n, buf, sizeof buf, &len, &idx, 0, 0));
    CHECK(idx == n - 1 && len == 4 && memcmp(buf, "last", 4) == 0);
    /* Oldest first across the queues, wherever they sit in the list. */
    CHECK_OK(ct_send(S, NAMES[n / 2], "mid", 3, 0, 0));
    CHECK_OK(ct_send(S, NAMES[0], "first", 5, 0, 0));
    CHECK_OK(rb_receive(S, BLOB, bl, n, buf, sizeof buf, &len, &idx, 0, 0));
    CHECK(idx == n / 2 && len == 3);
    CHECK_OK(rb_receive(S, BLOB, bl, n, buf, sizeof buf, &len, &idx, 0, 0));
    CHECK(idx == 0 && len == 5);
    CHECK_RC(rb_receive(S, BLOB, bl, n, buf, sizeof buf, &len, &idx, 0, 0), RB_E_EMPTY);
    /* A batch takes from several of them in one call. */
    for (uint32_t i = 0; i < 5; i++)
        CHECK_OK(ct_send(S, NAMES[n - 1 - i], "b", 1, 0, 0));
    uint32_t lens[8], idxs[8], got = 0;
    CHECK_OK(rb_receive_batch(S, BLOB, bl, n, buf, sizeof buf, lens, idxs, 8, &got, &len, 0, 0));
    CHECK(got == 5 && idxs[0] == n - 1 && idxs[4] == n - 5);
    printf("  %u queues: non-blocking receive, index %u found, oldest first, batch of 5\n", n,
           n - 1);
}

/* A blocking receive over n queues is woken by `wake` (0: send to the last
 * queue; 1: fan-out to a set of all n; 2: rb_wait woken by a send). */
static void test_blocking(uint32_t n, int how)
{
    uint32_t free0 = cells_free();
    /* No timeout: a receive that is not woken would find the record at its
     * deadline and pass; without one it hangs and the alarm fails the test. */
    struct rx r = {.n = n, .wait_only = how == 2, .timeout_ns = -1};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    await_waiter(NAMES[n - 1]);
    /* Asleep on a BELL row whose list lives in cells. */
    uint32_t qlast = queue_id(NAMES[n - 1]);
    CHECK(S->slots[qlast].fd_watchers == 1);
    uint32_t bells = 0;
    for (uint32_t w = 0; w < S->hdr->waiter_hi; w++)
        if (S->waiters[w].pid && S->waiters[w].kind == RB_WAITER_BELL) {
            bells++;
            CHECK(S->waiters[w].n == n);
        }
    CHECK(bells == 1);
    CHECK(cells_free() == free0 - rb_list_cells_needed(n));
    CHECK_SEG(S);
    /* A send elsewhere does not end the sleep. */
    CHECK_OK(ct_send(S, "not-watched", "x", 1, 0, 0));
    usleep(30000);
    CHECK(!__atomic_load_n(&r.finished, __ATOMIC_ACQUIRE));
    uint32_t sent = 0, skipped = 0;
    if (how == 1) {
        CHECK_OK(rb_fanout_tagged(S, "all", 3, "fan", 3, 0, 0, RB_FANOUT_PLAIN, &sent, &skipped));
        CHECK(sent == n && skipped == 0);
    } else {
        CHECK_OK(ct_send(S, NAMES[n - 1], "wake", 4, 0, 0));
    }
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_OK(r.rc);
    if (how == 0)
        CHECK(r.index == n - 1 && r.len == 4);
    /* Drain in batches: each look walks all n queues (a record at a time,
     * 5,000 x 5,000 lookups, takes ~25 s under TSan). */
    size_t bl = blob_for(n), len;
    uint32_t drained = 0, got, lens[1024], idxs[1024];
    static char buf[1024 * 64];
    while (rb_receive_batch(S, BLOB, bl, n, buf, sizeof buf, lens, idxs, 1024, &got, &len, 0, 0) ==
           RB_OK)
        drained += got;
    CHECK(drained == (how == 1 ? n - 1 : how == 2 ? 1 : 0));
    CHECK(ct_info(S).waiters_used == 0);
    CHECK(S->slots[qlast].waiters == 0 && S->slots[qlast].fd_watchers == 0);
    CHECK(cells_free() == free0 - 1); /* the list came back; the not-watched record holds one */
    char b1[8];
    CHECK_OK(ct_recv1(S, "not-watched", b1, sizeof b1, &len));
    CHECK(cells_free() == free0);
    CHECK_SEG(S);
    printf("  %u queues: blocking %s woken by %s\n", n, how == 2 ? "rb_wait" : "receive",
           how == 1 ? "a fan-out to all of them" : "a send to the last");
}

static void test_repeated_names(void)
{
    /* 100 entries naming 3 queues: the row's list holds 3 ids, inline. */
    char *saved[100];
    memcpy(saved, NAMES, sizeof saved);
    for (int i = 0; i < 100; i++)
        NAMES[i] = saved[i % 3];
    struct rx r = {.n = 100, .timeout_ns = -1}; /* woken, or the alarm fails the test */
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    await_waiter(saved[2]);
    for (uint32_t w = 0; w < S->hdr->waiter_hi; w++)
        if (S->waiters[w].pid)
            CHECK(S->waiters[w].n == 3);
    CHECK(ct_qstats(S, saved[0]).waiters == 1);
    CHECK_SEG(S);
    CHECK_OK(ct_send(S, saved[1], "r", 1, 0, 0));
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_OK(r.rc);
    CHECK(r.index % 3 == 1);
    memcpy(NAMES, saved, sizeof saved);
    CHECK_SEG(S);
    printf("  100 names of 3 queues: one row of 3 ids, woken\n");
}

static void test_watch_many(uint32_t n)
{
    uint32_t free0 = cells_free();
    size_t bl = blob_for(n);
    int fd;
    uint32_t row;
    uint64_t token;
    CHECK_OK(rb_watch_open(S, BLOB, bl, n, &fd, &row, &token));
    CHECK(S->waiters[row].n == n && S->waiters[row].kind == RB_WAITER_FD);
    CHECK(cells_free() == free0 - rb_list_cells_needed(n));
    CHECK_SEG(S);
    uint64_t seq0 = rb_watch_seq(S, row, token);
    CHECK(!(seq0 & RB_SEQ_INVALID_BIT));
    CHECK_RC(rb_watch_arm(S, row, token), 0);
    CHECK_OK(ct_send(S, "not-watched-2", "x", 1, 0, 0));
    struct pollfd p = {fd, POLLIN, 0};
    CHECK(poll(&p, 1, 30) == 0);
    CHECK_OK(ct_send(S, NAMES[n - 1], "w", 1, 0, 0));
    CHECK(poll(&p, 1, 5000) == 1);
    char c;
    CHECK(read(fd, &c, 1) == 1);
    CHECK(rb_watch_seq(S, row, token) == seq0 + 1);
    CHECK_RC(rb_watch_arm(S, row, token), 1); /* a record is there: not armed */
    char buf[16];
    size_t len;
    uint32_t idx;
    CHECK_OK(rb_receive(S, BLOB, bl, n, buf, sizeof buf, &len, &idx, 0, 0));
    CHECK(idx == n - 1);
    CHECK_OK(rb_watch_close(S, row, token));
    CHECK_OK(ct_recv1(S, "not-watched-2", buf, sizeof buf, &len));
    CHECK(cells_free() == free0);
    CHECK_SEG(S);
    printf("  %u queues: FD watch armed, poked by a send to the last, seq moved, closed\n", n);
}

/* A child blocks in a receive over BIG queues and is SIGKILLed asleep: the
 * sweep frees its row and its list cells. */
static void test_dead_bell_waiter(void)
{
    uint32_t free0 = cells_free();
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        size_t bl = blob_for(BIG);
        char buf[16];
        size_t len;
        uint32_t idx;
        rb_receive(S, BLOB, bl, BIG, buf, sizeof buf, &len, &idx, -1, 0);
        _exit(3); /* never: killed asleep */
    }
    await_waiter(NAMES[BIG - 1]);
    CHECK(cells_free() == free0 - rb_list_cells_needed(BIG));
    kill(pid, SIGKILL);
    ct_reap(pid, SIGKILL);
    /* A send to one of its queues rings a dead row's bell: harmless. */
    CHECK_OK(ct_send(S, NAMES[7], "x", 1, 0, 0));
    uint32_t swept = 0;
    CHECK_OK(rb_recover(S, &swept));
    CHECK(swept == 1);
    CHECK(ct_info(S).waiters_used == 0);
    CHECK(ct_qstats(S, NAMES[BIG - 1]).waiters == 0);
    char buf[8];
    size_t len;
    CHECK_OK(ct_recv1(S, NAMES[7], buf, sizeof buf, &len));
    CHECK(cells_free() == free0);
    CHECK_SEG(S);
    printf("  a bell waiter on %u queues killed asleep: swept, its %u list cells freed\n", BIG,
           rb_list_cells_needed(BIG));
}

/* A sender links a record to a watched queue and dies holding the lock
 * before ringing the bell row (rb_watch_collect runs after the link).  The
 * bell sleeper only re-looks when its bell moves, so the repair that the
 * next locker runs must ring it.  The receive waits with no timeout: had the
 * repair not rung, it would sleep on (bounded sleeps, bell unrung) until the
 * binary's alarm fails the test - a finite timeout would hide that, since
 * the look at the deadline finds the record. */
static void test_repair_rings_bells(void)
{
    struct rx r = {.n = 65, .timeout_ns = -1};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    await_waiter(NAMES[64]);
    uint32_t q = queue_id(NAMES[64]);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (rb_lock(S) != RB_OK)
            _exit(4);
        rb_enqueue_locked(S, q, NULL, 0, "orphan", 6, 0, rb_now_ns(), 0);
        _exit(0); /* dies holding the lock, the row never rung */
    }
    ct_reap(pid, 0);
    usleep(250000); /* past one bounded sleep: the sleeper saw an unrung bell */
    CHECK(!__atomic_load_n(&r.finished, __ATOMIC_ACQUIRE));
    uint64_t rep0 = S->hdr->repairs;
    (void)ct_info(S); /* locks: EOWNERDEAD, repair */
    CHECK(S->hdr->repairs == rep0 + 1);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK_OK(r.rc);
    CHECK(r.index == 64 && r.len == 6 && memcmp(r.buf, "orphan", 6) == 0);
    CHECK_SEG(S);
    printf("  a sender died holding the lock before ringing: the repair rang the bell\n");
}

/* Victims loop on blocking receives and FD watches over 200 and BIG queues
 * (short timeouts, so they register and unregister all the time) while a
 * sender feeds some of the queues; each is SIGKILLed at a random moment,
 * often inside the lock (registering: writing its list cells).  After each
 * kill the survivor's next call repairs if needed and rb_check is clean;
 * at the end no cell is lost. */
static void victim(uint32_t n, int watch)
{
    size_t bl = blob_for(n);
    char buf[64];
    size_t len;
    uint32_t idx;
    for (;;) {
        if (watch) {
            int fd;
            uint32_t row;
            uint64_t token;
            if (rb_watch_open(S, BLOB, bl, n, &fd, &row, &token) == RB_OK) {
                rb_watch_arm(S, row, token);
                rb_watch_close(S, row, token);
            }
        } else {
            rb_receive(S, BLOB, bl, n, buf, sizeof buf, &len, &idx, 2 * MS, 0);
        }
    }
}

static void test_kill_loop(void)
{
    /* Drain everything first so the final accounting is exact. */
    uint32_t free0 = cells_free();
    uint64_t r0 = ct_info(S).repairs, rng = 7;
#ifdef __SANITIZE_THREAD__
    const int kills = 10; /* TSan runs every access ~10x slower: stay well inside the limit */
#else
    const int kills = 40;
#endif
    for (int k = 0; k < kills; k++) {
        uint32_t n = k % 2 ? BIG : 200;
        int watch = (k / 2) % 2;
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0)
            victim(n, watch);
        for (int i = 0; i < 3; i++)
            CHECK_OK(ct_send(S, NAMES[ct_rand(&rng) % n], "k", 1, 0, 0));
        usleep((useconds_t)(3000 + ct_rand(&rng) % 20000));
        kill(pid, SIGKILL);
        int st;
        CHECK(waitpid(pid, &st, 0) == pid);
        CHECK_SEG(S); /* repairs first if the victim died holding the lock */
    }
    uint32_t swept = 0;
    CHECK_OK(rb_recover(S, &swept));
    size_t bl = blob_for(BIG), len;
    char buf[64];
    uint32_t idx;
    while (rb_receive(S, BLOB, bl, BIG, buf, sizeof buf, &len, &idx, 0, 0) == RB_OK) {
    }
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
    CHECK(cells_free() == free0);
    printf("  kill loop: %d victims on 200/%u queues (receive, watch), %llu kills inside the "
           "lock, %u rows swept, every list cell back\n",
           kills, BIG, (unsigned long long)(ct_info(S).repairs - r0), swept);
}

int main(void)
{
    ct_init("manyq");
    rb_options o = {.size = 32 << 20, .slots = 16384, .waiters = 32, .max_record = 4096};
    S = ct_open(&o);
    BLOB = malloc((size_t)BIG * 16);
    CHECK(BLOB != NULL);
    for (uint32_t i = 0; i < BIG; i++) {
        NAMES[i] = malloc(16);
        CHECK(NAMES[i] != NULL);
        snprintf(NAMES[i], 16, "mq-%u", i);
    }
    for (uint32_t i = 0; i < BIG; i++)
        CHECK_OK(rb_set_add_member(S, "all", 3, NAMES[i], strlen(NAMES[i]), strlen(NAMES[i]), 0, 0));
    const uint32_t ns[] = {64, 65, 500, BIG};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        test_nonblocking(ns[i]);
    CHECK_SEG(S);
    test_blocking(65, 0);
    test_blocking(BIG, 0);
    test_blocking(BIG, 2);
    /* The fan-out is to all BIG members: the n = 65 receiver is woken too
     * and the other queues' copies are drained by the receive over BIG. */
    test_blocking(BIG, 1);
    test_repeated_names();
    test_watch_many(65);
    test_watch_many(BIG);
    test_dead_bell_waiter();
    test_repair_rings_bells();
    test_kill_loop();
    for (uint32_t i = 0; i < BIG; i++)
        free(NAMES[i]);
    free(BLOB);
    rb_close(S);
    ct_done("test_manyq");
    return 0;
}
