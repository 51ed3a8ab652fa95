/*
 * test_inject.c - Aeron-style state injection: write a broken or
 * half-finished state straight into the segment (through struct rb_seg and
 * the layout in src/internal.h), let the process that "made" it die while
 * holding the segment lock, and assert what the survivors observe.
 *
 * The dying process is a forked child: it takes the robust mutex with
 * rb_lock(), injects, and leaves by _exit() or SIGKILL.  The parent's next
 * call then gets EOWNERDEAD inside rb_lock() and must run the repair:
 * the call succeeds, rb_check() passes, hdr->repairs grew by one, only
 * committed records are delivered, and every cell comes back once drained.
 *
 *   (a) a half-written record (cells allocated and filled, never linked);
 *       a half-created slot; cells written above a bumped cell_bump
 *   (b) a dead owner that scrambled derived data first (counts, tails, the
 *       free lists, the hash index, member lists), by _exit and by SIGKILL;
 *       and a repairer that dies before marking the mutex consistent
 *   (c) stale waiter rows: a reaped pid, a reused pid (wrong start time),
 *       a waiter table full of dead rows
 *   (d) a wrapped / reused index: 100k create/remove cycles through a small
 *       table; the futex sequence word wrapping past 2^32
 *   (e) a record unlinked but not freed (head popped, interior bypassed)
 *   plus: rb_check really detects injected inconsistencies, and a chain
 *   pointing outside the cell area is cut by the repair.
 */
#include <pthread.h>
#include <sys/prctl.h>

#include "check.h"
#include "../../_ringbuf/src/internal.h"

static char payload[64 * 1024], out[64 * 1024 + 64];

static void fill(char *p, size_t n, uint32_t seed)
{
    uint64_t st = 0xC0FFEE ^ ((uint64_t)seed << 17);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(ct_rand(&st) >> 56);
}

/* Slot id of a queue; the caller holds the lock (or is the only process). */
static uint32_t qid(rb_seg *s, const char *name)
{
    return rb_table_find(s, RB_SLOT_QUEUE, 0, name, strlen(name));
}

static uint32_t qid_locked(rb_seg *s, const char *name)
{
    CHECK_OK(rb_lock(s));
    uint32_t id = qid(s, name);
    rb_unlock(s);
    CHECK(id != RB_NIL);
    return id;
}

typedef void (*inject_fn)(rb_seg *s, void *arg);

/* Fork a child that takes the segment lock, runs fn, and dies holding the
 * lock: by _exit(0) when sig == 0, else by raising sig. */
static void die_holding_lock(rb_seg *s, inject_fn fn, void *arg, int sig)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (rb_lock(s) != RB_OK)
            _exit(3);
        fn(s, arg);
        if (sig)
            raise(sig);
        _exit(0);
    }
    ct_reap(pid, sig);
}

/* Send `n` records of known content (seeded by base + i) to q. */
static void send_known(rb_seg *s, const char *q, uint32_t base, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        size_t len = 1 + ((base + i) * 977u) % 3000u;
        fill(payload, len, base + i);
        CHECK_OK(ct_send(s, q, payload, len, 0, 0));
    }
}

/* Receive `n` records from q and expect the known content base..base+n-1. */
static void expect_known(rb_seg *s, const char *q, uint32_t base, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        size_t want = 1 + ((base + i) * 977u) % 3000u, got = 0;
        fill(payload, want, base + i);
        CHECK_OK(ct_recv1(s, q, out, sizeof out, &got));
        CHECKF(got == want && memcmp(payload, out, got) == 0,
               "queue %s record %u: got %zu bytes, expected %zu (or content differs)", q, base + i,
               got, want);
    }
}

static void expect_empty(rb_seg *s, const char *q)
{
    size_t n;
    CHECK_RC(ct_recv1(s, q, out, sizeof out, &n), RB_E_EMPTY);
}

static void expect_all_cells_free(rb_seg *s)
{
    rb_info in = ct_info(s);
    CHECKF(in.cells_free == in.cells_total, "%u of %u cells free", in.cells_free, in.cells_total);
}

static uint64_t repairs(rb_seg *s) { return ct_info(s).repairs; }

/* ---- rb_check is not vacuous ------------------------------------------- */

