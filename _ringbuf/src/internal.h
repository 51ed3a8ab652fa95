/*
 * internal.h - the on-segment layout and the helpers shared by the .c files.
 *
 * Theory of operation
 * -------------------
 * A segment is one mmap'd POSIX shm file laid out as
 *
 *     [rb_header][slots: slot_count x rb_slot][index: index_size x u32]
 *     [waiters: waiter_count x rb_waiter][cells: cell_count x RB_CELL_SIZE]
 *
 * Slots are the rows of a name table.  A slot is FREE, a QUEUE (a FIFO of
 * records), a SET (a group) or a MEMBER (one member of one set, with its own
 * deadline).  The index is an open-addressing hash from (kind, name) - or
 * (set id, member name) for members - to slot ids.
 *
 * A record is a chain of cells.  Its first cell starts with an rb_rec header
 * (next record of the queue, length, deadline, enqueue time); the payload
 * follows, continuing in the cells linked by rb_cell.next.  The same cells
 * also hold the queue lists of waiter rows that watch more than
 * RB_WAIT_MAX queues (waitlist.c): a cell is free exactly when it is
 * reachable neither from a queue nor from a live waiter row.
 *
 * PRIMARY vs DERIVED data.  Everything is mutated under the one robust
 * mutex.  The data is split in two classes:
 *
 *   primary - slot.state, slot.name/name_len/hash, slot.head (a queue's
 *             first record), rb_rec.next (the link from a record to the
 *             next one), the record bytes, member.set_id/deadline,
 *             queue.capacity, waiter.pid, kind and the waiter's queue list
 *             (inline, or the chain of list cells of a long list), and the
 *             statistics counters.
 *   derived - the cell free list and bump mark, the slot free list and bump
 *             mark, the hash index, queue.tail and queue.count, set member
 *             lists and counts, queue.waiters and queue.fd_watchers, and the
 *             waiter-table high-water mark (header.waiter_hi).
 *
 * A process that dies holding the mutex (SIGKILL at any instruction) makes
 * the next locker get EOWNERDEAD; it then runs rb_repair(), which keeps the
 * primary data and rebuilds every derived structure from it.  For that to
 * be sound, every change of primary data is ordered so that each single
 * store leaves a state the repair can read:
 *
 *   - a record is fully written (cells, header) BEFORE the release store
 *     that links it (queue.head or the previous record's next);
 *   - a slot's name and fields are written BEFORE the release store of its
 *     state; a slot is retired by storing state = FREE first;
 *   - cells and slots not reachable from primary data are free, so a
 *     half-built record or slot of a dead process is reclaimed, never
 *     leaked; a record unlinked but not yet pushed on the free list is
 *     reclaimed the same way.
 *
 * The release stores are there for the compiler as much as for the CPU:
 * without them the compiler may sink the payload copy below the link and a
 * SIGKILL between the two would publish garbage.
 */
#ifndef RINGBUF_INTERNAL_H
#define RINGBUF_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#include "ringbuf.h"

#define RB_NIL 0xFFFFFFFFu
#define RB_INDEX_EMPTY 0u         /* index entries hold slot id + 1 */
#define RB_INDEX_TOMB 0xFFFFFFFFu /* a deleted index entry */

enum rb_slot_state {
    RB_SLOT_FREE = 0, /* zero so that a fresh (zero-filled) segment is all free */
    RB_SLOT_QUEUE = 1,
    RB_SLOT_SET = 2,
    RB_SLOT_MEMBER = 3,
};

/* The first bytes of a record's first cell. */
typedef struct rb_rec {
    uint32_t next;     /* PRIMARY: first cell of the next record in the queue, or RB_NIL */
    uint32_t len;      /* PRIMARY: payload bytes */
    uint64_t deadline; /* PRIMARY: CLOCK_MONOTONIC ns after which it is dropped, 0 = never */
    uint64_t enq_ns;   /* PRIMARY: CLOCK_MONOTONIC ns of the send, for age statistics and fairness */
} rb_rec;

typedef struct rb_cell {
    uint32_t next; /* next cell of the same record, or RB_NIL; free-list link when free (derived) */
    uint32_t pad;  /* records: unused; waiter id lists: the ids held by this cell */
    unsigned char data[RB_CELL_SIZE - 8];
} rb_cell;

