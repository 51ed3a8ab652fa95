/*
 * test_fuzz_procs.c - multiprocess fuzz: producer and consumer *processes*
 * (fork) on one prefix.  The same stamps and checks as the threaded fuzz
 * (exactly once, payload checksum, per-producer FIFO per queue, byte and
 * checksum totals), with the results kept in an anonymous shared mapping.
 *
 * Producers use the handle the parent opened before fork() (a handle is
 * usable in a forked child); consumers attach with rb_open() of their own.
 * Consumers block in rb_receive with timeouts, so every wake-up crosses a
 * process boundary (futexes keyed by the shared file, not the address).
 *
 * Rounds:
 *   shared  - 3 producers, 2 consumers watching all 3 queues
 *   owned   - 3 producers, 3 consumers each owning one queue: strict FIFO
 *   kill    - 2 steady producers and 1 steady consumer, while a victim
 *             consumer and a victim producer are SIGKILLed and replaced over
 *             and over (also while holding the segment lock, mid-record, or
 *             asleep as a registered waiter).  No record is duplicated; of
 *             the records whose send had returned, at most one per consumer
 *             kill is lost; a killed producer's unacknowledged record is
 *             delivered at most once and nothing after it exists.  A third
 *             victim churns set members and fans out meanwhile.  The
 *             segment checks clean, stale waiter rows are swept and every
 *             cell comes back.
 */
#include <sys/mman.h>
#include <sys/prctl.h>

#include "check.h"

#define Q 3
#define KILLS 60         /* kill-round iterations: one consumer + one producer each */
#define MAXP (2 + KILLS) /* producer ids: steady ones, then one per victim producer */
#define MAXLEN 12000

static rb_seg *S;
static const char *QNAMES[Q] = {"pz-a", "pz-b", "pz-c"};

typedef struct hdr {
    uint32_t producer, queue, gseq, qseq, len, pad;
    uint64_t sum;
} hdr;

/* Lives in a MAP_SHARED | MAP_ANONYMOUS mapping shared by every process. */
struct shared {
    uint32_t producers, per_producer;
    int owned;
    int producers_done;
    uint64_t sent_bytes, sent_sum, recv_bytes, recv_sum, received;
    uint32_t acked[MAXP]; /* per producer: sends that returned RB_OK */
    unsigned char seen[]; /* [producers][per_producer] */
};

static struct shared *SH;

static pid_t spawn(void (*fn)(int), int id)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed parent */
        alarm(CT_TIMEOUT_S * ct_scale());
        fn(id);
        exit(0);
    }
    return pid;
}

static void producer(int id)
{
    uint64_t rng = 0x5151ULL * (uint64_t)(id + 7);
    static char buf[sizeof(hdr) + MAXLEN];
    uint32_t qseq[Q] = {0};
    uint64_t bytes = 0, sum = 0;
    for (uint32_t g = 0; g < SH->per_producer; g++) {
        uint32_t q = (uint32_t)(ct_rand(&rng) % Q);
        hdr h = {.producer = (uint32_t)id, .queue = q, .gseq = g, .qseq = qseq[q]++};
        uint64_t x = ct_rand(&rng) % 100;
        h.len = (uint32_t)(x < 75 ? ct_rand(&rng) % 225 : ct_rand(&rng) % MAXLEN);
        char *p = buf + sizeof h;
        for (uint32_t i = 0; i < h.len; i++)
            p[i] = (char)(ct_rand(&rng) >> 56);
        h.sum = ct_sum(p, h.len);
        memcpy(buf, &h, sizeof h);
        int rc;
        while ((rc = ct_send(S, QNAMES[q], buf, sizeof h + h.len, 0, 0)) == RB_E_NOMEM)
            usleep(100);
        CHECK_OK(rc);
        __atomic_store_n(&SH->acked[id], g + 1, __ATOMIC_RELEASE);
        bytes += h.len;
        sum += h.sum;
        if (ct_rand(&rng) % 128 == 0)
            usleep(300); /* let consumers fall asleep now and then */
    }
    __atomic_fetch_add(&SH->sent_bytes, bytes, __ATOMIC_RELAXED);
    __atomic_fetch_add(&SH->sent_sum, sum, __ATOMIC_RELAXED);
}