static void test_check_detects(rb_seg *s)
{
    send_known(s, "det", 0, 3);
    CHECK_SEG(s);
    uint32_t q = qid_locked(s, "det");
    char rep[512];

    s->slots[q].count++;
    CHECK_RC(rb_check(s, rep, sizeof rep), RB_E_CORRUPT);
    CHECKF(strstr(rep, "count") != NULL, "report: %s", rep);
    CHECK(strstr(rb_last_error(), ct_prefix) != NULL);
    s->slots[q].count--;

    s->hdr->cell_free++;
    CHECK_RC(rb_check(s, rep, sizeof rep), RB_E_CORRUPT);
    s->hdr->cell_free--;

    uint32_t save = s->slots[q].tail;
    s->slots[q].tail = s->slots[q].head;
    CHECK_RC(rb_check(s, rep, sizeof rep), RB_E_CORRUPT);
    s->slots[q].tail = save;

    s->hdr->slots_used++;
    CHECK_RC(rb_check(s, rep, sizeof rep), RB_E_CORRUPT);
    s->hdr->slots_used--;

    /* An index that lost an entry. */
    uint32_t *idx = calloc(s->hdr->index_size, sizeof *idx);
    CHECK(idx);
    memcpy(idx, s->index, s->hdr->index_size * sizeof *idx);
    for (uint32_t i = 0; i < s->hdr->index_size; i++)
        if (s->index[i] == q + 1)
            s->index[i] = RB_INDEX_TOMB;
    CHECK_RC(rb_check(s, rep, sizeof rep), RB_E_CORRUPT);
    CHECKF(strstr(rep, "index") != NULL, "report: %s", rep);
    memcpy(s->index, idx, s->hdr->index_size * sizeof *idx);
    free(idx);

    CHECK_SEG(s);
    expect_known(s, "det", 0, 3);
}

/* ---- (a) half-written record, half-created slot ---------------------------- */

struct half_arg {
    const char *q;
    uint32_t len;
    int claim_tail; /* also point the derived tail/count at the orphan */
};

static void inject_half_record(rb_seg *s, void *vp)
{
    struct half_arg *a = vp;
    /* What record_write does, stopped before the link: cells allocated,
     * header and some of the payload written, chain complete or not. */
    uint32_t first = rb_cell_alloc(s);
    rb_rec *rec = rb_rec_at(s, first);
    rec->next = RB_NIL;
    rec->len = a->len;
    rec->deadline = 0;
    rec->enq_ns = rb_now_ns();
    memset(s->cells[first].data + sizeof(rb_rec), 0xEE, RB_FIRST_PAYLOAD);
    uint32_t prev = first;
    for (uint32_t k = 1; k < rb_cells_needed(a->len) / 2 + 1; k++) { /* half the chain */
        uint32_t c = rb_cell_alloc(s);
        memset(s->cells[c].data, 0xEE, RB_CELL_PAYLOAD);
        s->cells[prev].next = c;
        prev = c;
    }
    if (a->claim_tail) {
        rb_slot *q = rb_slot_at(s, qid(s, a->q));
        q->tail = first;
        q->count++;
    }
}

static void inject_bump_only(rb_seg *s, void *vp)
{
    (void)vp;
    /* A writer that took cells straight from the bump mark and died before
     * anything pointed at them. */
    for (uint32_t k = 0; k < 10; k++)
        memset(&s->cells[s->hdr->cell_bump + k], 0xAB, RB_CELL_SIZE);
    s->hdr->cell_bump += 10;
}

static void inject_half_slot(rb_seg *s, void *vp)
{
    (void)vp;
    rb_header *h = s->hdr;
    /* rb_table_create up to (not including) the state store: the row is
     * taken from the bump mark and named, but never committed. */
    uint32_t id = h->slot_bump++;
    rb_slot *sl = &s->slots[id];
    memcpy(sl->name, "ghost", 5);
    sl->name_len = 5;
    sl->hash = rb_hash(RB_SLOT_QUEUE, 0, "ghost", 5);
    sl->head = sl->tail = RB_NIL;
    /* And a second row committed (state stored) but with no derived
     * bookkeeping done: not counted, not in the index. */
    uint32_t id2 = h->slot_bump++;
    rb_slot *s2 = &s->slots[id2];
    memset(s2, 0, sizeof *s2);
    memcpy(s2->name, "committed", 9);
    s2->name_len = 9;
    s2->hash = rb_hash(RB_SLOT_QUEUE, 0, "committed", 9);
    s2->head = s2->tail = RB_NIL;
    s2->first_member = s2->next_member = s2->prev_member = RB_NIL;
    RB_STORE_RELEASE(&s2->state, (uint32_t)RB_SLOT_QUEUE);
}