#define RB_CELL_PAYLOAD (RB_CELL_SIZE - 8)
#define RB_FIRST_PAYLOAD (RB_CELL_PAYLOAD - sizeof(rb_rec))

typedef struct rb_slot {
    /* --- line 0, read-mostly: what every lookup of every process reads.
     * Kept apart from the queue's hot fields below so that a producer and
     * a consumer on two cores do not invalidate each other's lookups. --- */
    uint32_t state;    /* PRIMARY: rb_slot_state; the commit point of a slot (release store) */
    uint32_t name_len; /* PRIMARY: 1..RB_NAME_MAX */
    uint64_t hash;     /* PRIMARY: hash of (kind, name) or (set id, name), fixed while used */
    uint32_t next_free; /* DERIVED: slot free-list link while FREE */
    uint32_t capacity; /* PRIMARY: QUEUE: the capacity the last send stated, 0 = unlimited;
                        * MEMBER: the capacity fan-out copies for this member state
                        * (0 = the queue's stored one, else the fan-out's argument) */
    uint32_t waiters;  /* DERIVED: waiter-table rows watching this queue */
    /* SET */
    uint32_t first_member; /* DERIVED: head of the set's member list */
    uint32_t member_count; /* DERIVED */
    /* MEMBER */
    uint32_t set_id;      /* PRIMARY: the SET slot this member belongs to */
    uint32_t next_member; /* DERIVED */
    uint32_t prev_member; /* DERIVED */
    uint32_t queue_len;   /* PRIMARY: the member's queue is name[0:queue_len]; the rest of the
                           * name is the member's tag (see rb_set_add_routed) */
    uint32_t fd_watchers; /* DERIVED: QUEUE: FD-watch and BELL rows (a subset of `waiters`)
                           * watching it, the rows a sender finds by scanning the waiter table:
                           * a send scans for armed rows only when non-zero */
    uint64_t deadline;    /* PRIMARY: membership deadline, 0 = never */
    char name[RB_NAME_MAX];
    /* --- the queue's hot line: written by every send and receive --- */
    uint32_t head;     /* PRIMARY: first cell of the oldest record, RB_NIL if empty */
    uint32_t tail;     /* DERIVED: first cell of the newest record, RB_NIL if empty */
    uint32_t count;    /* DERIVED: records in the queue (expired ones not yet swept included) */
    uint32_t seq;      /* futex word: bumped (release) on every enqueue; waiters sleep on it */
    uint64_t expiry_hint; /* DERIVED: <= the earliest deadline of any record queued (0 = no
                           * deadline pending).  Only ever too early, never too late, so a
                           * sweep is skipped exactly when it could not drop anything;
                           * the repair sets 1 ("sweep to find out"). */
    uint64_t sent;     /* statistics: records enqueued */
    uint64_t full;     /* statistics: sends refused as full */
} __attribute__((aligned(64))) rb_slot;

/* One receiver asleep (or about to sleep) on any number of queues.
 *
 * Up to RB_WAIT_MAX queue ids sit inline in slot[]; a longer list (n >
 * RB_WAIT_MAX) lives in a chain of cells from the cell allocator, `list`
 * its first cell (see waitlist.c for the format).  Those cells are PRIMARY
 * data reachable from a live row: the repair marks them like record cells,
 * so the list of a row that is dropped (dead owner, bad list) is reclaimed
 * and the list of a live row is never handed out.
 *
 * Kinds, and how a sender reaches each:
 *   FUTEX (n <= RB_WAIT_MAX): the owner sleeps with futex_waitv on the
 *         queues' own seq words; a send wakes one sleeper per queue.
 *   BELL  (a blocking receive/wait on n > RB_WAIT_MAX queues: futex_waitv
 *         takes at most 128 words): the owner sleeps on ONE word of its
 *         own, `bell`.  A sender to a queue it watches finds the row by
 *         scanning the waiter table (like FD rows), and if it is armed,
 *         disarms it, bumps `bell` under the lock and futex-wakes it after
 *         unlocking.
 *   FD    (rb_watch_open, any n): like BELL, but the "ring" is one byte
 *         written to the row's FIFO.
 * BELL and FD rows both count in queue.fd_watchers ("rows a sender finds
 * by scanning"), so `waiters - fd_watchers` stays the number of sleepers
 * on the queue's seq word. */