/* id >= 0: a consumer (owning queue id in the owned round). */
static void consumer(int id)
{
    rb_seg *s = NULL;
    rb_options o = {0};
    CHECK_OK(rb_open(ct_prefix, &o, &s));
    const char *names[Q];
    uint32_t n = 0;
    for (uint32_t q = 0; q < Q; q++)
        if (!SH->owned || q == (uint32_t)id)
            names[n++] = QNAMES[q];
    char blob[64];
    size_t bl = ct_blob(blob, sizeof blob, names, n);
    static char buf[sizeof(hdr) + MAXLEN];
    int64_t last[MAXP][Q];
    for (int p = 0; p < MAXP; p++)
        for (int q = 0; q < Q; q++)
            last[p][q] = -1;
    for (;;) {
        int done = __atomic_load_n(&SH->producers_done, __ATOMIC_ACQUIRE);
        size_t len = 0;
        uint32_t idx = 99;
        int rc = rb_receive(s, blob, bl, n, buf, sizeof buf, &len, &idx, 20000000, 0);
        if (rc == RB_E_EMPTY) {
            if (done)
                break;
            continue;
        }
        CHECK_OK(rc);
        hdr h;
        CHECK(len >= sizeof h);
        memcpy(&h, buf, sizeof h);
        CHECKF(h.producer < SH->producers && h.queue < Q && h.gseq < SH->per_producer,
               "bad header p%u q%u g%u", h.producer, h.queue, h.gseq);
        CHECKF(len == sizeof h + h.len && ct_sum(buf + sizeof h, h.len) == h.sum,
               "p%u g%u: payload corrupt", h.producer, h.gseq);
        CHECK(idx < n && strcmp(names[idx], QNAMES[h.queue]) == 0);
        int64_t *l = &last[h.producer][h.queue];
        CHECKF(SH->owned ? (int64_t)h.qseq == *l + 1 : (int64_t)h.qseq > *l,
               "p%u on %s: qseq %u after %lld (FIFO broken)", h.producer, QNAMES[h.queue], h.qseq,
               (long long)*l);
        *l = h.qseq;
        unsigned char prev = __atomic_fetch_add(
            &SH->seen[(size_t)h.producer * SH->per_producer + h.gseq], 1, __ATOMIC_RELAXED);
        CHECKF(prev == 0, "p%u g%u received twice", h.producer, h.gseq);
        /* Counted per record (not once at exit): a killed victim's records
         * still add up. */
        __atomic_fetch_add(&SH->recv_bytes, (uint64_t)h.len, __ATOMIC_RELAXED);
        __atomic_fetch_add(&SH->recv_sum, h.sum, __ATOMIC_RELAXED);
        __atomic_fetch_add(&SH->received, 1, __ATOMIC_RELAXED);
    }
    rb_close(s);
}


static void reset_shared(uint32_t producers, uint32_t per_producer, int owned)
{
    size_t total = (size_t)producers * per_producer;
    memset(SH, 0, sizeof *SH + total);
    SH->producers = producers;
    SH->per_producer = per_producer;
    SH->owned = owned;
}

/* kills: consumer kills (each may lose the record it was receiving). */
static void verify(const char *name, uint32_t kills, uint64_t t0)
{
    uint64_t total = 0, missing = 0, inflight = 0;
    for (uint32_t p = 0; p < SH->producers; p++) {
        uint32_t acked = SH->acked[p];
        total += acked;
        for (uint32_t g = 0; g < SH->per_producer; g++) {
            unsigned char n = SH->seen[(size_t)p * SH->per_producer + g];
            CHECKF(n <= 1, "%s: p%u g%u received %u times", name, p, g, n);
            if (g < acked)
                missing += n == 0;
            else if (g == acked)
                inflight += n; /* the send a kill interrupted: delivered or not */
            else
                CHECKF(n == 0, "%s: p%u g%u received, but p%u was killed before g%u", name, p,
                       g, p, acked);
        }
    }
    CHECKF(missing <= kills, "%s: %llu acknowledged records lost with %u consumer kills", name,
           (unsigned long long)missing, kills);
    if (!kills) {
        CHECK(SH->received == total && missing == 0);
        CHECK(SH->sent_bytes == SH->recv_bytes && SH->sent_sum == SH->recv_sum);
    }
    /* Dead victims may have left waiter rows behind: sweep them. */
    uint32_t swept = 0;
    CHECK_OK(rb_recover(S, &swept));
    CHECKF(swept <= kills, "%u rows swept after %u kills", swept, kills);
    CHECK_SEG(S);
    rb_info in = ct_info(S);
    CHECKF(in.cells_free == in.cells_total, "%s: %u of %u cells free", name, in.cells_free,
           in.cells_total);
    CHECK(in.waiters_used == 0);
    for (int q = 0; q < Q; q++)
        CHECK(ct_qstats(S, QNAMES[q]).pending == 0 && ct_qstats(S, QNAMES[q]).waiters == 0);
    printf("  %-6s %llu records acknowledged, %llu lost, %llu unacknowledged delivered, %u stale"
           " waiters swept, %llu repairs so far, %.0f ms\n",
           name, (unsigned long long)total, (unsigned long long)missing,
           (unsigned long long)inflight, swept, (unsigned long long)in.repairs,
           (rb_now_ns() - t0) / 1e6);
}

