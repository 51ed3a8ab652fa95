/*
 * test_fuzz_threads.c - threaded fuzz in the style of rigtorp's and ck's
 * ring tests: P producer threads and C consumer threads on a few queues,
 * random record sizes (1 cell to many), every record stamped with
 * (producer, global seq, per-queue seq, length, payload checksum).
 *
 * Checked: every record is received exactly once (no loss, no duplicate),
 * its payload is intact, it came out of the queue it was sent to, records of
 * one producer on one queue come out in send order (strictly increasing per
 * consumer; consecutive when one consumer owns the queue), the byte and
 * checksum totals match, and the segment is consistent and every cell free
 * once drained.  Capacity is unlimited, except in the capacity race at the
 * end, which checks that concurrent senders never overshoot it.
 *
 * The last producer sends with rb_send_batch (1..8 records to one queue per
 * call) and the last consumer takes with rb_receive_batch (random max and
 * buffer size), so the batch paths meet the single ones on the same queues.
 *
 * Rounds:
 *   mpmc      - every consumer watches every queue, non-blocking receive
 *   owned     - consumer i owns queue i: strict FIFO per producer
 *   blocking  - consumers block in rb_receive (timeouts, futex wake paths)
 *               while producers pause now and then so consumers sleep
 *   capacity  - senders race for the last places of a bounded queue
 */
#include <pthread.h>
#include <sched.h>

#include "check.h"

#define P 4
#define C 3
#define Q 3
#define MAXLEN 20000
_Static_assert(C == Q, "the owned round gives each consumer one queue");

static rb_seg *S;
static const char *QNAMES[Q] = {"fz-a", "fz-b", "fz-c"};

typedef struct hdr {
    uint32_t producer;
    uint32_t queue;
    uint32_t gseq; /* per producer, over all queues */
    uint32_t qseq; /* per producer and queue */
    uint32_t len;  /* payload bytes after this header */
    uint32_t pad;
    uint64_t sum;  /* ct_sum of the payload */
} hdr;

struct round {
    const char *name;
    uint32_t per_producer;
    int owned;    /* consumer i reads only queue i */
    int blocking; /* consumers block; producers pause */
    int slow;     /* consumers pause now and then: producers fill the segment */
    /* shared results */
    unsigned char *seen; /* [P][per_producer] receive counts */
    uint64_t sent_bytes, recv_bytes, sent_sum, recv_sum;
    uint64_t received;
    uint64_t nomem_retries;
    uint64_t empty_waits;
    uint64_t slept; /* receives that returned a record only after > 200 us */
    int producers_done;
};

struct worker {
    struct round *r;
    int id;
};

static uint64_t payload_len(uint64_t *rng)
{
    uint64_t x = ct_rand(rng) % 100;
    if (x < 70)
        return ct_rand(rng) % 225; /* one cell */
    if (x < 95)
        return 225 + ct_rand(rng) % 3000; /* a few cells */
    return 3225 + ct_rand(rng) % (MAXLEN - 3225);
}

#define BATCH 8 /* the last producer sends up to BATCH records per rb_send_batch */
#define RBATCH 16 /* the last consumer takes up to RBATCH per rb_receive_batch */

/* Build one stamped record at p; returns its size. */
static size_t make_record(char *p, uint32_t producer, uint32_t q, uint32_t g, uint32_t qseq,
                          uint64_t *rng, uint64_t *bytes, uint64_t *sum)
{
    hdr h = {.producer = producer, .queue = q, .gseq = g, .qseq = qseq};
    h.len = (uint32_t)payload_len(rng);
    char *pl = p + sizeof h;
    for (uint32_t i = 0; i < h.len; i += 8) {
        uint64_t v = ct_rand(rng);
        memcpy(pl + i, &v, h.len - i < 8 ? h.len - i : 8);
    }
    h.sum = ct_sum(pl, h.len);
    memcpy(p, &h, sizeof h);
    *bytes += h.len;
    *sum += h.sum;
    return sizeof h + h.len;
}