static void test_half_written(rb_seg *s)
{
    send_known(s, "half", 100, 4);
    uint64_t r0 = repairs(s);

    struct half_arg a = {"half", 5000, 0};
    die_holding_lock(s, inject_half_record, &a, 0);
    /* The next operation, whatever it is, repairs first. */
    send_known(s, "half", 104, 1);
    CHECK(repairs(s) == r0 + 1);
    CHECK_SEG(s);
    CHECK(ct_qstats(s, "half").pending == 5);

    a.claim_tail = 1;
    a.len = 300;
    die_holding_lock(s, inject_half_record, &a, SIGKILL);
    CHECK_SEG(s); /* rb_check takes the lock: it repairs too */
    CHECK(repairs(s) == r0 + 2);
    CHECK(ct_qstats(s, "half").pending == 5);
    send_known(s, "half", 105, 1); /* links after the real tail, not the orphan */
    expect_known(s, "half", 100, 6);
    expect_empty(s, "half");
    expect_all_cells_free(s);

    die_holding_lock(s, inject_bump_only, NULL, SIGKILL);
    expect_all_cells_free(s);
    CHECK(repairs(s) == r0 + 3);
    CHECK_SEG(s);

    uint32_t used = ct_info(s).slots_used;
    die_holding_lock(s, inject_half_slot, NULL, SIGKILL);
    CHECK_SEG(s);
    rb_info in = ct_info(s);
    CHECKF(in.slots_used == used + 1, "slots_used %u, expected %u", in.slots_used, used + 1);
    /* The uncommitted row is free, the committed one is found by name. */
    CHECK_OK(rb_lock(s));
    CHECK(qid(s, "ghost") == RB_NIL);
    CHECK(qid(s, "committed") != RB_NIL);
    rb_unlock(s);
    send_known(s, "committed", 200, 2);
    send_known(s, "ghost", 300, 1);
    expect_known(s, "committed", 200, 2);
    expect_known(s, "ghost", 300, 1);
    CHECK_SEG(s);
    expect_all_cells_free(s);
}

/* ---- (b) dead owner that scrambled derived data ---------------------------- */

static void populate(rb_seg *s)
{
    send_known(s, "b1", 1000, 5);
    send_known(s, "b2", 2000, 1);
    send_known(s, "b3", 3000, 7);
    for (int i = 0; i < 5; i++) {
        char m[16];
        snprintf(m, sizeof m, "mem%d", i);
        CHECK_OK(rb_set_add_member(s, "bset", 4, m, strlen(m), strlen(m), 0, 0));
    }
    CHECK_OK(rb_set_add_member(s, "bset2", 5, "mem0", 4, 4, 0, 0));
}

static void verify_populated(rb_seg *s)
{
    CHECK(ct_qstats(s, "b1").pending == 5);
    CHECK(ct_qstats(s, "b2").pending == 1);
    CHECK(ct_qstats(s, "b3").pending == 7);
    char blob[256];
    size_t len;
    uint32_t count;
    CHECK_OK(rb_set_members(s, "bset", 4, blob, sizeof blob, &len, &count));
    CHECK(count == 5);
    CHECK_OK(rb_set_members(s, "bset2", 5, blob, sizeof blob, &len, &count));
    CHECK(count == 1);
    expect_known(s, "b1", 1000, 5);
    expect_known(s, "b2", 2000, 1);
    expect_known(s, "b3", 3000, 7);
    expect_empty(s, "b1");
    expect_empty(s, "b3");
    for (int i = 0; i < 5; i++) {
        char m[16];
        snprintf(m, sizeof m, "mem%d", i);
        CHECK_OK(rb_set_discard(s, "bset", 4, m, strlen(m)));
    }
    CHECK_OK(rb_set_discard(s, "bset2", 5, "mem0", 4));
    CHECK(ct_info(s).sets == 0 && ct_info(s).members == 0);
    expect_all_cells_free(s);
    CHECK_SEG(s);
}

