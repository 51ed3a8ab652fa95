/*
 * test_basic.c - the public API, one behaviour at a time: segments and
 * attach (also several processes creating one prefix at once, the mode
 * option, a dead creator's temporary file), FIFO, record sizes and cell
 * accounting, every error code a caller can provoke, capacity (also with
 * expired records hidden behind live ones), expiry, memory and name-table
 * exhaustion, sets, fan-out, routed members and tagged fan-out, batches,
 * listing, statistics, flush, and the refusal of a segment with a foreign
 * magic or another layout version; trust on attach (owner, mode) and the
 * lock timeout with a stopped holder.  rb_check() must pass after every step.
 */
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "check.h"

static char big_in[1 << 20], big_out[(1 << 20) + 16];

/* Cells a record of `len` bytes takes: the first cell carries 224 payload
 * bytes after the record header, every further cell 248 (RB_CELL_SIZE minus
 * the 8-byte link).  Spelled out here instead of borrowed from the core. */
static uint32_t cells_for(size_t len)
{
    if (len <= 224)
        return 1;
    return 1 + (uint32_t)((len - 224 + 247) / 248);
}

static void fill_pattern(char *p, size_t n, uint32_t seed)
{
    uint64_t st = 0x9E3779B97F4A7C15ULL ^ seed;
    for (size_t i = 0; i < n; i++)
        p[i] = (char)(ct_rand(&st) >> 56);
}

/* Close every handle, remove the segment and create it afresh. */
static rb_seg *reopen(rb_seg *old, rb_options *o)
{
    if (old)
        rb_close(old);
    int r = rb_unlink(ct_prefix, 1);
    CHECK(r == RB_OK || r == RB_E_NOTFOUND);
    return ct_open(o);
}

static void drain(rb_seg *s, const char *q)
{
    size_t n;
    while (ct_recv1(s, q, big_out, sizeof big_out, &n) == RB_OK)
        ;
}

/* ---------------------------------------------------------------------- */

static void test_open_attach(void)
{
    rb_seg *a = ct_open(NULL);
    rb_info in = ct_info(a);
    CHECK(in.magic == RB_MAGIC);
    CHECK(in.version == RB_LAYOUT_VERSION);
    CHECK(in.max_record == RB_DEFAULT_MAX_RECORD);
    CHECK(in.size == RB_DEFAULT_SIZE);
    CHECK(in.cell_size == RB_CELL_SIZE);
    CHECK(in.slots_total == RB_DEFAULT_SLOTS);
    CHECK(in.waiters_total == RB_DEFAULT_WAITERS);
    CHECK(in.cells_free == in.cells_total && in.cells_total > 0);
    CHECK(in.queues == 0 && in.sets == 0 && in.slots_used == 0);
    CHECK(in.creator_pid == (uint32_t)getpid());

    /* The file is private to its user by default. */
    struct stat st;
    CHECK(stat(ct_path, &st) == 0);
    CHECKF((st.st_mode & 0777) == 0600, "mode %o", (unsigned)(st.st_mode & 0777));

    /* A second handle attaches (create = 0) and sees the same segment. */
    rb_options o = {0};
    rb_seg *b = NULL;
    CHECK_OK(rb_open(ct_prefix, &o, &b));
    CHECK(rb_attached(ct_prefix) == 1);
    CHECK_RC(rb_unlink(ct_prefix, 0), RB_E_BUSY);

    /* FIFO across the two handles. */
    for (uint32_t i = 0; i < 100; i++)
        CHECK_OK(ct_send(a, "fifo", &i, sizeof i, 0, 0));
    CHECK(ct_qstats(b, "fifo").pending == 100);
    for (uint32_t i = 0; i < 100; i++) {
        uint32_t v = 0xFFFFFFFF;
        size_t n = 0;
        CHECK_OK(ct_recv1(b, "fifo", &v, sizeof v, &n));
        CHECKF(n == sizeof v && v == i, "got %u (len %zu), expected %u", v, n, i);
    }
    size_t n;
    CHECK_RC(ct_recv1(a, "fifo", big_out, sizeof big_out, &n), RB_E_EMPTY);
    CHECK_SEG(b);

    /* Attach only, to a prefix that does not exist; and bad prefixes. */
    rb_seg *c = NULL;
    CHECK_RC(rb_open("ctest_no_such_prefix_x", &o, &c), RB_E_NOTFOUND);
    CHECK_RC(rb_open("bad/prefix", &o, &c), RB_E_NAME);
    CHECK_RC(rb_open("", &o, &c), RB_E_NAME);
    CHECK(strstr(rb_last_error(), "1..200") != NULL);

    rb_close(b);
    rb_close(a);
    CHECK(rb_attached(ct_prefix) == 0);
}

/* Several processes create the same prefix at once: exactly one segment
 * results, every process attaches to it, no temporary file is left; a
 * creator's leftover temporary file is swept; the mode option is applied
 * whatever the umask. */
static void test_concurrent_create(void)
{
    enum { N = 4 };
    CHECK_OK(rb_unlink(ct_prefix, 0)); /* start from no segment at all */
    int go[2];
    CHECK(pipe(go) == 0);
    pid_t kids[N];
    for (int i = 0; i < N; i++) {
        fflush(stdout);
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) != 0) /* EOF is the starting gun */
                _exit(3);
            rb_options o = {.size = 1 << 20, .slots = 64, .waiters = 8, .max_record = 4096};
            o.create = 1;
            rb_seg *s = NULL;
            if (rb_open(ct_prefix, &o, &s) != RB_OK) {
                fprintf(stderr, "child: %s\n", rb_last_error());
                _exit(4);
            }
            uint32_t me = (uint32_t)getpid();
            int r = ct_send(s, "created", &me, sizeof me, 0, 0);
            rb_close(s);
            _exit(r == RB_OK ? 0 : 5);
        }
    }
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < N; i++)
        ct_reap(kids[i], 0);
    rb_options o = {0};
    rb_seg *s = NULL;
    CHECK_OK(rb_open(ct_prefix, &o, &s));
    rb_info in = ct_info(s);
    int creator = 0;
    for (int i = 0; i < N; i++)
        creator += in.creator_pid == (uint32_t)kids[i];
    CHECKF(creator == 1 && in.size == 1 << 20, "creator pid %u, size %llu", in.creator_pid, (unsigned long long)in.size);
    CHECK(ct_qstats(s, "created").pending == N);
    CHECK_SEG(s);
    rb_close(s);
    char tmp[300];
    for (int i = 0; i < N; i++) {
        snprintf(tmp, sizeof tmp, "%s~init~%d", ct_path, (int)kids[i]);
        CHECKF(access(tmp, F_OK) != 0, "%s left behind", tmp);
    }
    CHECK_OK(rb_unlink(ct_prefix, 0));

    /* A dead creator's temporary file is removed by the next create. */
    snprintf(tmp, sizeof tmp, "%s~init~%d", ct_path, (int)kids[0]);
    int fd = open(tmp, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0);
    close(fd);
    mode_t old = umask(077);
    rb_options m = {.mode = 0640, .size = 1 << 20, .slots = 64, .waiters = 8, .max_record = 4096};
    s = ct_open(&m);
    umask(old);
    CHECKF(access(tmp, F_OK) != 0, "stale %s not swept", tmp);
    struct stat st;
    CHECK(stat(ct_path, &st) == 0);
    CHECKF((st.st_mode & 0777) == 0640, "mode %o", (unsigned)(st.st_mode & 0777));
    rb_close(s);
    CHECK_OK(rb_unlink(ct_prefix, 0));
}

