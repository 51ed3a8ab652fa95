/*
 * test_wait.c - blocking receive and rb_wait: timeouts are honoured (also
 * past RB_MAX_SLEEP_NS, which re-sleeps), a receiver asleep on several
 * queues (futex_waitv) is woken by a send to any of them, wake-ups are not
 * lost when several receivers sleep on one queue, a waiter on other queues
 * is left asleep, rb_wait does not consume, a signal interrupts a wait with
 * RB_E_INTR, and a waiter whose waker died (record linked, no wake) still
 * returns within the RB_MAX_SLEEP_NS bound.
 */
#include <pthread.h>

#include "check.h"
#include "../../_ringbuf/src/internal.h"

#define MS 1000000LL

static rb_seg *S;

struct rx {
    const char *names[RB_WAIT_MAX];
    uint32_t n;
    int64_t timeout_ns;
    uint32_t spin_us;
    int wait_only; /* rb_wait instead of rb_receive */
    /* results */
    int rc;
    uint32_t index;
    size_t len;
    char buf[64];
    uint64_t t_start, t_done;
    int finished; /* atomic: set last */
};

static void *rx_thread(void *vp)
{
    struct rx *r = vp;
    char blob[RB_WAIT_MAX * 16];
    size_t bl = ct_blob(blob, sizeof blob, r->names, r->n);
    r->t_start = rb_now_ns();
    if (r->wait_only)
        r->rc = rb_wait(S, blob, bl, r->n, r->timeout_ns, r->spin_us);
    else
        r->rc = rb_receive(S, blob, bl, r->n, r->buf, sizeof r->buf, &r->len, &r->index,
                           r->timeout_ns, r->spin_us);
    r->t_done = rb_now_ns();
    __atomic_store_n(&r->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* Wait until `want` receivers sleep on queue q (registered waiter rows). */
static void await_waiters(const char *q, uint32_t want)
{
    for (int i = 0; i < 5000; i++) {
        if (ct_qstats(S, q).waiters >= want)
            return;
        usleep(200);
    }
    ct_fail(__FILE__, __LINE__, "no %u waiter(s) registered on %s within 1 s", want, q);
}

static void test_timeouts(void)
{
    char blob[64], buf[8];
    const char *names[1] = {"t-empty"};
    size_t bl = ct_blob(blob, sizeof blob, names, 1), n;
    const int64_t timeouts[] = {0, 30 * MS, 100 * MS, 450 * MS};
    for (size_t i = 0; i < sizeof timeouts / sizeof timeouts[0]; i++) {
        uint64_t t0 = rb_now_ns();
        CHECK_RC(rb_receive(S, blob, bl, 1, buf, sizeof buf, &n, NULL, timeouts[i], 0), RB_E_EMPTY);
        int64_t took = (int64_t)(rb_now_ns() - t0);
        CHECKF(took >= timeouts[i] && took < timeouts[i] + 150 * MS,
               "timeout %lld ms took %lld ms", (long long)(timeouts[i] / MS), (long long)(took / MS));
        printf("  receive timeout %3lld ms -> RB_E_EMPTY after %.1f ms\n",
               (long long)(timeouts[i] / MS), took / 1e6);
    }
    /* With a spin budget longer than the timeout, the timeout still wins. */
    uint64_t t0 = rb_now_ns();
    CHECK_RC(rb_receive(S, blob, bl, 1, buf, sizeof buf, &n, NULL, 20 * MS, 100000), RB_E_EMPTY);
    int64_t took = (int64_t)(rb_now_ns() - t0);
    CHECKF(took >= 20 * MS && took < 150 * MS, "spin: took %lld ms", (long long)(took / MS));
    t0 = rb_now_ns();
    CHECK_RC(rb_wait(S, blob, bl, 1, 50 * MS, 0), RB_E_EMPTY);
    took = (int64_t)(rb_now_ns() - t0);
    CHECKF(took >= 50 * MS && took < 200 * MS, "rb_wait took %lld ms", (long long)(took / MS));
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
}

/* A receiver asleep on three queues is woken by a send to the second. */
static void test_waitv_wake(uint32_t spin_us, const char *label)
{
    uint64_t worst = 0, sum = 0;
    const int rounds = 20;
    for (int i = 0; i < rounds; i++) {
        struct rx r = {.names = {"v-a", "v-b", "v-c"}, .n = 3, .timeout_ns = 5000 * MS,
                       .spin_us = spin_us};
        pthread_t t;
        CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
        await_waiters("v-b", 1); /* registered: past any spin, about to sleep */
        uint64_t t_send = rb_now_ns();
        CHECK_OK(ct_send(S, "v-b", "ping", 4, 0, 0));
        pthread_join(t, NULL);
        CHECK_OK(r.rc);
        CHECK(r.index == 1 && r.len == 4 && memcmp(r.buf, "ping", 4) == 0);
        uint64_t lat = r.t_done - t_send;
        CHECKF(lat < 100 * MS, "woken %.1f ms after the send (round %d)", lat / 1e6, i);
        worst = lat > worst ? lat : worst;
        sum += lat;
    }
    printf("  futex_waitv wake (%s): mean %.1f us, worst %.1f us over %d rounds\n", label,
           sum / 1e3 / rounds, worst / 1e3, rounds);

    /* The 64th (last) queue of a maximal watch list. */
    struct rx r = {.n = RB_WAIT_MAX, .timeout_ns = 5000 * MS};
    static char names[RB_WAIT_MAX][16];
    for (uint32_t i = 0; i < RB_WAIT_MAX; i++) {
        snprintf(names[i], sizeof names[i], "v-many-%u", i);
        r.names[i] = names[i];
    }
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    await_waiters(names[RB_WAIT_MAX - 1], 1);
    uint64_t t_send = rb_now_ns();
    CHECK_OK(ct_send(S, names[RB_WAIT_MAX - 1], "last", 4, 0, 0));
    pthread_join(t, NULL);
    CHECK_OK(r.rc);
    CHECK(r.index == RB_WAIT_MAX - 1);
    CHECKF(r.t_done - t_send < 100 * MS, "64-queue wake took %.1f ms", (r.t_done - t_send) / 1e6);
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
}

/* Several receivers asleep on one queue: each send wakes one, none is lost;
 * a receiver watching another queue stays asleep. */
static void test_many_waiters(void)
{
    enum { N = 4 };
    struct rx r[N];
    struct rx other = {.names = {"m-other"}, .n = 1, .timeout_ns = 400 * MS};
    pthread_t t[N], to;
    for (int i = 0; i < N; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].names[0] = "m-q";
        r[i].n = 1;
        r[i].timeout_ns = 5000 * MS;
        CHECK(pthread_create(&t[i], NULL, rx_thread, &r[i]) == 0);
    }
    CHECK(pthread_create(&to, NULL, rx_thread, &other) == 0);
    await_waiters("m-q", N);
    await_waiters("m-other", 1);
    uint64_t t_send = rb_now_ns();
    for (int i = 0; i < N; i++) {
        char msg[2] = {'r', (char)('0' + i)};
        CHECK_OK(ct_send(S, "m-q", msg, 2, 0, 0));
    }
    int seen[N] = {0};
    uint64_t worst = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        CHECK_OK(r[i].rc);
        CHECK(r[i].len == 2 && r[i].buf[0] == 'r');
        int k = r[i].buf[1] - '0';
        CHECK(k >= 0 && k < N && !seen[k]);
        seen[k] = 1;
        uint64_t lat = r[i].t_done > t_send ? r[i].t_done - t_send : 0;
        worst = lat > worst ? lat : worst;
    }
    CHECKF(worst < 100 * MS, "slowest of %d receivers woke %.1f ms after the sends", N, worst / 1e6);
    pthread_join(to, NULL);
    CHECK_RC(other.rc, RB_E_EMPTY); /* nothing arrived on its queue */
    CHECK(other.t_done - other.t_start >= 400 * MS);
    printf("  %d receivers on one queue: all woken, slowest %.1f us\n", N, worst / 1e3);
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
}