typedef struct rb_waiter {
    uint32_t pid;        /* PRIMARY: 0 = row free; written last on register (release) */
    uint32_t n;          /* PRIMARY: number of queue ids (inline in slot[], or in `list`) */
    uint64_t start_time; /* PRIMARY: the pid's start time (/proc/pid/stat field 22), against pid reuse */
    uint64_t token;      /* PRIMARY: unique per registration, so a row swept and reused is not
                          * unregistered by its first owner */
    uint32_t kind;       /* PRIMARY: rb_waiter_kind */
    uint32_t armed;      /* FD and BELL rows: 1 = the owner sleeps (on its fd or its bell) and
                          * wants one ring; a sender clears it under the lock and rings after
                          * unlocking (at most one ring per arm).  Not repaired: a crash
                          * between the clear and the ring loses one ring, which the owner's
                          * bounded sleep covers (like a futex wake lost with its sender). */
    uint32_t bell;       /* BELL rows: the futex word the owner sleeps on; bumped (release,
                          * under the lock) by the sender that disarms the row.  Any value is
                          * valid, so the repair leaves it alone. */
    uint32_t list;       /* PRIMARY when n > RB_WAIT_MAX: first cell of the sorted id list */
    uint32_t slot[RB_WAIT_MAX]; /* PRIMARY when n <= RB_WAIT_MAX: the queue ids */
} rb_waiter;

enum rb_waiter_kind {
    RB_WAITER_FUTEX = 0,
    RB_WAITER_FD = 1,
    RB_WAITER_BELL = 2,
    RB_WAITER_KIND_MAX = RB_WAITER_BELL,
};

typedef struct rb_header {
    /* --- identity: checked on every attach --- */
    uint64_t magic;        /* RB_MAGIC; written when the segment is complete */
    uint32_t version;      /* RB_LAYOUT_VERSION */
    uint32_t record_format; /* RB_RECORD_FORMAT: what the records hold (ringbuf.h) */
    uint32_t header_size;  /* sizeof(rb_header): catches an ABI change (e.g. pthread_mutex_t size) */
    uint32_t slot_size;    /* sizeof(rb_slot) */
    uint32_t cell_size;    /* RB_CELL_SIZE */
    uint64_t size;         /* bytes of the whole segment */
    uint32_t max_record;
    uint32_t slot_count;
    uint32_t index_size;   /* power of two >= 2 * slot_count */
    uint32_t waiter_count;
    uint32_t cell_count;
    uint32_t creator_pid;
    uint64_t slots_off, index_off, waiters_off, cells_off;
    uint64_t created_ns;   /* CLOCK_REALTIME */

    /* --- the lock: robust + process-shared, on a cache line of its own
     * (every operation of every process writes it) --- */
    _Alignas(64) pthread_mutex_t lock;

    /* --- DERIVED allocation state (rebuilt by rb_repair) --- */
    _Alignas(64) uint32_t cell_free_head; /* free-list of cells below cell_bump */
    uint32_t cell_free;      /* cells on the free list */
    uint32_t cell_bump;      /* cells >= this were never handed out since the last rebuild */
    uint32_t slot_free_head;
    uint32_t slot_bump;
    uint32_t slots_used;
    uint32_t index_tombs;    /* tombstones in the index; a rebuild clears them */
    uint32_t waiters_used;
    uint32_t gc_epoch;       /* bumped by every table GC: queue ids taken before may be stale */
    uint32_t waiter_hi;      /* waiter rows at or above this were not registered since the last
                              * rebuild (all free): senders scan [0, waiter_hi) for armed FD
                              * rows, not the whole table (256 cold rows cost a send ~10 us) */
    uint64_t waiter_token;   /* last rb_waiter.token handed out */

    /* --- statistics (primary; never needed for correctness).  Senders
     * and receivers update different lines, so a producer and a consumer on
     * two cores do not bounce one line between them on every record. --- */
    _Alignas(64) uint64_t sent;
    uint64_t full;
    _Alignas(64) uint64_t received;
    uint64_t expired;
    uint64_t repairs;
    uint64_t dropped;     /* records dropped because they failed their checks (broken chain,
                           * impossible length): corruption, never a crash's leftover */
    uint64_t corruptions; /* corruption found (and repaired) outside a crash repair */
} rb_header;