static void *producer(void *vp)
{
    struct worker *w = vp;
    struct round *r = w->r;
    uint64_t rng = 0x1234567ULL * (uint64_t)(w->id + 1) ^ (uint64_t)r->per_producer;
    int batching = w->id == P - 1;
    char *buf = malloc(BATCH * (sizeof(hdr) + MAXLEN));
    CHECK(buf);
    uint32_t qseq[Q] = {0}, lens[BATCH];
    uint64_t bytes = 0, sum = 0;
    for (uint32_t g = 0; g < r->per_producer;) {
        uint32_t q = (uint32_t)(ct_rand(&rng) % Q);
        uint32_t k = batching ? 1 + (uint32_t)(ct_rand(&rng) % BATCH) : 1;
        if (k > r->per_producer - g)
            k = r->per_producer - g;
        size_t off = 0;
        for (uint32_t i = 0; i < k; i++) {
            lens[i] = (uint32_t)make_record(buf + off, (uint32_t)w->id, q, g + i, qseq[q]++, &rng,
                                            &bytes, &sum);
            off += lens[i];
        }
        /* Consumers lag behind: the segment's memory is the only limit, so
         * a refusal is RB_E_NOMEM and the rest is sent again. */
        uint32_t done = 0;
        off = 0;
        while (done < k) {
            int rc;
            uint32_t sent = 0;
            if (batching) {
                rc = rb_send_batch(S, QNAMES[q], strlen(QNAMES[q]), buf + off, lens + done,
                                   k - done, 0, 0, &sent);
            } else {
                rc = ct_send(S, QNAMES[q], buf, lens[0], 0, 0);
                sent = rc == RB_OK;
            }
            for (uint32_t i = 0; i < sent; i++)
                off += lens[done + i];
            done += sent;
            if (rc == RB_OK)
                continue;
            CHECK_RC(rc, RB_E_NOMEM);
            __atomic_fetch_add(&r->nomem_retries, 1, __ATOMIC_RELAXED);
            sched_yield();
        }
        g += k;
        if (r->blocking && ct_rand(&rng) % 64 == 0)
            usleep(500 + ct_rand(&rng) % 1500); /* let the consumers fall asleep */
    }
    free(buf);
    __atomic_fetch_add(&r->sent_bytes, bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->sent_sum, sum, __ATOMIC_RELAXED);
    return NULL;
}

struct cstate {
    struct round *r;
    const char **names;
    uint32_t n;
    int64_t last[P][Q];
    uint64_t bytes, sum, count;
};

/* Check one received record (rec, len) that came out of names[idx]. */
static void check_record(struct cstate *c, const char *rec, size_t len, uint32_t idx)
{
    struct round *r = c->r;
    hdr h;
    CHECK(len >= sizeof h);
    memcpy(&h, rec, sizeof h);
    CHECKF(h.producer < P && h.queue < Q && h.gseq < r->per_producer, "bad header p%u q%u g%u",
           h.producer, h.queue, h.gseq);
    CHECKF(len == sizeof h + h.len, "length %zu, header says %u", len, h.len);
    CHECKF(ct_sum(rec + sizeof h, h.len) == h.sum, "payload of p%u g%u corrupt", h.producer, h.gseq);
    CHECKF(idx < c->n && strcmp(c->names[idx], QNAMES[h.queue]) == 0,
           "record for %s came out of %s", QNAMES[h.queue], idx < c->n ? c->names[idx] : "?");
    int64_t *l = &c->last[h.producer][h.queue];
    if (r->owned)
        CHECKF((int64_t)h.qseq == *l + 1, "p%u on %s: qseq %u after %lld (FIFO broken)",
               h.producer, QNAMES[h.queue], h.qseq, (long long)*l);
    else
        CHECKF((int64_t)h.qseq > *l, "p%u on %s: qseq %u after %lld (FIFO broken)", h.producer,
               QNAMES[h.queue], h.qseq, (long long)*l);
    *l = h.qseq;
    unsigned char prev = __atomic_fetch_add(
        &r->seen[(size_t)h.producer * r->per_producer + h.gseq], 1, __ATOMIC_RELAXED);
    CHECKF(prev == 0, "p%u g%u received twice", h.producer, h.gseq);
    c->bytes += h.len;
    c->sum += h.sum;
    c->count++;
}