static void test_rb_wait(void)
{
    char blob[64], buf[8];
    const char *names[2] = {"w-x", "w-q"};
    size_t bl = ct_blob(blob, sizeof blob, names, 2), n;
    /* Something is there: rb_wait returns at once and leaves it. */
    CHECK_OK(ct_send(S, "w-q", "k", 1, 0, 0));
    CHECK_OK(rb_wait(S, blob, bl, 2, 1000 * MS, 0));
    CHECK_OK(rb_wait(S, blob, bl, 2, 0, 0));
    CHECK(ct_qstats(S, "w-q").pending == 1);
    CHECK_OK(ct_recv1(S, "w-q", buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'k');

    /* Nothing there: it sleeps until a send, and still leaves the record. */
    struct rx r = {.names = {"w-x", "w-q"}, .n = 2, .timeout_ns = 5000 * MS, .wait_only = 1};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    await_waiters("w-x", 1);
    uint64_t t_send = rb_now_ns();
    CHECK_OK(ct_send(S, "w-x", "z", 1, 0, 0));
    pthread_join(t, NULL);
    CHECK_OK(r.rc);
    CHECK(r.t_done - t_send < 100 * MS);
    CHECK(ct_qstats(S, "w-x").pending == 1);
    CHECK_OK(ct_recv1(S, "w-x", buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'z');
    /* Expired records do not count as something to wait for. */
    CHECK_OK(ct_send(S, "w-q", "old", 3, rb_now_ns() - 1, 0));
    CHECK_RC(rb_wait(S, blob, bl, 2, 20 * MS, 0), RB_E_EMPTY);
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
}

static void on_usr1(int sig) { (void)sig; }

static void test_interrupt(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1; /* no SA_RESTART: the futex wait returns EINTR */
    sigaction(SIGUSR1, &sa, NULL);
    struct rx r = {.names = {"i-a", "i-b"}, .n = 2, .timeout_ns = 5000 * MS};
    struct rx r1 = {.names = {"i-c"}, .n = 1, .timeout_ns = 5000 * MS};
    pthread_t t, t1;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    CHECK(pthread_create(&t1, NULL, rx_thread, &r1) == 0);
    await_waiters("i-a", 1);
    await_waiters("i-c", 1);
    /* A signal that lands between registering and the futex call is
     * absorbed by the handler without EINTR; keep signalling until both
     * calls returned (a real caller would just call again). */
    for (int i = 0; i < 100; i++) {
        int a = __atomic_load_n(&r.finished, __ATOMIC_ACQUIRE);
        int b = __atomic_load_n(&r1.finished, __ATOMIC_ACQUIRE);
        if (a && b)
            break;
        if (!a)
            pthread_kill(t, SIGUSR1);
        if (!b)
            pthread_kill(t1, SIGUSR1);
        usleep(10000);
    }
    pthread_join(t, NULL);
    pthread_join(t1, NULL);
    CHECK_RC(r.rc, RB_E_INTR);  /* futex_waitv path */
    CHECK_RC(r1.rc, RB_E_INTR); /* single-queue FUTEX_WAIT_BITSET path */
    CHECK(r.t_done - r.t_start < 1000 * MS);
    CHECK(ct_info(S).waiters_used == 0); /* the row was given back */
    CHECK_SEG(S);
    signal(SIGUSR1, SIG_DFL);
}

/* The waker died between its commit and its wake: the record is linked and
 * the sequence word bumped, but nobody calls FUTEX_WAKE.  The sleeper must
 * find it by itself, within the RB_MAX_SLEEP_NS bound. */
static void test_lost_wake(void)
{
    struct rx r = {.names = {"l-q"}, .n = 1, .timeout_ns = 5000 * MS};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    await_waiters("l-q", 1);
    uint64_t t_send = rb_now_ns();
    CHECK_OK(rb_lock(S));
    uint32_t q = rb_table_find(S, RB_SLOT_QUEUE, 0, "l-q", 3);
    CHECK(q != RB_NIL);
    CHECK_OK(rb_enqueue_locked(S, q, NULL, 0, "late", 4, 0, rb_now_ns(), 0));
    rb_unlock(S); /* ... and no rb_futex_wake() */
    pthread_join(t, NULL);
    CHECK_OK(r.rc);
    CHECK(r.len == 4 && memcmp(r.buf, "late", 4) == 0);
    uint64_t lat = r.t_done - t_send;
    CHECKF(lat <= RB_MAX_SLEEP_NS + 150 * MS, "recovered after %.1f ms", lat / 1e6);
    printf("  lost wake: the sleeper found the record after %.1f ms (bound %llu ms)\n", lat / 1e6,
           RB_MAX_SLEEP_NS / 1000000ULL);
    CHECK_SEG(S);
}

/* An infinite timeout (negative) still returns when a record arrives. */
static void test_infinite(void)
{
    struct rx r = {.names = {"inf"}, .n = 1, .timeout_ns = -1};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    await_waiters("inf", 1);
    CHECK_OK(ct_send(S, "inf", "x", 1, 0, 0));
    pthread_join(t, NULL);
    CHECK_OK(r.rc);
    CHECK(r.len == 1);
}

/* A sleeper's queue survives what retires other rows: rb_flush (which
 * keeps queues somebody sleeps on) and the table GC (which frees only empty
 * queues nobody waits on).  If either freed it, the next send would create
 * a new slot with another futex word and the sleeper would only notice at
 * its RB_MAX_SLEEP_NS bound: the < 100 ms wake tells them apart. */
static void test_sleeper_survives(void)
{
    struct rx r = {.names = {"s-q", "s-dup", "s-q"}, .n = 3, .timeout_ns = 5000 * MS};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, rx_thread, &r) == 0);
    await_waiters("s-q", 2); /* listed twice: counted twice */
    CHECK_OK(rb_flush(S));
    CHECK(ct_qstats(S, "s-q").waiters == 2);
    /* Fill and empty the table so the GC runs several times. */
    uint32_t slots = ct_info(S).slots_total;
    char name[32], buf[8];
    size_t n;
    for (uint32_t i = 0; i < 3 * slots; i++) {
        snprintf(name, sizeof name, "s-fill-%u", i);
        CHECK_OK(ct_send(S, name, "f", 1, 0, 0));
        CHECK_OK(ct_recv1(S, name, buf, sizeof buf, &n));
    }
    CHECK(ct_qstats(S, "s-q").waiters == 2);
    uint64_t t_send = rb_now_ns();
    CHECK_OK(ct_send(S, "s-q", "alive", 5, 0, 0));
    pthread_join(t, NULL);
    CHECK_OK(r.rc);
    CHECK(r.len == 5 && r.index == 0);
    CHECKF(r.t_done - t_send < 100 * MS, "woken %.1f ms after the send", (r.t_done - t_send) / 1e6);
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
}