/* Whose files this process uses (see rb_options in ringbuf.h). */
typedef struct rb_trust {
    uint32_t mode;      /* the widest permission bits accepted (0..0777) */
    uint32_t n;         /* entries of uids */
    uint32_t uids[RB_TRUSTED_MAX]; /* owners trusted besides the effective uid */
} rb_trust;

struct rb_seg {
    unsigned char *base;
    rb_header *hdr;
    rb_slot *slots;
    uint32_t *index;
    rb_waiter *waiters;
    rb_cell *cells;
    size_t size;
    int fd;
    /* The geometry, validated on attach (rb_validate_header) and copied
     * here: every bound check uses these process-local copies, never the
     * header's, so a header scribbled on after the attach cannot move a
     * bound past the mapping. */
    uint32_t slot_count, index_size, waiter_count, cell_count, max_record;
    /* Corruption found under the lock (rb_corrupt): set by the finder,
     * logged and cleared by rb_unlock.  Only the lock holder touches them. */
    uint32_t damage;    /* 1 = note[] holds the first finding of this lock hold */
    uint32_t repairing; /* inside rb_repair: findings are noted, never repaired again */
    uint32_t checking;  /* inside rb_check: findings are reported, not repaired */
    char note[640];
    uint32_t file_mode;       /* the segment file's permission bits: FD-watch FIFOs get them */
    uint64_t lock_timeout_ns; /* rb_lock gives up (RB_E_LOCKED) after this long */
    rb_trust trust;
    char prefix[RB_NAME_MAX + 1];
};

/* segment.c: the one check of a header's identity and geometry against the
 * file it was read from (rb_open, and so rb_stat_segment and every reader
 * of ipc-layer ls/stats).  `hdr` is a private copy of the header.  Returns
 * RB_OK, RB_E_MAGIC / RB_E_VERSION (another layout: LayoutMismatch) or
 * RB_E_CORRUPT (an offset, count or size that does not match the others:
 * SegmentCorrupt), with rb_last_error() naming the field. */
int rb_validate_header(const rb_header *hdr, uint64_t file_size, const char *path,
                       const char *prefix);

/* errors.c-style helper living in segment.c: set the thread's message, return code. */
int rb_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* segment.c: FD-watch FIFOs of a prefix (all, or of dead pids only), of
 * owners `t` trusts (or `also_uid`, (uint32_t)-1 = none). */
void rb_sweep_watch_fifos(const char *prefix, int all, const rb_trust *t, uint32_t also_uid);

/* segment.c: is the open file `fd` (at `path`, a `what` such as "segment")
 * ours to use: of type S_IFREG / S_IFIFO as `want_type` says, owned by the
 * effective uid or a trusted one, no permission bit beyond t->mode?  RB_OK,
 * or RB_E_TRUST with a message naming the file, its owner and mode, and
 * the fix (`fix`: the advice sentence).  rb_trusts_uid: the owner part. */
int rb_check_trust(const rb_trust *t, int fd, const char *path, const char *what,
                   unsigned want_type, const char *fix);
int rb_trusts_uid(const rb_trust *t, uint32_t uid);
/* Unlink `path` only if a trusted uid (or `also_uid`, (uint32_t)-1 = none)
 * owns it (sticky /dev/shm: no race, see segment.c); 1 if removed. */
int rb_unlink_trusted(const rb_trust *t, const char *path, uint32_t also_uid);

/* segment.c: the lock (runs rb_repair on EOWNERDEAD). */
int rb_lock(rb_seg *s);
void rb_unlock(rb_seg *s);

/* table.c */
uint64_t rb_hash(uint32_t kind, uint32_t set_id, const char *name, size_t len);
uint32_t rb_table_find(rb_seg *s, uint32_t kind, uint32_t set_id, const char *name, size_t len);
int rb_table_create(rb_seg *s, uint32_t kind, uint32_t set_id, const char *name, size_t len,
                    uint64_t deadline, uint32_t *out);