static void inject_scramble(rb_seg *s, void *vp)
{
    (void)vp;
    rb_header *h = s->hdr;
    rb_slot *b1 = rb_slot_at(s, qid(s, "b1"));
    rb_slot *b2 = rb_slot_at(s, qid(s, "b2"));
    rb_slot *b3 = rb_slot_at(s, qid(s, "b3"));
    uint32_t set = rb_table_find(s, RB_SLOT_SET, 0, "bset", 4);
    b1->count = 999;                 /* wrong count */
    b2->tail = b3->head;             /* tail pointing into another queue */
    b3->tail = RB_NIL;               /* tail lost */
    b3->count = 0;
    h->cell_free_head = b1->head;    /* free list through live records */
    h->cell_free = 12345;
    h->slot_free_head = qid(s, "b2"); /* slot free list through a live slot */
    h->slots_used = 0;
    h->waiters_used = 77;
    h->waiter_hi = 0;                /* would hide every live row from senders */
    b1->waiters = 5;
    s->slots[set].member_count = 42; /* member list broken */
    s->slots[set].first_member = RB_NIL;
    memset(s->index, 0, h->index_size * sizeof(uint32_t)); /* index cleared */
    h->index_tombs = 1000;
}

static void test_dead_owner(rb_seg *s)
{
    const int sigs[] = {0, SIGKILL};
    size_t n;
    CHECK_OK(ct_send(s, "b-next", "n", 1, 0, 0)); /* exists before, so slots_used is stable */
    CHECK_OK(ct_recv1(s, "b-next", out, sizeof out, &n));
    for (int k = 0; k < 2; k++) {
        populate(s);
        uint64_t r0 = repairs(s);
        rb_info in0 = ct_info(s);
        die_holding_lock(s, inject_scramble, NULL, sigs[k]);
        /* The next operation succeeds (and repairs). */
        CHECK_OK(ct_send(s, "b-next", "n", 1, 0, 0));
        CHECK(repairs(s) == r0 + 1);
        CHECK_SEG(s);
        rb_info in = ct_info(s);
        CHECKF(in.waiters_used == 0 && in.sets == 2 && in.members == 6 &&
                   in.queues == in0.queues && in.slots_used == in0.slots_used &&
                   in.cells_free == in0.cells_free - 1,
               "waiters %u sets %u members %u queues %u/%u slots %u/%u cells free %u/%u",
               in.waiters_used, in.sets, in.members, in.queues, in0.queues, in.slots_used,
               in0.slots_used, in.cells_free, in0.cells_free);
        CHECK_OK(ct_recv1(s, "b-next", out, sizeof out, &n));
        verify_populated(s);
    }

    /* A dead owner that had just taken the lock and done nothing. */
    uint64_t r0 = repairs(s);
    send_known(s, "b1", 1, 2);
    die_holding_lock(s, inject_bump_only, NULL, SIGKILL);
    expect_known(s, "b1", 1, 2);
    CHECK(repairs(s) == r0 + 1);
    expect_all_cells_free(s);
}

/* The repairer itself dies before pthread_mutex_consistent(): the next
 * locker gets EOWNERDEAD again and repeats the (idempotent) repair. */
static void test_repairer_dies(rb_seg *s)
{
    populate(s);
    uint64_t r0 = repairs(s);
    die_holding_lock(s, inject_scramble, NULL, SIGKILL);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int r = pthread_mutex_lock(&s->hdr->lock);
        if (r != EOWNERDEAD)
            _exit(4);
        /* Half a repair: free lists reset, nothing else. */
        s->hdr->cell_free_head = RB_NIL;
        s->hdr->cell_free = 0;
        raise(SIGKILL);
        _exit(5);
    }
    ct_reap(pid, SIGKILL);
    CHECK_SEG(s);
    CHECK(repairs(s) == r0 + 1); /* only completed repairs are counted */
    verify_populated(s);
}

/* ---- (c) stale waiter rows -------------------------------------------------- */

static pid_t reaped_pid(void)
{
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0)
        _exit(0);
    ct_reap(pid, 0);
    return pid;
}