static void test_sizes(rb_seg *s)
{
    uint32_t max = ct_info(s).max_record;
    const size_t sizes[] = {0, 1, 223, 224, 225, 471, 472, 473, 1000, 5000, 65536, max - 1, max};
    const size_t nsizes = sizeof sizes / sizeof sizes[0];
    rb_info before = ct_info(s);
    uint32_t used = 0;
    for (size_t i = 0; i < nsizes; i++) {
        fill_pattern(big_in, sizes[i], (uint32_t)i);
        CHECK_OK(ct_send(s, "sizes", big_in, sizes[i], 0, 0));
        used += cells_for(sizes[i]);
        rb_info now = ct_info(s);
        CHECKF(before.cells_free - now.cells_free == used, "size %zu: %u cells used, expected %u",
               sizes[i], before.cells_free - now.cells_free, used);
    }
    CHECK_SEG(s);
    for (size_t i = 0; i < nsizes; i++) {
        size_t n = 12345;
        fill_pattern(big_in, sizes[i], (uint32_t)i);
        memset(big_out, 0x5A, sizes[i] + 16);
        CHECK_OK(ct_recv1(s, "sizes", big_out, sizes[i], &n)); /* buffer exactly big enough */
        CHECKF(n == sizes[i], "got %zu bytes, expected %zu", n, sizes[i]);
        CHECKF(memcmp(big_in, big_out, n) == 0, "payload of size %zu differs", n);
        CHECK(big_out[n] == 0x5A); /* nothing written past the record */
    }
    CHECK(ct_info(s).cells_free == before.cells_free);

    /* One byte over the limit is refused without touching the segment. */
    CHECK_RC(ct_send(s, "sizes", big_in, (size_t)max + 1, 0, 0), RB_E_TOOLARGE);
    CHECK(strstr(rb_last_error(), "max_record") != NULL);
    uint32_t sent = 9, skipped = 9;
    CHECK_RC(rb_fanout_tagged(s, "g", 1, big_in, (size_t)max + 1, 0, 0, RB_FANOUT_PLAIN, &sent, &skipped), RB_E_TOOLARGE);
    CHECK_RC(ct_send(s, "sizes", NULL, 5, 0, 0), RB_E_INVAL);
    /* An empty record, sent from NULL and received into (NULL, 0). */
    CHECK_OK(ct_send(s, "sizes", NULL, 0, 0, 0));
    size_t n0 = 99;
    CHECK_OK(rb_receive(s, "\x05\x00sizes", 7, 1, NULL, 0, &n0, NULL, 0, 0));
    CHECK(n0 == 0);
    CHECK(ct_qstats(s, "sizes").pending == 0);
    CHECK_SEG(s);
}

static void test_names(rb_seg *s)
{
    char name[RB_NAME_MAX + 2];
    memset(name, 'n', sizeof name);
    char blob[600];
    size_t n;
    uint32_t idx;
    /* Empty and over-long names, on every entry point. */
    CHECK_RC(rb_send(s, name, 0, "x", 1, 0, 0), RB_E_NAME);
    CHECK_RC(rb_send(s, name, RB_NAME_MAX + 1, "x", 1, 0, 0), RB_E_NAME);
    CHECK(strstr(rb_last_error(), "257") != NULL);
    CHECK_RC(rb_set_add_member(s, name, 0, "m", 1, 1, 0, 0), RB_E_NAME);
    CHECK_RC(rb_set_add_member(s, "g", 1, name, RB_NAME_MAX + 1, RB_NAME_MAX + 1, 0, 0), RB_E_NAME);
    CHECK_RC(rb_set_discard(s, name, RB_NAME_MAX + 1, "m", 1), RB_E_NAME);
    CHECK_RC(rb_fanout_tagged(s, name, 0, "x", 1, 0, 0, RB_FANOUT_PLAIN, NULL, NULL), RB_E_NAME);
    rb_queue_stats qs;
    CHECK_RC(rb_queue_stats_get(s, name, 0, &qs), RB_E_NAME);
    blob[0] = 0;
    blob[1] = 0; /* one entry of length 0 */
    CHECK_RC(rb_receive(s, blob, 2, 1, big_out, 10, &n, &idx, 0, 0), RB_E_NAME);
    blob[0] = (char)((RB_NAME_MAX + 1) & 0xFF);
    blob[1] = (char)((RB_NAME_MAX + 1) >> 8);
    memset(blob + 2, 'n', RB_NAME_MAX + 1);
    CHECK_RC(rb_receive(s, blob, RB_NAME_MAX + 3, 1, big_out, 10, &n, &idx, 0, 0), RB_E_NAME);
    /* Malformed blobs and counts. */
    CHECK_RC(rb_receive(s, blob, 1, 1, big_out, 10, &n, &idx, 0, 0), RB_E_INVAL);
    CHECK_RC(rb_receive(s, blob, 10, 1, big_out, 10, &n, &idx, 0, 0), RB_E_INVAL);
    CHECK_RC(rb_receive(s, blob, 0, 0, big_out, 10, &n, &idx, 0, 0), RB_E_INVAL);
    /* No upper bound on the count (RB_WAIT_MAX is no limit any more), but a
     * count the blob cannot hold (2 bytes an entry at least) is refused
     * before anything is sized by it. */
    CHECK_RC(rb_receive(s, blob, 10, 6, big_out, 10, &n, &idx, 0, 0), RB_E_INVAL);
    CHECK(strstr(rb_last_error(), "cannot hold 6 names") != NULL);
    CHECK_RC(rb_receive(s, blob, 10, UINT32_MAX, big_out, 10, &n, &idx, 0, 0), RB_E_INVAL);

    /* Exactly RB_NAME_MAX bytes is fine, and names are bytes: a NUL inside
     * and a near-identical name are different queues. */
    CHECK_OK(rb_send(s, name, RB_NAME_MAX, "long", 4, 0, 0));
    name[10] = 0;
    CHECK_OK(rb_send(s, name, RB_NAME_MAX, "nul", 3, 0, 0));
    CHECK(ct_qstats(s, "nnnn").pending == 0);
    blob[0] = (char)(RB_NAME_MAX & 0xFF);
    blob[1] = (char)(RB_NAME_MAX >> 8);
    memcpy(blob + 2, name, RB_NAME_MAX);
    CHECK_OK(rb_receive(s, blob, RB_NAME_MAX + 2, 1, big_out, 10, &n, &idx, 0, 0));
    CHECK(n == 3 && memcmp(big_out, "nul", 3) == 0 && idx == 0);
    name[10] = 'n';
    memcpy(blob + 2, name, RB_NAME_MAX);
    CHECK_OK(rb_receive(s, blob, RB_NAME_MAX + 2, 1, big_out, 10, &n, &idx, 0, 0));
    CHECK(n == 4 && memcmp(big_out, "long", 4) == 0);
    CHECK_SEG(s);
}

static void test_bufsmall(rb_seg *s)
{
    fill_pattern(big_in, 1000, 7);
    CHECK_OK(ct_send(s, "small", big_in, 1000, 0, 0));
    size_t n = 0;
    CHECK_RC(ct_recv1(s, "small", big_out, 10, &n), RB_E_BUFSMALL);
    CHECK(n == 1000);
    CHECK(strstr(rb_last_error(), "1000") != NULL);
    CHECK(ct_qstats(s, "small").pending == 1); /* not consumed */
    n = 0;
    CHECK_RC(ct_recv1(s, "small", big_out, 999, &n), RB_E_BUFSMALL);
    CHECK(n == 1000);
    CHECK_OK(ct_recv1(s, "small", big_out, 1000, &n));
    CHECK(n == 1000 && memcmp(big_in, big_out, 1000) == 0);
    CHECK_RC(rb_receive(s, "\x01\x00q", 3, 1, NULL, 5, &n, NULL, 0, 0), RB_E_INVAL);
    CHECK_SEG(s);
}

static void test_capacity(rb_seg *s)
{
    const char *q = "cap";
    for (uint32_t i = 0; i < 5; i++)
        CHECK_OK(ct_send(s, q, &i, sizeof i, 0, 5));
    CHECK_RC(ct_send(s, q, "x", 1, 0, 5), RB_E_FULL);
    CHECK(strstr(rb_last_error(), "capacity 5") != NULL);
    CHECK_RC(ct_send(s, q, "x", 1, 0, 5), RB_E_FULL);
    rb_queue_stats st = ct_qstats(s, q);
    CHECK(st.pending == 5 && st.full == 2 && st.sent == 5 && st.capacity == 5);
    size_t n;
    uint32_t v;
    CHECK_OK(ct_recv1(s, q, &v, sizeof v, &n));
    CHECK(v == 0);
    CHECK_OK(ct_send(s, q, "y", 1, 0, 5));  /* one place freed: exactly one send fits */
    CHECK_RC(ct_send(s, q, "z", 1, 0, 5), RB_E_FULL);
    /* The stored capacity applies to a send that states none (0) ... */
    CHECK_RC(ct_send(s, q, "z", 1, 0, 0), RB_E_FULL);
    /* ... and a send stating a larger one raises it. */
    CHECK_OK(ct_send(s, q, "w", 1, 0, 6));
    CHECK(ct_qstats(s, q).pending == 6 && ct_qstats(s, q).capacity == 6);
    CHECK_RC(ct_send(s, q, "z", 1, 0, 6), RB_E_FULL);
    /* Capacity 1: the degenerate case. */
    CHECK_OK(ct_send(s, "cap1", "a", 1, 0, 1));
    CHECK_RC(ct_send(s, "cap1", "b", 1, 0, 1), RB_E_FULL);
    drain(s, q);
    drain(s, "cap1");
    CHECK_SEG(s);
}