void rb_table_remove(rb_seg *s, uint32_t id);
void rb_index_rebuild(rb_seg *s);
int rb_check_name(const char *what, const char *name, size_t len);

/* alloc.c */
uint32_t rb_cells_needed(size_t len);
uint32_t rb_cells_available(rb_seg *s);
uint32_t rb_cell_alloc(rb_seg *s);
bool rb_cells_free(rb_seg *s, uint32_t first, uint32_t need, const char *what);
bool rb_record_free(rb_seg *s, uint32_t first);

/* queue.c */
int rb_enqueue_locked(rb_seg *s, uint32_t q, const char *pre, size_t pre_len, const char *data,
                      size_t len, uint64_t deadline, uint64_t now, uint32_t capacity);
uint32_t rb_purge_queue(rb_seg *s, uint32_t q, uint64_t now);

/* sets.c */
void rb_member_unlink(rb_seg *s, uint32_t m);

/* wait.c */
int rb_futex_wait_many(uint32_t **words, const uint32_t *vals, uint32_t n, uint64_t abs_deadline_ns);
void rb_futex_wake(uint32_t *word, int n);
void rb_cpu_relax(void);

/* recover.c */
void rb_repair(rb_seg *s);
uint64_t rb_self_start_time(void);
uint32_t rb_self_pid(void);
bool rb_pid_alive(uint32_t pid, uint64_t start_time);
uint32_t rb_sweep_waiters(rb_seg *s);

/* watch.c */
typedef struct rb_poke {
    uint32_t pid;
    uint32_t row;  /* BELL entries: the row whose bell to futex-wake */
    uint64_t token;
    uint32_t bell; /* 1 = a BELL row (futex wake), 0 = an FD row (FIFO byte) */
} rb_poke;
/* A sender's list of FD watchers to poke (and BELL rows to wake) once it
 * has unlocked. */
typedef struct rb_pokes {
    uint32_t n, cap;
    rb_poke *v;
    rb_poke stack[8];
} rb_pokes;
static inline void rb_pokes_init(rb_pokes *p) { p->n = 0; p->cap = 8; p->v = p->stack; }
void rb_watch_collect(rb_seg *s, uint32_t qid, rb_pokes *p); /* under the lock */
void rb_watch_poke_all(rb_seg *s, rb_pokes *p);             /* after unlocking; frees (poke.c) */
int rb_poke_cached(void); /* write ends this process keeps open for pokes (tests) */
void rb_watch_path(const rb_seg *s, uint32_t pid, uint64_t token, char *buf, size_t cap);
void rb_watch_forget_row(rb_seg *s, rb_waiter *wt); /* a dead FD row: unlink its FIFO */

/* waitlist.c: the queue ids of a waiter row, inline or in list cells. */
#define RB_LIST_IDS_PER_CELL (RB_CELL_PAYLOAD / sizeof(uint32_t))
static inline uint32_t rb_list_cells_needed(uint32_t n)
{
    return (uint32_t)((n + RB_LIST_IDS_PER_CELL - 1) / RB_LIST_IDS_PER_CELL);
}
int rb_list_write(rb_seg *s, const uint32_t *sorted, uint32_t n, uint32_t *out_first);
void rb_list_free(rb_seg *s, uint32_t first, uint32_t n);
/* Call fn(s, id, arg) for every queue id of the row; stops at fn's first
 * non-zero return and returns it; -1 if a long list's chain is broken. */
typedef int (*rb_id_fn)(rb_seg *s, uint32_t id, void *arg);
int rb_row_each(rb_seg *s, const rb_waiter *wt, rb_id_fn fn, void *arg);
bool rb_row_watches(rb_seg *s, const rb_waiter *wt, uint32_t qid);
/* Validate a row's list chain (cells in range, unmarked, counts adding up
 * to n, ids ascending and naming QUEUE slots); on success mark its cells in
 * `mark` (if non-NULL) and return how many, else 0 with `why` filled. */
uint32_t rb_list_walk(rb_seg *s, const rb_waiter *wt, unsigned char *mark, char *why, size_t cap);
/* Sorted unique copy of ids (n in/out), for a long list; malloc'd. */
uint32_t *rb_ids_sorted_unique(rb_seg *s, const uint32_t *ids, uint32_t *n);