/* Under the lock: occupy a free waiter row as `pid` watching `ids`. */
static uint32_t fake_waiter(rb_seg *s, uint32_t pid, uint64_t start, const uint32_t *ids, uint32_t n)
{
    rb_header *h = s->hdr;
    for (uint32_t w = 0; w < h->waiter_count; w++) {
        rb_waiter *wt = &s->waiters[w];
        if (wt->pid)
            continue;
        wt->n = n;
        wt->start_time = start;
        memcpy(wt->slot, ids, n * sizeof *ids);
        wt->token = ++h->waiter_token;
        if (w >= h->waiter_hi)
            h->waiter_hi = w + 1; /* as rb_waiter_register keeps it */
        wt->pid = pid;
        h->waiters_used++;
        for (uint32_t i = 0; i < n; i++)
            s->slots[ids[i]].waiters++;
        return w;
    }
    ct_fail(__FILE__, __LINE__, "no free waiter row");
}

static void test_stale_waiters(rb_seg *s)
{
    CHECK_OK(ct_send(s, "w1", "x", 1, 0, 0));
    CHECK_OK(ct_send(s, "w2", "y", 1, 0, 0));
    uint32_t ids[2] = {qid_locked(s, "w1"), qid_locked(s, "w2")};
    pid_t dead = reaped_pid();

    CHECK_OK(rb_lock(s));
    fake_waiter(s, (uint32_t)dead, 0, ids, 2);
    /* pid reuse: our own pid, but another start time. */
    fake_waiter(s, rb_self_pid(), rb_self_start_time() + 12345, ids, 1);
    /* A live one: us, with the right start time. */
    uint32_t live = fake_waiter(s, rb_self_pid(), rb_self_start_time(), ids + 1, 1);
    rb_unlock(s);
    CHECK_SEG(s); /* consistent bookkeeping, just stale */
    CHECK(ct_qstats(s, "w1").waiters == 2 && ct_qstats(s, "w2").waiters == 2);

    uint32_t swept = 0;
    CHECK_OK(rb_recover(s, &swept));
    CHECKF(swept == 2, "swept %u", swept);
    CHECK_SEG(s);
    CHECK(ct_qstats(s, "w1").waiters == 0 && ct_qstats(s, "w2").waiters == 1);
    CHECK(ct_info(s).waiters_used == 1);
    CHECK(s->waiters[live].pid == rb_self_pid());

    /* A stale waiter holds a queue against the table GC; once swept, its
     * queue can go.  And a dead owner's repair drops stale rows as well. */
    CHECK_OK(rb_lock(s));
    s->slots[ids[1]].waiters--;
    s->waiters[live].pid = 0;
    s->hdr->waiters_used--;
    fake_waiter(s, (uint32_t)dead, 0, ids, 2);
    rb_unlock(s);
    CHECK_SEG(s);
    die_holding_lock(s, inject_bump_only, NULL, SIGKILL);
    CHECK_SEG(s);
    CHECK(ct_info(s).waiters_used == 0);
    CHECK(ct_qstats(s, "w1").waiters == 0);

    /* A waiter table full of dead rows: a blocking receive must still get a
     * row (the register path sweeps), and leave none behind. */
    CHECK_OK(rb_lock(s));
    uint32_t total = s->hdr->waiter_count;
    for (uint32_t w = 0; w < total; w++)
        fake_waiter(s, (uint32_t)dead, 0, ids, 1);
    rb_unlock(s);
    CHECK(ct_info(s).waiters_used == total);
    char blob[64];
    const char *names[1] = {"w-empty"};
    size_t bl = ct_blob(blob, sizeof blob, names, 1), n;
    uint64_t t0 = rb_now_ns();
    CHECK_RC(rb_receive(s, blob, bl, 1, out, sizeof out, &n, NULL, 20000000, 0), RB_E_EMPTY);
    CHECK(rb_now_ns() - t0 >= 20000000ULL);
    CHECK(ct_info(s).waiters_used == 0);
    CHECK_SEG(s);
    size_t got;
    CHECK_OK(ct_recv1(s, "w1", out, sizeof out, &got));
    CHECK_OK(ct_recv1(s, "w2", out, sizeof out, &got));
    expect_all_cells_free(s);
}

/* ---- (d) wrapped / reused index ----------------------------------------------- */

static void count_index(rb_seg *s, uint32_t *tombs, uint32_t *empty, uint32_t *live)
{
    *tombs = *empty = *live = 0;
    for (uint32_t i = 0; i < s->hdr->index_size; i++) {
        uint32_t e = s->index[i];
        if (e == RB_INDEX_TOMB)
            ++*tombs;
        else if (e == RB_INDEX_EMPTY)
            ++*empty;
        else
            ++*live;
    }
}