static void run_round(const char *name, uint32_t producers, uint32_t consumers, uint32_t per,
                      int owned)
{
    uint64_t t0 = rb_now_ns();
    reset_shared(producers, per, owned);
    pid_t pp[MAXP], cp[Q];
    for (uint32_t i = 0; i < consumers; i++)
        cp[i] = spawn(consumer, (int)i);
    for (uint32_t i = 0; i < producers; i++)
        pp[i] = spawn(producer, (int)i);
    for (uint32_t i = 0; i < producers; i++)
        ct_reap(pp[i], 0);
    __atomic_store_n(&SH->producers_done, 1, __ATOMIC_RELEASE);
    for (uint32_t i = 0; i < consumers; i++)
        ct_reap(cp[i], 0);
    verify(name, 0, t0);
}

/* A third victim: set membership churn and fan-outs into queues of their
 * own, so kills also land inside rb_set_add / rb_set_discard / rb_fanout
 * (member rows, member lists, several enqueues in one lock hold). */
#define FANQ 16
static void set_churner(int id)
{
    uint64_t rng = 0xFA4ULL + (uint64_t)id;
    static char buf[4096];
    char m[32];
    for (;;) {
        uint64_t r = ct_rand(&rng);
        snprintf(m, sizeof m, "pz-fan-%u", (unsigned)(r >> 8) % FANQ);
        switch (r % 4) {
        case 0:
            CHECK_OK(rb_set_add_member(S, "pz-set", 6, m, strlen(m), strlen(m), 0, r & 0x10000 ? rb_now_ns() + 1000000 : 0));
            break;
        case 1:
            CHECK_OK(rb_set_discard(S, "pz-set", 6, m, strlen(m)));
            break;
        default: {
            uint32_t sent, skipped;
            size_t len = (size_t)((r >> 20) % sizeof buf);
            memset(buf, (int)(r >> 40), len);
            CHECK_OK(rb_fanout_tagged(S, "pz-set", 6, buf, len, 0, 20, RB_FANOUT_PLAIN, &sent, &skipped));
            break;
        }
        }
    }
}

static void drain_fan_queues(void)
{
    static char buf[4096];
    char m[32];
    size_t n;
    for (int i = 0; i < FANQ; i++) {
        snprintf(m, sizeof m, "pz-fan-%d", i);
        while (ct_recv1(S, m, buf, sizeof buf, &n) == RB_OK)
            ;
        CHECK_OK(rb_set_discard(S, "pz-set", 6, m, strlen(m)));
    }
    CHECK(ct_info(S).sets == 0);
}

/* SIGKILL a victim; it may only have ended by itself if it was done. */
static void kill_victim(pid_t v)
{
    kill(v, SIGKILL);
    int st;
    CHECK(waitpid(v, &st, 0) == v);
    CHECKF((WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) || (WIFEXITED(st) && WEXITSTATUS(st) == 0),
           "victim status 0x%x", st);
}

static void kill_round(uint32_t per)
{
    uint64_t t0 = rb_now_ns();
    reset_shared(MAXP, per, 0);
    uint64_t r0 = ct_info(S).repairs;
    pid_t steady = spawn(consumer, 0);
    pid_t pp[2] = {spawn(producer, 0), spawn(producer, 1)};
    uint64_t rng = 99;
    for (uint32_t k = 0; k < KILLS; k++) {
        /* Under CT_SCALE each victim lives longer rather than there being
         * more of them (producer ids are bounded by MAXP). */
        pid_t vc = spawn(consumer, 0);
        pid_t vp = spawn(producer, (int)(2 + k));
        pid_t vs = spawn(set_churner, (int)k);
        usleep((2000 + (useconds_t)(ct_rand(&rng) % 15000)) * ct_scale());
        if (k % 2) {
            kill_victim(vc);
            usleep((useconds_t)(ct_rand(&rng) % 3000));
            kill_victim(vp);
        } else {
            kill_victim(vp);
            usleep((useconds_t)(ct_rand(&rng) % 3000));
            kill_victim(vc);
        }
        kill_victim(vs);
    }
    ct_reap(pp[0], 0);
    ct_reap(pp[1], 0);
    __atomic_store_n(&SH->producers_done, 1, __ATOMIC_RELEASE);
    ct_reap(steady, 0);
    CHECK_SEG(S);
    drain_fan_queues();
    verify("kill", KILLS, t0);
    printf("         (%d consumer + %d producer + %d set-churner kills; %llu landed while the"
           " victim held the lock)\n",
           KILLS, KILLS, KILLS, (unsigned long long)(ct_info(S).repairs - r0));
}

int main(void)
{
    ct_init("fuzz_procs");
    rb_options o = {.size = 8 << 20, .slots = 256, .waiters = 64, .max_record = 65536};
    S = ct_open(&o); /* opened before fork: the producers use this handle */
    const uint32_t per = 15000 * ct_scale();
    size_t sh_size = sizeof(struct shared) + (size_t)MAXP * per;
    SH = mmap(NULL, sh_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(SH != MAP_FAILED);
    run_round("shared", 3, 2, per, 0);
    run_round("owned", 3, 3, per, 1);
    kill_round(per);
    munmap(SH, sh_size);
    rb_close(S);
    ct_done("test_fuzz_procs");
    return 0;
}