/* queue.c helpers shared with watch.c (all under the lock but parse). */
typedef struct rb_name_ref {
    const char *p;
    uint32_t len;
} rb_name_ref;
int rb_parse_names(const char *blob, size_t blob_len, uint32_t count, rb_name_ref *out);
int rb_check_count(size_t blob_len, uint32_t count); /* before sizing arrays for count names */
int rb_resolve_queues(rb_seg *s, const rb_name_ref *names, uint32_t count, uint32_t *ids);
int rb_waiter_register(rb_seg *s, const uint32_t *ids, uint32_t count, uint32_t kind,
                       uint64_t token, uint32_t *out_row, uint64_t *out_token);
void rb_waiter_unregister(rb_seg *s, uint32_t row, uint64_t token);
int rb_queue_live(rb_seg *s, uint32_t qid, uint64_t now); /* 1 if a live record is queued */

static inline rb_slot *rb_slot_at(rb_seg *s, uint32_t id) { return &s->slots[id]; }
static inline rb_cell *rb_cell_at(rb_seg *s, uint32_t id) { return &s->cells[id]; }
static inline rb_rec *rb_rec_at(rb_seg *s, uint32_t id) { return (rb_rec *)s->cells[id].data; }

/* ---- bounds on what is read from shared memory ---------------------------
 *
 * Every slot id, cell id and row number read from the segment (an index
 * entry, a free-list head or link, a record or cell chain, a member list,
 * a waiter's slot list) is range-checked against the process-local
 * geometry before it is dereferenced, and every walk is bounded by the
 * size of the table it walks.  A failed check is corruption - nothing a
 * crash at any instruction can leave, since the repair rebuilds derived
 * data and every primary link is a release store of a complete object -
 * so the checks are __builtin_expect'ed to pass: on the hot path they cost
 * a compare and a not-taken branch each.
 *
 * What a finder does (rb_corrupt, recover.c): note the finding (logged
 * once by rb_unlock, after the lock is released, naming the segment and
 * what was wrong), run the same rebuild an EOWNERDEAD locker runs - it
 * keeps the PRIMARY data, rebuilds every DERIVED structure from it and
 * drops records whose chains are broken (counted in `dropped`) - and count
 * it in `corruptions`.  The caller then retries its step once on the
 * rebuilt structures, or gives up with RB_E_CORRUPT. */
#define RB_LIKELY(x) __builtin_expect(!!(x), 1)
#define RB_UNLIKELY(x) __builtin_expect(!!(x), 0)

static inline bool rb_slot_ok(const rb_seg *s, uint32_t id) { return RB_LIKELY(id < s->slot_count); }
static inline bool rb_cell_ok(const rb_seg *s, uint32_t id) { return RB_LIKELY(id < s->cell_count); }
static inline bool rb_row_ok(const rb_seg *s, uint32_t row) { return RB_LIKELY(row < s->waiter_count); }

/* recover.c: report corruption found under the lock and repair it (see
 * above).  Returns RB_E_CORRUPT, for callers that give up. */
int rb_corrupt(rb_seg *s, const char *fmt, ...) __attribute__((cold, format(printf, 2, 3)));
/* recover.c: the log hook (rb_set_log_hook) that rb_unlock calls with a note. */
void rb_log_note(const char *msg);

/* The slot table's high-water mark (derived), the bound of every loop over
 * the rows: checked where such a loop starts, never past the table.  (The
 * other allocation scalars are checked where they are used: the free-list
 * heads when popped, the cell bump mark when bumped, waiter_hi clamped.) */
static inline uint32_t rb_slot_hi(rb_seg *s)
{
    uint32_t hi = s->hdr->slot_bump;
    if (RB_UNLIKELY(hi > s->slot_count)) {
        rb_corrupt(s, "slot bump mark %u is past the %u slots", hi, s->slot_count);
        hi = s->hdr->slot_bump < s->slot_count ? s->hdr->slot_bump : s->slot_count;
    }
    return hi;
}

#define RB_STORE_RELEASE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define RB_LOAD_ACQUIRE(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define RB_LOAD_RELAXED(p) __atomic_load_n((p), __ATOMIC_RELAXED)

#endif