static void test_expiry(rb_seg *s)
{
    rb_info before = ct_info(s);
    uint64_t now = rb_now_ns();
    /* A past deadline is accepted but never returned. */
    CHECK_OK(ct_send(s, "exp", "past", 4, now - 1, 0));
    CHECK_OK(ct_send(s, "exp", "keep", 4, 0, 0));
    fill_pattern(big_in, 3000, 3);
    CHECK_OK(ct_send(s, "exp", big_in, 3000, now - 1000000, 0)); /* multi-cell, expired */
    CHECK_OK(ct_send(s, "exp", "live", 4, now + 60000000000ULL, 0));
    CHECK_OK(ct_send(s, "exp", "soon", 4, rb_now_ns() + 30000000ULL, 0));
    char buf[16];
    size_t n;
    CHECK_OK(ct_recv1(s, "exp", buf, sizeof buf, &n));
    CHECK(n == 4 && memcmp(buf, "keep", 4) == 0);
    CHECK_OK(ct_recv1(s, "exp", buf, sizeof buf, &n));
    CHECK(n == 4 && memcmp(buf, "live", 4) == 0);
    usleep(60000);
    CHECK_RC(ct_recv1(s, "exp", buf, sizeof buf, &n), RB_E_EMPTY);
    rb_info after = ct_info(s);
    CHECKF(after.expired - before.expired == 3, "expired %llu",
           (unsigned long long)(after.expired - before.expired));
    CHECK(after.cells_free == after.cells_total);

    /* An expired record does not count against the capacity. */
    CHECK_OK(ct_send(s, "expcap", "a", 1, rb_now_ns() + 20000000ULL, 2));
    CHECK_OK(ct_send(s, "expcap", "b", 1, rb_now_ns() + 20000000ULL, 2));
    CHECK_RC(ct_send(s, "expcap", "c", 1, 0, 2), RB_E_FULL);
    usleep(40000);
    CHECK_OK(ct_send(s, "expcap", "c", 1, 0, 2));
    CHECK_OK(ct_send(s, "expcap", "d", 1, 0, 2));
    CHECK_RC(ct_send(s, "expcap", "e", 1, 0, 2), RB_E_FULL);
    CHECK_OK(ct_recv1(s, "expcap", buf, sizeof buf, &n));
    CHECK(n == 1 && buf[0] == 'c');

    /* An expired record in the middle (not the head) is swept by rb_recover. */
    CHECK_OK(ct_send(s, "mid", "1", 1, 0, 0));
    CHECK_OK(ct_send(s, "mid", "2", 1, rb_now_ns() + 10000000ULL, 0));
    CHECK_OK(ct_send(s, "mid", "3", 1, 0, 0));
    usleep(20000);
    uint32_t swept = 99;
    CHECK_OK(rb_recover(s, &swept));
    CHECK(swept == 0);
    CHECK(ct_qstats(s, "mid").pending == 2);
    CHECK_SEG(s);
    CHECK_OK(ct_recv1(s, "mid", buf, sizeof buf, &n));
    CHECK(buf[0] == '1');
    CHECK_OK(ct_recv1(s, "mid", buf, sizeof buf, &n));
    CHECK(buf[0] == '3');
    drain(s, "expcap");

    /* A full queue whose expired record sits behind live ones (not at the
     * head): the capacity check must still find and drop it. */
    uint64_t exp0 = ct_info(s).expired;
    CHECK_OK(ct_send(s, "mix", "A", 1, rb_now_ns() + 60000000000ULL, 3));
    CHECK_OK(ct_send(s, "mix", "B", 1, 0, 3));
    CHECK_OK(ct_send(s, "mix", "C", 1, rb_now_ns() + 20000000ULL, 3));
    CHECK_RC(ct_send(s, "mix", "X", 1, 0, 3), RB_E_FULL);
    usleep(40000);
    CHECK_OK(ct_send(s, "mix", "D", 1, rb_now_ns() + 15000000ULL, 3));
    CHECK_RC(ct_send(s, "mix", "X", 1, 0, 3), RB_E_FULL);
    usleep(30000);
    CHECK_OK(ct_send(s, "mix", "E", 1, 0, 3)); /* D expired meanwhile */
    CHECK_RC(ct_send(s, "mix", "X", 1, 0, 3), RB_E_FULL);
    const char *want = "ABE";
    for (int i = 0; i < 3; i++) {
        CHECK_OK(ct_recv1(s, "mix", buf, sizeof buf, &n));
        CHECKF(n == 1 && buf[0] == want[i], "got %c, expected %c", buf[0], want[i]);
    }
    CHECK(ct_info(s).expired - exp0 == 2);
    CHECK(ct_info(s).cells_free == ct_info(s).cells_total);
    CHECK_SEG(s);
}

static rb_seg *test_nomem(rb_seg *s)
{
    /* A segment too small for its own tables is refused and leaves no file. */
    rb_options tiny = {.size = 4096, .slots = 64, .waiters = 8, .max_record = 1024};
    rb_close(s);
    CHECK_OK(rb_unlink(ct_prefix, 1));
    tiny.create = 1;
    CHECK_RC(rb_open(ct_prefix, &tiny, &s), RB_E_INVAL);
    CHECK(access(ct_path, F_OK) != 0);

    rb_options o = {.size = 1 << 20, .slots = 64, .waiters = 8, .max_record = 60000};
    s = reopen(NULL, &o);
    rb_info in = ct_info(s);
    CHECK(in.max_record == 60000 && in.size == 1 << 20);
    uint32_t per = cells_for(60000), sent = 0;
    int r;
    for (;;) {
        fill_pattern(big_in, 60000, sent);
        r = ct_send(s, sent % 2 ? "mem_a" : "mem_b", big_in, 60000, 0, 0);
        if (r != RB_OK)
            break;
        sent++;
        CHECK(sent < 1000);
    }
    CHECK_RC(r, RB_E_NOMEM);
    CHECK(strstr(rb_last_error(), "out of record memory") != NULL);
    in = ct_info(s);
    CHECKF(sent == in.cells_total / per, "sent %u, expected %u", sent, in.cells_total / per);
    CHECK(in.cells_free < per && in.full == 1);
    /* A small record still fits in whatever is left. */
    if (in.cells_free > 0)
        CHECK_OK(ct_send(s, "mem_c", "x", 1, 0, 0));
    CHECK_SEG(s);
    /* Everything that was accepted is intact. */
    for (uint32_t i = 0; i < sent; i++) {
        size_t n;
        fill_pattern(big_in, 60000, i);
        CHECK_OK(ct_recv1(s, i % 2 ? "mem_a" : "mem_b", big_out, sizeof big_out, &n));
        CHECK(n == 60000 && memcmp(big_in, big_out, n) == 0);
    }
    drain(s, "mem_c");
    in = ct_info(s);
    CHECK(in.cells_free == in.cells_total);

    /* Memory taken by expired records is reclaimed to make room. */
    uint64_t soon = rb_now_ns() + 20000000ULL;
    for (uint32_t i = 0; i < sent; i++)
        CHECK_OK(ct_send(s, "mem_exp", big_in, 60000, soon, 0));
    CHECK_RC(ct_send(s, "mem_x", big_in, 60000, 0, 0), RB_E_NOMEM);
    usleep(40000);
    CHECK_OK(ct_send(s, "mem_x", big_in, 60000, 0, 0));
    CHECK_SEG(s);
    drain(s, "mem_x");
    drain(s, "mem_exp");
    CHECK(ct_info(s).cells_free == ct_info(s).cells_total);
    return s;
}