static void test_wrapped_index(void)
{
    /* A fresh small segment: 64 slots, 128 index entries. */
    rb_options o = {.size = 4 << 20, .slots = 64, .waiters = 8, .max_record = 8192};
    CHECK_OK(rb_unlink(ct_prefix, 1));
    rb_seg *s = ct_open(&o);
    CHECK(s->hdr->index_size == 128);

    /* Sixteen long-lived queues, each holding one record, across the churn. */
    char name[64];
    for (int p = 0; p < 16; p++) {
        snprintf(name, sizeof name, "keep-%d", p);
        CHECK_OK(ct_send(s, name, name, strlen(name), 0, 0));
    }
    const uint32_t cycles = 100000 * ct_scale();
    uint64_t rng = 42;
    char prev_member[64] = "";
    for (uint32_t i = 0; i < cycles; i++) {
        /* A queue that lives for one record: created on send, left empty by
         * the receive, freed by a later table GC (slot + tombstone reuse). */
        snprintf(name, sizeof name, "cycle-%u", i);
        size_t len = 1 + ct_rand(&rng) % 600;
        fill(payload, len, i);
        CHECK_OK(ct_send(s, name, payload, len, 0, 0));
        size_t got = 0;
        CHECK_OK(ct_recv1(s, name, out, sizeof out, &got));
        CHECKF(got == len && memcmp(out, payload, len) == 0, "cycle %u", i);
        /* A member row that lives for two cycles: explicit remove. */
        char m[64];
        snprintf(m, sizeof m, "m-%u", i);
        CHECK_OK(rb_set_add_member(s, "churn", 5, m, strlen(m), strlen(m), 0, 0));
        if (prev_member[0])
            CHECK_OK(rb_set_discard(s, "churn", 5, prev_member, strlen(prev_member)));
        memcpy(prev_member, m, sizeof m);

        if (i % 4999 == 0 || i == cycles - 1) {
            CHECK_SEG(s);
            CHECK_OK(rb_lock(s));
            uint32_t tombs, empty, live;
            count_index(s, &tombs, &empty, &live);
            CHECKF(tombs == s->hdr->index_tombs, "index has %u tombstones, header says %u", tombs,
                   s->hdr->index_tombs);
            CHECKF(live == s->hdr->slots_used, "index has %u entries, %u slots used", live,
                   s->hdr->slots_used);
            CHECK(empty > 0);
            /* Names removed long ago are not found, the kept ones are. */
            snprintf(name, sizeof name, "cycle-%u", i / 2);
            uint32_t old = qid(s, name);
            CHECK(old == RB_NIL || i / 2 + 64 > i);
            for (int p = 0; p < 16; p++) {
                snprintf(name, sizeof name, "keep-%d", p);
                uint32_t id = qid(s, name);
                CHECKF(id != RB_NIL && s->slots[id].count == 1, "keep-%d lost at cycle %u", p, i);
            }
            rb_unlock(s);
        }
    }
    CHECK(ct_info(s).slots_used <= 64);
    printf("  (d) %u create/remove cycles through 64 slots: %u table GCs, %u index tombstones now\n",
           cycles, s->hdr->gc_epoch, s->hdr->index_tombs);
    for (int p = 0; p < 16; p++) {
        size_t got;
        snprintf(name, sizeof name, "keep-%d", p);
        CHECK_OK(ct_recv1(s, name, out, sizeof out, &got));
        CHECK(got == strlen(name) && memcmp(out, name, got) == 0);
    }
    CHECK_OK(rb_set_discard(s, "churn", 5, prev_member, strlen(prev_member)));
    expect_all_cells_free(s);
    CHECK(ct_info(s).sets == 0);
    CHECK_SEG(s);
    rb_close(s);
}

/* The futex sequence word wraps past 2^32 under a blocked receiver. */
struct wrap_arg {
    rb_seg *s;
    int got;
};

static void *wrap_receiver(void *vp)
{
    struct wrap_arg *a = vp;
    char blob[64], buf[16];
    const char *names[1] = {"wrapq"};
    size_t bl = ct_blob(blob, sizeof blob, names, 1), n;
    for (int i = 0; i < 4; i++) {
        if (rb_receive(a->s, blob, bl, 1, buf, sizeof buf, &n, NULL, 5000000000LL, 0) != RB_OK)
            break;
        a->got++;
    }
    return NULL;
}