/* Every waiter row taken by a live process: a blocking receive says so
 * (RB_E_WAITERS) instead of sleeping unregistered. */
static void test_waiters_full(void)
{
    uint32_t total = ct_info(S).waiters_total;
    CHECK_OK(ct_send(S, "f-q", "x", 1, 0, 0));
    char buf[8];
    size_t n;
    CHECK_OK(ct_recv1(S, "f-q", buf, sizeof buf, &n));
    CHECK_OK(rb_lock(S));
    uint32_t q = rb_table_find(S, RB_SLOT_QUEUE, 0, "f-q", 3);
    CHECK(q != RB_NIL);
    for (uint32_t w = 0; w < total; w++) {
        rb_waiter *wt = &S->waiters[w];
        CHECK(wt->pid == 0);
        wt->n = 1;
        wt->slot[0] = q;
        wt->start_time = rb_self_start_time();
        wt->token = ++S->hdr->waiter_token;
        if (w >= S->hdr->waiter_hi)
            S->hdr->waiter_hi = w + 1; /* as rb_waiter_register keeps it */
        wt->pid = rb_self_pid(); /* alive: the sweep must keep it */
        S->hdr->waiters_used++;
        S->slots[q].waiters++;
    }
    rb_unlock(S);
    CHECK_SEG(S);
    char blob[16];
    const char *names[1] = {"f-q"};
    size_t bl = ct_blob(blob, sizeof blob, names, 1);
    CHECK_RC(rb_receive(S, blob, bl, 1, buf, sizeof buf, &n, NULL, 50 * MS, 0), RB_E_WAITERS);
    CHECK(strstr(rb_last_error(), "waiter") != NULL);
    /* A record that is there is still received: no row needed. */
    CHECK_OK(ct_send(S, "f-q", "y", 1, 0, 0));
    CHECK_OK(rb_receive(S, blob, bl, 1, buf, sizeof buf, &n, NULL, 50 * MS, 0));
    uint32_t swept = 9;
    CHECK_OK(rb_recover(S, &swept));
    CHECK(swept == 0);
    CHECK_OK(rb_lock(S));
    for (uint32_t w = 0; w < total; w++)
        S->waiters[w].pid = 0;
    S->hdr->waiters_used = 0;
    S->slots[q].waiters = 0;
    rb_unlock(S);
    CHECK_SEG(S);
}

int main(void)
{
    ct_init("wait");
    rb_options o = {.size = 8 << 20, .slots = 512, .waiters = 16, .max_record = 4096};
    S = ct_open(&o);
    test_timeouts();
    test_waitv_wake(0, "no spin");
    test_waitv_wake(200, "200 us spin");
    test_many_waiters();
    test_rb_wait();
    test_interrupt();
    test_lost_wake();
    test_infinite();
    test_sleeper_survives();
    test_waiters_full();
    CHECK(ct_info(S).waiters_used == 0);
    CHECK_SEG(S);
    rb_close(S);
    ct_done("test_wait");
    return 0;
}