static rb_seg *test_noslot(rb_seg *s)
{
    rb_options o = {.size = 1 << 20, .slots = 8, .waiters = 8, .max_record = 4096};
    s = reopen(s, &o);
    char q[16];
    for (int i = 0; i < 8; i++) {
        snprintf(q, sizeof q, "slot%d", i);
        CHECK_OK(ct_send(s, q, q, strlen(q), 0, 0));
    }
    CHECK(ct_info(s).slots_used == 8);
    CHECK_RC(ct_send(s, "slot8", "x", 1, 0, 0), RB_E_NOSLOT);
    CHECK(strstr(rb_last_error(), "name table full") != NULL);
    CHECK_RC(rb_set_add_member(s, "grp", 3, "m", 1, 1, 0, 0), RB_E_NOSLOT);
    CHECK(ct_info(s).sets == 0); /* no half-made set left behind */
    CHECK_SEG(s);
    /* Drain three queues: the table GC frees every empty queue to make room. */
    size_t n;
    char buf[16];
    CHECK_OK(ct_recv1(s, "slot3", buf, sizeof buf, &n));
    CHECK_OK(ct_recv1(s, "slot5", buf, sizeof buf, &n));
    CHECK_OK(ct_recv1(s, "slot6", buf, sizeof buf, &n));
    CHECK_OK(ct_send(s, "slot8", "x", 1, 0, 0));
    CHECK_SEG(s);
    rb_info in = ct_info(s);
    CHECKF(in.queues == 6 && in.slots_used == 6, "queues %u used %u", in.queues, in.slots_used);
    /* A set plus its member take two rows: exactly what is left. */
    CHECK_OK(rb_set_add_member(s, "grp", 3, "m", 1, 1, 0, 0));
    CHECK(ct_info(s).slots_used == 8);
    CHECK_RC(rb_set_add_member(s, "grp", 3, "m2", 2, 2, 0, 0), RB_E_NOSLOT);
    CHECK_SEG(s);
    /* The queues that held records are untouched by the GC. */
    for (int i = 0; i < 8; i++) {
        if (i == 3 || i == 5 || i == 6)
            continue;
        snprintf(q, sizeof q, "slot%d", i);
        CHECK_OK(ct_recv1(s, q, buf, sizeof buf, &n));
        CHECK(n == strlen(q) && memcmp(buf, q, n) == 0);
    }
    CHECK_OK(ct_recv1(s, "slot8", buf, sizeof buf, &n));
    CHECK_OK(rb_set_discard(s, "grp", 3, "m", 1));
    CHECK(ct_info(s).sets == 0);
    CHECK_SEG(s);

    /* Grouped fan-out while the table is full: resolving the second member's
     * queue (pb!, missing) GCs the first one's (pa!, empty, no waiter) that
     * the walk had already resolved.  Each process must still get its own
     * record, in its own queue. */
    CHECK_OK(rb_flush(s));
    CHECK_OK(rb_set_add_member(s, "gc", 2, "pb!m2", 5, 3, 0, 0)); /* walked second */
    CHECK_OK(rb_set_add_member(s, "gc", 2, "pa!m1", 5, 3, 0, 0)); /* walked first */
    CHECK_OK(ct_send(s, "pa!", "x", 1, 0, 0));
    CHECK_OK(ct_recv1(s, "pa!", buf, sizeof buf, &n)); /* pa! exists, empty */
    for (int i = 0; ct_info(s).slots_used < 8; i++) { /* fill the table with empty queues */
        snprintf(q, sizeof q, "fill%d", i);
        CHECK_OK(ct_send(s, q, "x", 1, 0, 0));
        CHECK_OK(ct_recv1(s, q, buf, sizeof buf, &n));
    }
    uint32_t sent = 0, skipped = 0;
    CHECK_OK(rb_fanout_tagged(s, "gc", 2, "hi", 2, 0, 0, RB_FANOUT_GROUPED, &sent, &skipped));
    CHECK(sent == 2 && skipped == 0);
    CHECK_OK(ct_recv1(s, "pa!", buf, sizeof buf, &n));
    CHECK(n == 5 && memcmp(buf, "\x02m1hi", 5) == 0);
    CHECK_OK(ct_recv1(s, "pb!", buf, sizeof buf, &n));
    CHECK(n == 5 && memcmp(buf, "\x02m2hi", 5) == 0);
    CHECK_OK(rb_set_discard(s, "gc", 2, "pa!m1", 5));
    CHECK_OK(rb_set_discard(s, "gc", 2, "pb!m2", 5));
    CHECK_SEG(s);
    return s;
}

/* Parse a names blob into NUL-terminated strings joined by ',' (sorted
 * lexically so the comparison does not depend on table order). */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void blob_to_list(const char *blob, size_t len, uint32_t count, char *out, size_t cap)
{
    char names[64][RB_NAME_MAX + 1];
    char *ptrs[64];
    size_t off = 0;
    CHECK(count <= 64);
    for (uint32_t i = 0; i < count; i++) {
        CHECK(off + 2 <= len);
        uint32_t n = (uint32_t)(unsigned char)blob[off] | (uint32_t)(unsigned char)blob[off + 1] << 8;
        CHECK(off + 2 + n <= len && n <= RB_NAME_MAX);
        memcpy(names[i], blob + off + 2, n);
        names[i][n] = 0;
        ptrs[i] = names[i];
        off += 2 + n;
    }
    CHECK(off == len);
    qsort(ptrs, count, sizeof ptrs[0], cmp_str);
    out[0] = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (i)
            strncat(out, ",", cap - strlen(out) - 1);
        strncat(out, ptrs[i], cap - strlen(out) - 1);
    }
}

static void members_are(rb_seg *s, const char *set, const char *want)
{
    char blob[4096], got[4096];
    size_t len = 0;
    uint32_t count = 0;
    CHECK_OK(rb_set_members(s, set, strlen(set), blob, sizeof blob, &len, &count));
    blob_to_list(blob, len, count, got, sizeof got);
    CHECKF(strcmp(got, want) == 0, "set %s has members [%s], expected [%s]", set, got, want);
}