static void test_seq_wrap(rb_seg *s)
{
    CHECK_OK(ct_send(s, "wrapq", "0", 1, 0, 0));
    size_t n;
    CHECK_OK(ct_recv1(s, "wrapq", out, sizeof out, &n));
    uint32_t q = qid_locked(s, "wrapq");
    __atomic_store_n(&s->slots[q].seq, UINT32_MAX - 1, __ATOMIC_RELEASE);
    struct wrap_arg a = {s, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, wrap_receiver, &a) == 0);
    for (int i = 0; i < 4; i++) {
        /* Wait until the receiver sleeps, then wake it across the wrap. */
        for (int k = 0; k < 2000 && ct_qstats(s, "wrapq").waiters == 0; k++)
            usleep(1000);
        CHECK_OK(ct_send(s, "wrapq", "w", 1, 0, 0));
    }
    pthread_join(t, NULL);
    CHECK(a.got == 4);
    CHECK(__atomic_load_n(&s->slots[q].seq, __ATOMIC_ACQUIRE) == 2); /* wrapped */
    CHECK_SEG(s);
}

/* ---- (e) a record unlinked but not freed ------------------------------------ */

static void inject_pop_no_free(rb_seg *s, void *vp)
{
    rb_slot *q = rb_slot_at(s, qid(s, (const char *)vp));
    /* pop_head stopped after its commit store: the record is out of the
     * queue, its cells are on no list, count and tail are stale. */
    RB_STORE_RELEASE(&q->head, rb_rec_at(s, q->head)->next);
}

static void inject_bypass_no_free(rb_seg *s, void *vp)
{
    rb_slot *q = rb_slot_at(s, qid(s, (const char *)vp));
    /* rb_purge_queue stopped after bypassing the second record. */
    uint32_t r1 = q->head, r2 = rb_rec_at(s, r1)->next;
    RB_STORE_RELEASE(&rb_rec_at(s, r1)->next, rb_rec_at(s, r2)->next);
}

static void inject_bad_chain(rb_seg *s, void *vp)
{
    rb_slot *q = rb_slot_at(s, qid(s, (const char *)vp));
    /* Real memory corruption: the third record's first cell links outside
     * the cell area.  The repair drops that record (counted) and keeps the
     * ones after it: its link to the next record is intact. */
    uint32_t r = q->head;
    r = rb_rec_at(s, r)->next;
    r = rb_rec_at(s, r)->next;
    s->cells[r].next = s->hdr->cell_count + 5;
}

static void test_unlinked_not_freed(rb_seg *s)
{
    uint64_t r0 = repairs(s);
    send_known(s, "e", 500, 4);
    die_holding_lock(s, inject_pop_no_free, "e", SIGKILL);
    CHECK(ct_qstats(s, "e").pending == 3);
    CHECK(repairs(s) == r0 + 1);
    CHECK_SEG(s);
    expect_known(s, "e", 501, 3); /* the record being received is the one lost */
    expect_empty(s, "e");
    expect_all_cells_free(s);

    send_known(s, "e", 600, 4);
    die_holding_lock(s, inject_bypass_no_free, "e", 0);
    CHECK_SEG(s);
    expect_known(s, "e", 600, 1);
    expect_known(s, "e", 602, 2);
    expect_empty(s, "e");
    expect_all_cells_free(s);

    uint64_t dropped = ct_info(s).dropped;
    send_known(s, "e", 700, 5);
    die_holding_lock(s, inject_bad_chain, "e", SIGKILL);
    CHECK_SEG(s);
    CHECK(ct_qstats(s, "e").pending == 4);
    CHECK(ct_info(s).dropped == dropped + 1);
    expect_known(s, "e", 700, 2);
    expect_known(s, "e", 703, 2);
    expect_empty(s, "e");
    expect_all_cells_free(s);
    CHECK(repairs(s) == r0 + 3);
}

int main(void)
{
    ct_init("inject");
    rb_options o = {.size = 16 << 20, .slots = 1024, .waiters = 32, .max_record = 65536};
    rb_seg *s = ct_open(&o);
    test_check_detects(s);
    test_half_written(s);
    test_dead_owner(s);
    test_repairer_dies(s);
    test_stale_waiters(s);
    test_unlinked_not_freed(s);
    test_seq_wrap(s);
    CHECK_SEG(s);
    rb_close(s);
    test_wrapped_index();
    ct_done("test_inject");
    return 0;
}