static void *consumer(void *vp)
{
    struct worker *w = vp;
    struct round *r = w->r;
    /* Each consumer has its own handle: futexes and records work across
     * mappings of the same segment. */
    rb_seg *s = NULL;
    rb_options o = {0};
    CHECK_OK(rb_open(ct_prefix, &o, &s));
    const char *names[Q];
    struct cstate c = {.r = r, .names = names};
    for (uint32_t q = 0; q < Q; q++)
        if (!r->owned || q == (uint32_t)w->id)
            names[c.n++] = QNAMES[q];
    for (int p = 0; p < P; p++)
        for (int q = 0; q < Q; q++)
            c.last[p][q] = -1;
    char blob[128];
    size_t bl = ct_blob(blob, sizeof blob, names, c.n);
    int batching = w->id == C - 1;
    size_t cap = (batching ? RBATCH : 1) * (sizeof(hdr) + MAXLEN);
    char *buf = malloc(cap);
    CHECK(buf);
    uint32_t lens[RBATCH], idxs[RBATCH];
    uint64_t empties = 0, slept = 0;
    uint64_t rng = 0xABCDEFULL + (uint64_t)w->id;
    int64_t timeout = r->blocking ? 20000000 : 0;
    for (;;) {
        int done = __atomic_load_n(&r->producers_done, __ATOMIC_ACQUIRE);
        if (r->slow && ct_rand(&rng) % 512 == 0)
            usleep(2000);
        uint64_t t0 = rb_now_ns();
        size_t len = 0;
        uint32_t idx = 99, got = 0;
        int rc;
        if (batching) {
            /* A random max and buffer size: batches end on either limit. */
            uint32_t max = 1 + (uint32_t)(ct_rand(&rng) % RBATCH);
            size_t bcap = (sizeof(hdr) + MAXLEN) + (size_t)(ct_rand(&rng) % (cap - sizeof(hdr) - MAXLEN));
            rc = rb_receive_batch(s, blob, bl, c.n, buf, bcap, lens, idxs, max, &got, &len, timeout,
                                  0);
            if (rc == RB_OK)
                CHECK(got >= 1 && got <= max);
        } else {
            rc = rb_receive(s, blob, bl, c.n, buf, cap, &len, &idx, timeout, 0);
            got = rc == RB_OK;
            lens[0] = (uint32_t)len;
            idxs[0] = idx;
        }
        if (rc == RB_OK && rb_now_ns() - t0 > 200000)
            slept++;
        if (rc == RB_E_EMPTY) {
            /* Empty after every producer finished: nothing more can come. */
            if (done)
                break;
            empties++;
            if (!r->blocking)
                sched_yield();
            continue;
        }
        CHECK_OK(rc);
        size_t off = 0;
        for (uint32_t i = 0; i < got; i++) {
            check_record(&c, buf + off, lens[i], idxs[i]);
            off += lens[i];
        }
    }
    free(buf);
    __atomic_fetch_add(&r->recv_bytes, c.bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->recv_sum, c.sum, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->received, c.count, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->empty_waits, empties, __ATOMIC_RELAXED);
    __atomic_fetch_add(&r->slept, slept, __ATOMIC_RELAXED);
    rb_close(s);
    return NULL;
}

static void run_round(struct round *r)
{
    uint64_t t0 = rb_now_ns();
    rb_info before = ct_info(S);
    r->seen = calloc((size_t)P * r->per_producer, 1);
    CHECK(r->seen);
    pthread_t pt[P], cthr[C];
    struct worker pw[P], cw[C];
    for (int i = 0; i < C; i++) {
        cw[i] = (struct worker){r, i};
        CHECK(pthread_create(&cthr[i], NULL, consumer, &cw[i]) == 0);
    }
    for (int i = 0; i < P; i++) {
        pw[i] = (struct worker){r, i};
        CHECK(pthread_create(&pt[i], NULL, producer, &pw[i]) == 0);
    }
    for (int i = 0; i < P; i++)
        pthread_join(pt[i], NULL);
    __atomic_store_n(&r->producers_done, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < C; i++)
        pthread_join(cthr[i], NULL);

    uint64_t total = (uint64_t)P * r->per_producer;
    CHECKF(r->received == total, "%s: received %llu of %llu", r->name,
           (unsigned long long)r->received, (unsigned long long)total);
    for (uint64_t i = 0; i < total; i++)
        CHECKF(r->seen[i] == 1, "%s: p%llu g%llu received %u times", r->name,
               (unsigned long long)(i / r->per_producer), (unsigned long long)(i % r->per_producer),
               r->seen[i]);
    CHECK(r->sent_bytes == r->recv_bytes && r->sent_sum == r->recv_sum);
    rb_info in = ct_info(S);
    CHECK(in.sent - before.sent == total && in.received - before.received == total);
    CHECKF(in.cells_free == in.cells_total, "%s: %u of %u cells free after the drain", r->name,
           in.cells_free, in.cells_total);
    CHECK(in.waiters_used == 0);
    for (int q = 0; q < Q; q++)
        CHECK(ct_qstats(S, QNAMES[q]).pending == 0);
    CHECK_SEG(S);
    printf("  %-8s %u records, %.1f MB, %llu NOMEM retries, %llu empty, %llu woken after sleeping,"
           " %.0f ms\n",
           r->name, (unsigned)total, r->sent_bytes / 1e6, (unsigned long long)r->nomem_retries,
           (unsigned long long)r->empty_waits, (unsigned long long)r->slept,
           (rb_now_ns() - t0) / 1e6);
    free(r->seen);
}