static void test_sets(rb_seg *s)
{
    CHECK_OK(rb_set_add_member(s, "g", 1, "q1", 2, 2, 0, 0));
    CHECK_OK(rb_set_add_member(s, "g", 1, "q2", 2, 2, 0, 0));
    CHECK_OK(rb_set_add_member(s, "g", 1, "q3", 2, 2, 0, 0));
    CHECK_OK(rb_set_add_member(s, "g", 1, "q1", 2, 2, 0, 0)); /* re-add: no duplicate */
    members_are(s, "g", "q1,q2,q3");
    CHECK_OK(rb_set_add_member(s, "h", 1, "q1", 2, 2, 0, 0)); /* same member name, another set */
    members_are(s, "h", "q1");
    rb_info in = ct_info(s);
    CHECK(in.sets == 2 && in.members == 4);

    /* Buffer too small: the needed size is reported. */
    char blob[64];
    size_t len = 0;
    uint32_t count = 0;
    CHECK_RC(rb_set_members(s, "g", 1, blob, 5, &len, &count), RB_E_BUFSMALL);
    CHECK(len == 3 * 4 && count == 3);
    /* A set that does not exist has no members. */
    CHECK_OK(rb_set_members(s, "nope", 4, blob, sizeof blob, &len, &count));
    CHECK(len == 0 && count == 0);

    CHECK_OK(rb_set_discard(s, "g", 1, "q2", 2));
    CHECK_OK(rb_set_discard(s, "g", 1, "q2", 2)); /* discarding again is fine */
    CHECK_OK(rb_set_discard(s, "nope", 4, "q2", 2));
    members_are(s, "g", "q1,q3");
    CHECK_SEG(s);

    /* Member expiry: an expired member is not listed and gets no fan-out;
     * re-adding refreshes the deadline. */
    CHECK_OK(rb_set_add_member(s, "g", 1, "q4", 2, 2, 0, rb_now_ns() + 20000000ULL));
    CHECK_OK(rb_set_add_member(s, "g", 1, "q5", 2, 2, 0, rb_now_ns() + 20000000ULL));
    CHECK_OK(rb_set_add_member(s, "g", 1, "q5", 2, 2, 0, 0));
    members_are(s, "g", "q1,q3,q4,q5");
    usleep(40000);
    members_are(s, "g", "q1,q3,q5");
    CHECK_OK(rb_set_add_member(s, "tmp", 3, "q9", 2, 2, 0, rb_now_ns() + 10000000ULL));
    usleep(20000);
    CHECK_OK(rb_recover(s, NULL)); /* sweeps expired members; the empty set goes too */
    in = ct_info(s);
    CHECKF(in.sets == 2 && in.members == 4, "sets %u members %u", in.sets, in.members);
    CHECK_SEG(s);

    /* Fan-out: q3 is full (capacity 1, one record), so it is skipped. */
    CHECK_OK(ct_send(s, "q3", "old", 3, 0, 1));
    uint32_t sent = 0, skipped = 0;
    CHECK_OK(rb_fanout_tagged(s, "g", 1, "hello", 5, 0, 0, RB_FANOUT_PLAIN, &sent, &skipped));
    CHECKF(sent == 2 && skipped == 1, "sent %u skipped %u", sent, skipped);
    char buf[16];
    size_t n;
    CHECK_OK(ct_recv1(s, "q1", buf, sizeof buf, &n));
    CHECK(n == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK_OK(ct_recv1(s, "q5", buf, sizeof buf, &n));
    CHECK(n == 5 && memcmp(buf, "hello", 5) == 0);
    CHECK_OK(ct_recv1(s, "q3", buf, sizeof buf, &n));
    CHECK(n == 3 && memcmp(buf, "old", 3) == 0);
    CHECK_RC(ct_recv1(s, "q3", buf, sizeof buf, &n), RB_E_EMPTY);
    CHECK_RC(ct_recv1(s, "q4", buf, sizeof buf, &n), RB_E_EMPTY);
    /* The fan-out's capacity applies to members without their own. */
    CHECK_OK(rb_fanout_tagged(s, "g", 1, "a", 1, 0, 1, RB_FANOUT_PLAIN, &sent, &skipped));
    CHECK(sent == 3 && skipped == 0); /* q3's own capacity (1) is free again */
    CHECK_OK(rb_fanout_tagged(s, "g", 1, "b", 1, 0, 1, RB_FANOUT_PLAIN, &sent, &skipped));
    CHECKF(sent == 0 && skipped == 3, "sent %u skipped %u", sent, skipped);
    CHECK(ct_qstats(s, "q1").full == 1);
    /* Fan-out to a set nobody is in. */
    CHECK_OK(rb_fanout_tagged(s, "nobody", 6, "x", 1, 0, 0, RB_FANOUT_PLAIN, &sent, &skipped));
    CHECK(sent == 0 && skipped == 0);
    CHECK_SEG(s);
    drain(s, "q1");
    drain(s, "q3");
    drain(s, "q5");

    /* Discarding the last member retires the set. */
    CHECK_OK(rb_set_discard(s, "h", 1, "q1", 2));
    members_are(s, "h", "");
    CHECK_OK(rb_set_discard(s, "g", 1, "q1", 2));
    CHECK_OK(rb_set_discard(s, "g", 1, "q3", 2));
    CHECK_OK(rb_set_discard(s, "g", 1, "q5", 2));
    in = ct_info(s);
    CHECK(in.sets == 0 && in.members == 0);
    CHECK_SEG(s);
}

/* rb_send_tagged: the core writes the single frame [len][tag] before the
 * payload; tags are 0..RB_FRAME_TAG_MAX bytes. */
static void test_send_tagged(rb_seg *s)
{
    char buf[256], tag[RB_FRAME_TAG_MAX + 1];
    size_t n;
    CHECK_OK(rb_send_tagged(s, "tq!", 3, "abc", 3, "\x81\xa1k", 3, 0, 0));
    CHECK_OK(ct_recv1(s, "tq!", buf, sizeof buf, &n));
    CHECK(n == 1 + 3 + 3 && memcmp(buf, "\x03" "abc\x81\xa1" "k", 7) == 0);
    CHECK_OK(rb_send_tagged(s, "tq!", 3, NULL, 0, "p", 1, 0, 0)); /* empty frame */
    CHECK_OK(ct_recv1(s, "tq!", buf, sizeof buf, &n));
    CHECK(n == 2 && buf[0] == 0 && buf[1] == 'p');
    memset(tag, 't', sizeof tag);
    CHECK_OK(rb_send_tagged(s, "tq!", 3, tag, RB_FRAME_TAG_MAX, "p", 1, 0, 0));
    CHECK_OK(ct_recv1(s, "tq!", buf, sizeof buf, &n));
    CHECK(n == 2 + RB_FRAME_TAG_MAX && (unsigned char)buf[0] == RB_FRAME_TAG_MAX);
    CHECK_RC(rb_send_tagged(s, "tq!", 3, tag, RB_FRAME_TAG_MAX + 1, "p", 1, 0, 0), RB_E_INVAL);
    CHECK_RC(rb_send_tagged(s, "tq!", 3, NULL, 2, "p", 1, 0, 0), RB_E_INVAL);
    /* The frame counts against max_record. */
    uint32_t max = ct_info(s).max_record;
    memset(big_in, 'b', max);
    CHECK_RC(rb_send_tagged(s, "tq!", 3, "ab", 2, big_in, max - 2, 0, 0), RB_E_TOOLARGE);
    CHECK_OK(rb_send_tagged(s, "tq!", 3, "ab", 2, big_in, max - 3, 0, 0));
    drain(s, "tq!");
    CHECK_SEG(s);
}

/* Routed members: a member names a queue (its first queue_len bytes) plus
 * a tag; a tagged fan-out prefixes each copy with [tag length][tag]. */
static void test_routed(rb_seg *s)
{
    CHECK_OK(rb_set_add_member(s, "rg", 2, "rq1.tagA", 8, 3, 0, 0));
    CHECK_OK(rb_set_add_member(s, "rg", 2, "rq1.tagBB", 9, 3, 0, 0));
    CHECK_OK(rb_set_add_member(s, "rg", 2, "rq2", 3, 3, 0, 0)); /* no tag */
    CHECK_RC(rb_set_add_member(s, "rg", 2, "rq3", 3, 0, 0, 0), RB_E_INVAL);
    CHECK_RC(rb_set_add_member(s, "rg", 2, "rq3", 3, 4, 0, 0), RB_E_INVAL);
    members_are(s, "rg", "rq1.tagA,rq1.tagBB,rq2");

    uint32_t sent = 0, skipped = 0;
    CHECK_OK(rb_fanout_tagged(s, "rg", 2, "hello", 5, 0, 0, 1, &sent, &skipped));
    CHECK(sent == 3 && skipped == 0);
    CHECK(ct_qstats(s, "rq1").pending == 2 && ct_qstats(s, "rq2").pending == 1);
    CHECK(ct_qstats(s, "rq1.tagA").pending == 0); /* no queue of the member's full name */
    char buf[64];
    size_t n;
    int seen_a = 0, seen_b = 0;
    for (int i = 0; i < 2; i++) {
        CHECK_OK(ct_recv1(s, "rq1", buf, sizeof buf, &n));
        if (n == 1 + 5 + 5 && memcmp(buf, "\x05.tagAhello", 11) == 0)
            seen_a++;
        else if (n == 1 + 6 + 5 && memcmp(buf, "\x06.tagBBhello", 12) == 0)
            seen_b++;
        else
            CHECKF(0, "unexpected tagged record of %zu bytes", n);
    }
    CHECK(seen_a == 1 && seen_b == 1);
    CHECK_OK(ct_recv1(s, "rq2", buf, sizeof buf, &n));
    CHECK(n == 6 && buf[0] == 0 && memcmp(buf + 1, "hello", 5) == 0);

    /* Untagged fan-out to routed members: plain copies, one per member. */
    CHECK_OK(rb_fanout_tagged(s, "rg", 2, "hi", 2, 0, 0, RB_FANOUT_PLAIN, &sent, &skipped));
    CHECK(sent == 3);
    for (int i = 0; i < 2; i++) {
        CHECK_OK(ct_recv1(s, "rq1", buf, sizeof buf, &n));
        CHECK(n == 2 && memcmp(buf, "hi", 2) == 0);
    }
    CHECK_OK(ct_recv1(s, "rq2", buf, sizeof buf, &n));
    CHECK(n == 2);

    /* Re-adding a member with another queue_len re-routes it. */
    CHECK_OK(rb_set_add_member(s, "rg", 2, "rq1.tagA", 8, 8, 0, 0));
    CHECK_OK(rb_fanout_tagged(s, "rg", 2, "x", 1, 0, 0, 1, &sent, &skipped));
    CHECK(sent == 3 && ct_qstats(s, "rq1.tagA").pending == 1 && ct_qstats(s, "rq1").pending == 1);
    CHECK_OK(ct_recv1(s, "rq1.tagA", buf, sizeof buf, &n));
    CHECK(n == 2 && buf[0] == 0 && buf[1] == 'x');
    drain(s, "rq1");
    drain(s, "rq2");

    /* A tagged fan-out reserves room for the largest tag frame. */
    uint32_t max = ct_info(s).max_record;
    memset(big_in, 'b', max);
    CHECK_RC(rb_fanout_tagged(s, "rg", 2, big_in, max - 100, 0, 0, 1, &sent, &skipped),
             RB_E_TOOLARGE);
    CHECK_OK(rb_fanout_tagged(s, "rg", 2, big_in, max - 256, 0, 0, 1, &sent, &skipped));
    CHECK(sent == 3);
    CHECK_OK(ct_recv1(s, "rq1", big_out, sizeof big_out, &n));
    CHECK(n == 1 + 6 + max - 256);
    drain(s, "rq1.tagA");
    drain(s, "rq2");

    CHECK_OK(rb_set_discard(s, "rg", 2, "rq1.tagA", 8));
    CHECK_OK(rb_set_discard(s, "rg", 2, "rq1.tagBB", 9));
    CHECK_OK(rb_set_discard(s, "rg", 2, "rq2", 3));
    CHECK(ct_info(s).sets == 0);
    CHECK(ct_info(s).cells_free == ct_info(s).cells_total);
    CHECK_SEG(s);
}

/* rb_send_batch / rb_receive_batch: many records in one lock hold. */
static void test_batches(rb_seg *s)
{
    const uint32_t lens[5] = {0, 1, 224, 225, 5000};
    size_t total = 0;
    for (int i = 0; i < 5; i++)
        total += lens[i];
    fill_pattern(big_in, total, 11);
    uint32_t sent = 99;
    CHECK_OK(rb_send_batch(s, "ba", 2, big_in, lens, 5, 0, 0, &sent));
    CHECK(sent == 5 && ct_qstats(s, "ba").pending == 5);
    CHECK_OK(rb_send_batch(s, "ba", 2, NULL, NULL, 0, 0, 0, &sent));
    CHECK(sent == 0);
    /* A record over the limit refuses the whole batch up front. */
    const uint32_t bad[2] = {1, ct_info(s).max_record + 1};
    CHECK_RC(rb_send_batch(s, "ba", 2, big_in, bad, 2, 0, 0, &sent), RB_E_TOOLARGE);
    CHECK(sent == 0 && ct_qstats(s, "ba").pending == 5);
    /* At capacity, a prefix goes in and the refusal is reported. */
    CHECK_RC(rb_send_batch(s, "bcap", 4, big_in, lens, 5, 0, 3, &sent), RB_E_FULL);
    CHECK(sent == 3 && ct_qstats(s, "bcap").pending == 3);
    CHECK_RC(rb_send_batch(s, "ba", 2, big_in, lens, 1, 0, 0, NULL), RB_E_INVAL);

    /* Receive across two queues: oldest first, lens and queue indexes. */
    char blob[32];
    const char *names[2] = {"bcap", "ba"};
    size_t bl = ct_blob(blob, sizeof blob, names, 2), len = 0;
    uint32_t rl[16], ri[16], got = 0;
    CHECK_OK(rb_receive_batch(s, blob, bl, 2, big_out, sizeof big_out, rl, ri, 16, &got, &len, 0, 0));
    CHECKF(got == 8, "got %u", got);
    size_t off = 0, in_off = 0;
    for (uint32_t i = 0; i < 8; i++) {
        uint32_t k = i < 5 ? i : i - 5; /* "ba" was filled first, then "bcap" */
        CHECKF(rl[i] == lens[k] && ri[i] == (i < 5 ? 1u : 0u), "record %u: len %u idx %u", i,
               rl[i], ri[i]);
        if (i == 5)
            in_off = 0;
        CHECK(memcmp(big_out + off, big_in + in_off, rl[i]) == 0);
        off += rl[i];
        in_off += rl[i];
    }
    /* A batch ends at max or where the next record does not fit. */
    CHECK_OK(rb_send_batch(s, "ba", 2, big_in, lens, 5, 0, 0, &sent));
    CHECK_OK(rb_receive_batch(s, blob, bl, 2, big_out, sizeof big_out, rl, ri, 2, &got, &len, 0, 0));
    CHECK(got == 2 && rl[0] == 0 && rl[1] == 1);
    CHECK_OK(rb_receive_batch(s, blob, bl, 2, big_out, 224 + 225, rl, ri, 16, &got, &len, 0, 0));
    CHECK(got == 2 && rl[0] == 224 && rl[1] == 225);
    len = 0;
    CHECK_RC(rb_receive_batch(s, blob, bl, 2, big_out, 100, rl, ri, 16, &got, &len, 0, 0),
             RB_E_BUFSMALL);
    CHECK(got == 0 && len == 5000 && ct_qstats(s, "ba").pending == 1);
    CHECK_OK(rb_receive_batch(s, blob, bl, 2, big_out, 5000, rl, ri, 16, &got, &len, 0, 0));
    CHECK(got == 1 && rl[0] == 5000);
    CHECK_RC(rb_receive_batch(s, blob, bl, 2, big_out, 5000, rl, ri, 16, &got, &len, 10000000, 0),
             RB_E_EMPTY);
    CHECK(got == 0);
    CHECK_RC(rb_receive_batch(s, blob, bl, 2, big_out, 5000, rl, ri, 0, &got, &len, 0, 0),
             RB_E_INVAL);

    /* A member that states its queue's capacity for fan-out copies. */
    CHECK_OK(rb_set_add_member(s, "bg", 2, "bm1", 3, 3, 2, 0));
    CHECK_OK(rb_set_add_member(s, "bg", 2, "bm2", 3, 3, 0, 0));
    uint32_t skipped = 0;
    for (int i = 0; i < 3; i++)
        CHECK_OK(rb_fanout_tagged(s, "bg", 2, "f", 1, 0, 0, RB_FANOUT_PLAIN, &sent, &skipped));
    CHECK(ct_qstats(s, "bm1").pending == 2 && ct_qstats(s, "bm1").capacity == 2);
    CHECK(ct_qstats(s, "bm2").pending == 3);
    CHECK(sent == 1 && skipped == 1);
    drain(s, "bm1");
    drain(s, "bm2");
    CHECK_OK(rb_set_discard(s, "bg", 2, "bm1", 3));
    CHECK_OK(rb_set_discard(s, "bg", 2, "bm2", 3));
    CHECK(ct_info(s).cells_free == ct_info(s).cells_total);
    CHECK_SEG(s);
}

/* One queue listed twice (or more) in a receive. */
/* Grouped fan-out (RB_FANOUT_GROUPED): the members sharing a queue get one
 * record with all their tags, in set order; a lone member gets the single
 * frame; a queue's members are split over records that fit max_record;
 * capacity is checked per record; tags of 127+ bytes are skipped. */
static void test_grouped(rb_seg *s)
{
    CHECK_OK(rb_set_add_member(s, "gg", 2, "gq!a", 4, 3, 0, 0));
    CHECK_OK(rb_set_add_member(s, "gg", 2, "gx!z", 4, 3, 0, 0));
    CHECK_OK(rb_set_add_member(s, "gg", 2, "gq!bb", 5, 3, 0, 0));
    CHECK_OK(rb_set_add_member(s, "gg", 2, "gsolo", 5, 5, 0, 0));
    CHECK_OK(rb_set_add_member(s, "gg", 2, "gq!c", 4, 3, 0, 0));
    uint32_t sent = 0, skipped = 0;
    CHECK_OK(rb_fanout_tagged(s, "gg", 2, "hey", 3, 0, 0, RB_FANOUT_GROUPED, &sent, &skipped));
    CHECK(sent == 5 && skipped == 0);
    CHECK(ct_qstats(s, "gq!").pending == 1); /* one record for three members */
    char buf[256];
    size_t n;
    CHECK_OK(ct_recv1(s, "gq!", buf, sizeof buf, &n));
    /* The member list is newest first: c, bb, a. */
    static const char want[] = "\x7f\x03\x00\x01" "c" "\x02" "bb" "\x01" "a" "hey";
    CHECK(n == sizeof want - 1 && memcmp(buf, want, n) == 0);
    CHECK_OK(ct_recv1(s, "gx!", buf, sizeof buf, &n));
    CHECK(n == 5 && memcmp(buf, "\x01zhey", 5) == 0); /* alone: the single frame */
    CHECK_OK(ct_recv1(s, "gsolo", buf, sizeof buf, &n));
    CHECK(n == 4 && buf[0] == 0 && memcmp(buf + 1, "hey", 3) == 0);

    /* Capacity is checked per record (the first member's, else the queue's). */
    CHECK_OK(ct_send(s, "gq!", "fill", 4, 0, 0));
    CHECK_OK(rb_fanout_tagged(s, "gg", 2, "m", 1, 0, 1, RB_FANOUT_GROUPED, &sent, &skipped));
    CHECK(sent == 2 && skipped == 3); /* gq! full: its three members skipped together */
    drain(s, "gq!");
    drain(s, "gx!");
    drain(s, "gsolo");

    /* Split: 40 members with 60-byte tags do not fit one record. */
    uint32_t max = ct_info(s).max_record;
    char member[80];
    for (int i = 0; i < 40; i++) {
        int len = snprintf(member, sizeof member, "sp!%02d", i);
        memset(member + len, 't', 3 + 60 - (size_t)len); /* "sp!NN" + t...: a 60-byte tag */
        CHECK_OK(rb_set_add_member(s, "gs", 2, member, 3 + 60, 3, 0, 0));
    }
    uint32_t payload = max - 1000; /* room for ~16 tags of 61 bytes per record */
    memset(big_in, 'p', payload);
    CHECK_OK(rb_fanout_tagged(s, "gs", 2, big_in, payload, 0, 0, RB_FANOUT_GROUPED, &sent,
                              &skipped));
    CHECK(sent == 40 && skipped == 0);
    uint32_t records = (uint32_t)ct_qstats(s, "sp!").pending, tags = 0;
    CHECK(records >= 3 && records <= 4);
    for (uint32_t r = 0; r < records; r++) {
        CHECK_OK(ct_recv1(s, "sp!", big_out, sizeof big_out, &n));
        CHECK(n <= max && (unsigned char)big_out[0] == RB_FRAME_GROUP_MARK);
        uint32_t k = (uint8_t)big_out[1] | (uint32_t)(uint8_t)big_out[2] << 8;
        size_t off = 3;
        for (uint32_t t = 0; t < k; t++) {
            CHECK((uint8_t)big_out[off] == 60 && big_out[off + 1] >= '0' && big_out[off + 1] <= '3');
            off += 1 + 60;
        }
        CHECK(n == off + payload && big_out[off] == 'p');
        tags += k;
    }
    CHECK(tags == 40);

    /* The record format: a tag of RB_FRAME_TAG_MAX + 1 (0x7f, the group
     * mark) bytes cannot be framed, so the member is refused when added;
     * one of RB_FRAME_TAG_MAX bytes is framed, alone or grouped. */
    char longm[140] = "lq!";
    memset(longm + 3, 'L', RB_FRAME_TAG_MAX + 1);
    CHECK_RC(rb_set_add_member(s, "gl", 2, longm, 3 + RB_FRAME_TAG_MAX + 1, 3, 0, 0),
             RB_E_INVAL);
    CHECK_OK(rb_set_add_member(s, "gl", 2, longm, 3 + RB_FRAME_TAG_MAX, 3, 0, 0));
    CHECK_OK(rb_fanout_tagged(s, "gl", 2, "x", 1, 0, 0, RB_FANOUT_GROUPED, &sent, &skipped));
    CHECK(sent == 1 && skipped == 0);
    CHECK_OK(ct_recv1(s, "lq!", big_out, sizeof big_out, &n));
    CHECK(n == 1 + RB_FRAME_TAG_MAX + 1 && (unsigned char)big_out[0] == RB_FRAME_TAG_MAX &&
          big_out[n - 1] == 'x');
    CHECK_OK(rb_set_add_member(s, "gl", 2, "lq!ok", 5, 3, 0, 0));
    CHECK_OK(rb_fanout_tagged(s, "gl", 2, "y", 1, 0, 0, RB_FANOUT_GROUPED, &sent, &skipped));
    CHECK(sent == 2 && skipped == 0);
    CHECK_OK(ct_recv1(s, "lq!", big_out, sizeof big_out, &n));
    CHECK((unsigned char)big_out[0] == RB_FRAME_GROUP_MARK && big_out[1] == 2 && big_out[2] == 0);
    drain(s, "lq!");
    CHECK_OK(rb_flush(s));
    CHECK(ct_info(s).cells_free == ct_info(s).cells_total);
    CHECK_SEG(s);
}

static void test_duplicate_names(rb_seg *s)
{
    char blob[64], buf[8];
    const char *names[3] = {"dup", "other", "dup"};
    size_t bl = ct_blob(blob, sizeof blob, names, 3), n;
    uint32_t idx = 99;
    CHECK_OK(ct_send(s, "dup", "d", 1, 0, 0));
    CHECK_OK(rb_receive(s, blob, bl, 3, buf, sizeof buf, &n, &idx, 0, 0));
    CHECK(n == 1 && buf[0] == 'd' && idx == 0);
    CHECK_RC(rb_receive(s, blob, bl, 3, buf, sizeof buf, &n, &idx, 10000000, 0), RB_E_EMPTY);
    CHECK(ct_info(s).waiters_used == 0 && ct_qstats(s, "dup").waiters == 0);
    CHECK_SEG(s);
}

static void test_list_stats_flush(rb_seg *s)
{
    CHECK_OK(rb_flush(s));
    CHECK_OK(ct_send(s, "la", "1", 1, 0, 0));
    CHECK_OK(ct_send(s, "lb", "22", 2, 0, 3));
    CHECK_OK(ct_send(s, "lb", "33", 2, 0, 3));
    CHECK_OK(rb_set_add_member(s, "sx", 2, "la", 2, 2, 0, 0));
    char blob[1024], got[1024];
    size_t len;
    uint32_t count;
    CHECK_OK(rb_list_names(s, RB_KIND_QUEUE, blob, sizeof blob, &len, &count));
    blob_to_list(blob, len, count, got, sizeof got);
    CHECKF(strcmp(got, "la,lb") == 0, "queues [%s]", got);
    CHECK_OK(rb_list_names(s, RB_KIND_SET, blob, sizeof blob, &len, &count));
    blob_to_list(blob, len, count, got, sizeof got);
    CHECKF(strcmp(got, "sx") == 0, "sets [%s]", got);
    CHECK_RC(rb_list_names(s, RB_KIND_QUEUE, blob, 3, &len, &count), RB_E_BUFSMALL);
    CHECK(len == 8 && count == 2);
    CHECK_RC(rb_list_names(s, 7, blob, sizeof blob, &len, &count), RB_E_INVAL);

    usleep(2000);
    rb_queue_stats st = ct_qstats(s, "lb");
    CHECK(st.sent == 2 && st.pending == 2 && st.capacity == 3 && st.full == 0);
    CHECKF(st.oldest_age_ns >= 2000000ULL && st.oldest_age_ns < 10000000000ULL, "age %llu",
           (unsigned long long)st.oldest_age_ns);
    st = ct_qstats(s, "never-seen");
    CHECK(st.sent == 0 && st.pending == 0 && st.oldest_age_ns == 0);
    CHECK_OK(ct_send(s, "lb", "44", 2, 0, 0));
    CHECK_RC(ct_send(s, "lb", "55", 2, 0, 0), RB_E_FULL);
    size_t n;
    char buf[8];
    CHECK_OK(ct_recv1(s, "la", buf, sizeof buf, &n));
    rb_info in = ct_info(s);
    CHECK(in.sent == 4 && in.received == 1 && in.full == 1 && in.expired == 0);
    CHECK(in.queues == 2 && in.sets == 1 && in.members == 1);

    CHECK_OK(rb_stats_reset(s));
    in = ct_info(s);
    CHECK(in.sent == 0 && in.received == 0 && in.full == 0 && in.expired == 0);
    st = ct_qstats(s, "lb");
    CHECK(st.sent == 0 && st.full == 0 && st.pending == 3 && st.capacity == 3);
    CHECK_SEG(s);

    CHECK_OK(rb_flush(s));
    in = ct_info(s);
    CHECKF(in.queues == 0 && in.sets == 0 && in.members == 0 && in.slots_used == 0,
           "after flush: %u queues %u sets %u members %u used", in.queues, in.sets, in.members,
           in.slots_used);
    CHECK(in.cells_free == in.cells_total && in.sent == 0);
    CHECK_RC(ct_recv1(s, "lb", buf, sizeof buf, &n), RB_E_EMPTY);
    CHECK(ct_qstats(s, "lb").capacity == 0);
    CHECK_SEG(s);
}

/* Corrupt the identity fields of the file directly and expect refusal.
 * ringbuf.h: the header starts with RB_MAGIC (u64 at offset 0) followed by
 * the layout version (u32 at offset 8). */
static void test_layout_refusal(rb_seg *s)
{
    rb_close(s);
    int fd = open(ct_path, O_RDWR);
    CHECK(fd >= 0);
    uint64_t good_magic, bad_magic = 0x1122334455667788ULL;
    uint32_t good_version, bad_version = 99;
    CHECK(pread(fd, &good_magic, 8, 0) == 8 && good_magic == RB_MAGIC);
    CHECK(pread(fd, &good_version, 4, 8) == 4 && good_version == RB_LAYOUT_VERSION);

    rb_seg *t = NULL;
    rb_options o = {0};
    CHECK(pwrite(fd, &bad_magic, 8, 0) == 8);
    CHECK_RC(rb_open(ct_prefix, &o, &t), RB_E_MAGIC);
    CHECKF(strstr(rb_last_error(), "0x1122334455667788") && strstr(rb_last_error(), "0x52494e47425546"),
           "message does not name both magics");
    o.create = 1; /* create-if-absent must not overwrite a foreign file either */
    CHECK_RC(rb_open(ct_prefix, &o, &t), RB_E_MAGIC);
    rb_info in;
    CHECK_RC(rb_stat_segment(ct_prefix, &in), RB_E_MAGIC);
    CHECK(pwrite(fd, &good_magic, 8, 0) == 8);

    CHECK(pwrite(fd, &bad_version, 4, 8) == 4);
    CHECK_RC(rb_open(ct_prefix, &o, &t), RB_E_VERSION);
    char this_version[32];
    snprintf(this_version, sizeof this_version, "version %d", RB_LAYOUT_VERSION);
    CHECKF(strstr(rb_last_error(), "version 99") && strstr(rb_last_error(), this_version),
           "message does not name both versions");
    CHECK(pwrite(fd, &good_version, 4, 8) == 4);

    /* Another record format (same layout): refused the same way, both named. */
    uint32_t good_format, bad_format = 77;
    CHECK(pread(fd, &good_format, 4, 12) == 4 && good_format == RB_RECORD_FORMAT);
    CHECK(pwrite(fd, &bad_format, 4, 12) == 4);
    CHECK_RC(rb_open(ct_prefix, &o, &t), RB_E_VERSION);
    char this_format[32];
    snprintf(this_format, sizeof this_format, "format %d", RB_RECORD_FORMAT);
    CHECKF(strstr(rb_last_error(), "record format 77") && strstr(rb_last_error(), this_format),
           "message does not name both record formats: %s", rb_last_error());
    CHECK(pwrite(fd, &good_format, 4, 12) == 4);

    /* Restored, it opens again. */
    CHECK_OK(rb_open(ct_prefix, &o, &t));
    CHECK_SEG(t);
    rb_close(t);

    /* A file too short to hold a header. */
    CHECK(ftruncate(fd, 16) == 0);
    CHECK_RC(rb_open(ct_prefix, &o, &t), RB_E_MAGIC);
    close(fd);
    /* An unrecognised segment can still be removed. */
    CHECK_OK(rb_unlink(ct_prefix, 0));
    CHECK_RC(rb_unlink(ct_prefix, 0), RB_E_NOTFOUND);
}

/* Trust on attach: permission bits beyond 0777 are refused; a segment
 * wider than the configured mode, or owned by another uid (root only: it
 * needs chown), is refused with RB_E_TRUST naming owner and mode, and
 * accepted once the options widen the rule. */
static void test_trust(void)
{
    char prefix[160], path[200];
    snprintf(prefix, sizeof prefix, "%sT", ct_prefix);
    snprintf(path, sizeof path, "/dev/shm/rbuf.%s", prefix);
    rb_options o = {.size = 1 << 20, .slots = 64, .waiters = 8, .max_record = 4096, .create = 1};
    rb_seg *s = NULL;
    o.mode = 07777;
    CHECK_RC(rb_open(prefix, &o, &s), RB_E_INVAL);
    CHECK(strstr(rb_last_error(), "mode 07777 is out of range") != NULL);
    CHECK(access(path, F_OK) != 0);
    o.mode = 0600;
    CHECK_OK(rb_open(prefix, &o, &s));
    rb_close(s);

    CHECK(chmod(path, 0644) == 0);
    rb_options attach = {.create = 0};
    CHECK_RC(rb_open(prefix, &attach, &s), RB_E_TRUST);
    CHECKF(strstr(rb_last_error(), "has mode 0644, which grants more than the configured mode "
                                   "0600") != NULL, "%s", rb_last_error());
    attach.mode = 0644;
    CHECK_OK(rb_open(prefix, &attach, &s));
    rb_close(s);

    if (geteuid() == 0) {
        CHECK(chown(path, 65534, 65534) == 0);
        CHECK_RC(rb_open(prefix, &attach, &s), RB_E_TRUST);
        CHECKF(strstr(rb_last_error(), "is owned by uid 65534") != NULL &&
                   strstr(rb_last_error(), "add 65534 to trusted_uids") != NULL,
               "%s", rb_last_error());
        uint32_t uids[1] = {65534};
        attach.trusted_uids = uids;
        attach.n_trusted = 1;
        CHECK_OK(rb_open(prefix, &attach, &s));
        rb_close(s);
        attach.n_trusted = RB_TRUSTED_MAX + 1;
        CHECK_RC(rb_open(prefix, &attach, &s), RB_E_INVAL);
    }
    CHECK_OK(rb_unlink(prefix, 0));
}

/* A live lock holder that does not run (SIGSTOP) makes callers give up
 * after lock_timeout with RB_E_LOCKED naming its pid and state, instead of
 * waiting forever; after SIGCONT everything works again. */
static void test_lock_timeout(rb_seg *s)
{
    int ready[2];
    CHECK(pipe(ready) == 0);
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (rb_debug_lock(s) != RB_OK)
            _exit(3);
        if (write(ready[1], "L", 1) != 1)
            _exit(4);
        raise(SIGSTOP); /* stopped while holding the lock */
        rb_debug_unlock(s);
        _exit(0);
    }
    char c;
    CHECK(read(ready[0], &c, 1) == 1);
    int status;
    CHECK(waitpid(child, &status, WUNTRACED) == child && WIFSTOPPED(status));

    rb_options o = {.create = 0, .lock_timeout_ns = 100000000ULL}; /* 0.1 s */
    rb_seg *t = NULL;
    CHECK_OK(rb_open(ct_prefix, &o, &t));
    char want[64], state[40];
    snprintf(want, sizeof want, "held by pid %d (stopped)", (int)child);
    CHECK_RC(ct_send(t, "lk", "x", 1, 0, 0), RB_E_LOCKED);
    CHECKF(strstr(rb_last_error(), want) != NULL, "%s", rb_last_error());
    CHECK(rb_last_lock_holder(state, sizeof state) == (uint32_t)child);
    CHECK(strcmp(state, "stopped") == 0);
    rb_info info;
    CHECK_RC(rb_info_get(t, &info), RB_E_LOCKED);

    CHECK(kill(child, SIGCONT) == 0);
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK_OK(ct_send(t, "lk", "x", 1, 0, 0));
    char buf[8];
    size_t len;
    CHECK_OK(ct_recv1(s, "lk", buf, sizeof buf, &len));
    CHECK_SEG(t);
    rb_close(t);
    close(ready[0]);
    close(ready[1]);
}

int main(void)
{
    ct_init("basic");
    test_open_attach();
    test_concurrent_create();
    rb_seg *s = ct_open(NULL);
    test_sizes(s);
    test_names(s);
    test_bufsmall(s);
    test_capacity(s);
    test_expiry(s);
    test_sets(s);
    test_routed(s);
    test_send_tagged(s);
    test_grouped(s);
    test_duplicate_names(s);
    test_batches(s);
    test_list_stats_flush(s);
    test_trust();
    test_lock_timeout(s);
    s = test_nomem(s);
    s = test_noslot(s);
    test_layout_refusal(s);
    ct_done("test_basic");
    return 0;
}