/* ---- capacity race ------------------------------------------------------ */

#define CAP 100
struct cap_arg {
    int ok, full;
    int stop;         /* atomic */
    int senders_done; /* atomic */
    uint32_t max_pending;
};
static struct cap_arg CA;

static void *cap_sender(void *vp)
{
    (void)vp;
    int ok = 0, full = 0;
    for (int i = 0; i < 2000; i++) {
        int rc = ct_send(S, "fz-cap", "c", 1, 0, CAP);
        if (rc == RB_OK)
            ok++;
        else {
            CHECK_RC(rc, RB_E_FULL);
            full++;
        }
    }
    __atomic_fetch_add(&CA.ok, ok, __ATOMIC_RELAXED);
    __atomic_fetch_add(&CA.full, full, __ATOMIC_RELAXED);
    return NULL;
}

static void *cap_monitor(void *vp)
{
    (void)vp;
    while (!__atomic_load_n(&CA.stop, __ATOMIC_ACQUIRE)) {
        uint32_t p = (uint32_t)ct_qstats(S, "fz-cap").pending;
        CHECKF(p <= CAP, "queue holds %u records, capacity %u", p, CAP);
        if (p > CA.max_pending)
            CA.max_pending = p;
    }
    return NULL;
}

static void *cap_receiver(void *vp)
{
    int *got = vp;
    char buf[8];
    size_t n;
    while (!__atomic_load_n(&CA.senders_done, __ATOMIC_ACQUIRE)) {
        if (ct_recv1(S, "fz-cap", buf, sizeof buf, &n) == RB_OK)
            ++*got;
        else
            sched_yield();
    }
    return NULL;
}

static void test_capacity_race(void)
{
    pthread_t t[4], mon, rx;
    /* No consumer: exactly CAP of 8000 concurrent sends get in. */
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, cap_sender, NULL) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECKF(CA.ok == CAP && CA.full == 8000 - CAP, "%d accepted, %d refused", CA.ok, CA.full);
    rb_queue_stats st = ct_qstats(S, "fz-cap");
    CHECK(st.pending == CAP && st.full == 8000 - CAP && st.sent == CAP);

    /* With a consumer racing the senders, the queue never exceeds CAP and
     * every accepted record is received. */
    CA.ok = CA.full = 0;
    int got = 0;
    CHECK(pthread_create(&mon, NULL, cap_monitor, NULL) == 0);
    CHECK(pthread_create(&rx, NULL, cap_receiver, &got) == 0);
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, cap_sender, NULL) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    __atomic_store_n(&CA.senders_done, 1, __ATOMIC_RELEASE);
    pthread_join(rx, NULL);
    __atomic_store_n(&CA.stop, 1, __ATOMIC_RELEASE);
    pthread_join(mon, NULL);
    uint32_t left = (uint32_t)ct_qstats(S, "fz-cap").pending;
    CHECKF((uint32_t)CA.ok + CAP == (uint32_t)got + left, "accepted %d + %d before, received %d, left %u",
           CA.ok, CAP, got, left);
    char buf[8];
    size_t n;
    while (ct_recv1(S, "fz-cap", buf, sizeof buf, &n) == RB_OK)
        ;
    printf("  capacity %d: 4 racing senders, %d accepted while a consumer ran, peak %u pending\n",
           CAP, CA.ok, CA.max_pending);
    CHECK_SEG(S);
}

int main(void)
{
    ct_init("fuzz_threads");
    /* 4 MiB (~16k cells): small enough that lagging consumers make the
     * producers meet RB_E_NOMEM (and retry) in the "owned" round. */
    rb_options o = {.size = 4 << 20, .slots = 256, .waiters = 16, .max_record = 65536};
    S = ct_open(&o);
    uint32_t k = ct_scale();
    struct round mpmc = {.name = "mpmc", .per_producer = 40000 * k};
    struct round owned = {.name = "owned", .per_producer = 20000 * k, .owned = 1, .slow = 1};
    struct round blocking = {.name = "blocking", .per_producer = 10000 * k, .blocking = 1};
    run_round(&mpmc);
    run_round(&owned);
    run_round(&blocking);
    test_capacity_race();
    rb_close(S);
    ct_done("test_fuzz_threads");
    return 0;
}
