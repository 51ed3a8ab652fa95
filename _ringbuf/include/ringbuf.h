/*
 * ringbuf.h - the public C API of the shared-memory message core.
 *
 * The core knows bytes, byte-string names, record counts and u64 deadlines
 * (CLOCK_MONOTONIC nanoseconds, 0 = never).  It knows nothing of ASGI,
 * msgpack, channel-name syntax, Twisted or Django.
 *
 * Theory of operation (the long form lives in src/internal.h):
 *
 *  - One POSIX shared-memory segment per prefix ("/rbuf.<prefix>").  Its
 *    header starts with RB_MAGIC and RB_LAYOUT_VERSION; an attach to a
 *    segment with another magic or version is refused (RB_E_MAGIC /
 *    RB_E_VERSION) and rb_last_error() names both values.
 *  - Every mutation happens under one process-shared *robust* mutex.  A
 *    process SIGKILLed while holding it hands the next locker EOWNERDEAD;
 *    that locker rebuilds every derived structure (free lists, hash index,
 *    counts, member lists) from the primary data (slot states and the
 *    committed record chains) before marking the mutex consistent.  Every
 *    primary-data commit point is a single release store, so a record or
 *    slot is either fully there or not there at all (LMDB-style repair).
 *  - A blocked receiver registers in a waiter table (pid + start time) and
 *    sleeps with futex_waitv(2) on the per-queue sequence words of the
 *    queues it watches: a send wakes one waiter of that queue only.  A
 *    receiver on more than RB_WAIT_MAX queues sleeps on a "bell" word of
 *    its own waiter row instead, which a sender to any of them rings.  Every
 *    sleep is bounded (RB_MAX_SLEEP_NS) so a waiter whose waker died
 *    recovers; dead waiters are swept by pid liveness checks.
 *
 * All functions return RB_OK (0) or a negative RB_E_* code; on failure the
 * calling thread's rb_last_error() holds a sentence that names the culprit.
 */
#ifndef RINGBUF_H
#define RINGBUF_H

#include <stddef.h>
#include <stdint.h>

#define RB_MAGIC 0x52494E47425546ULL /* "RINGBUF" */
#define RB_LAYOUT_VERSION 6

/* ---- The record format ---------------------------------------------------
 *
 * The one definition of what a record holds, shared by the core (which
 * builds frames for rb_send_tagged and tagged/grouped fan-out) and the
 * layer (which reads them).  RB_RECORD_FORMAT is stored in the segment
 * header and checked on attach like RB_LAYOUT_VERSION (RB_E_VERSION, both
 * values named): a process never reads records written with another format.
 * A record's first byte says what it is:
 *
 *   0x00 .. RB_FRAME_TAG_MAX    single frame: [len][tag: len bytes] payload
 *                               (a process-specific channel "name!tag" in
 *                               queue "name!"; len 0: an ordinary member's
 *                               tagged fan-out copy)
 *   RB_FRAME_GROUP_MARK (0x7f)  grouped: [0x7f][k: u16 LE]([len][tag]) x k
 *                               payload, k >= 2 (the members of one queue
 *                               share one fan-out record), tags <= TAG_MAX
 *   >= RB_FRAME_NONE_MIN (0x80) no frame: the record is the payload
 *
 * Why "no frame" is safe and why it is the fast path: the layer's payloads
 * are msgpack maps, whose first byte is always >= 0x80 (fixmap 0x80-0x8f,
 * map16 0xde, map32 0xdf), so a send to an ordinary channel stores the
 * payload as it is: no concatenation on send, no slice on receive.  The
 * layer refuses to send an unframed payload whose first byte is below
 * RB_FRAME_NONE_MIN (it would be misread as a frame).  Tags are at most
 * RB_FRAME_TAG_MAX bytes so that a tag length is never the group mark nor
 * a payload byte; rb_set_add_member refuses longer tags. */
#define RB_RECORD_FORMAT 1
#define RB_FRAME_TAG_MAX 0x7e
#define RB_FRAME_GROUP_MARK 0x7f
#define RB_FRAME_NONE_MIN 0x80
/* Bytes of max_record a tagged record reserves for its frame (a single
 * frame is at most 1 + RB_FRAME_TAG_MAX; a grouped record's frames are
 * split over as many records as fit).  The layer creates segments with
 * max_record = its max_message_size + RB_FRAME_RESERVE. */
#define RB_FRAME_RESERVE 256

/* Names (queue, set and member names) are 1..RB_NAME_MAX bytes. */
#define RB_NAME_MAX 256
/* A receive, wait or watch takes any number of queues.  Up to RB_WAIT_MAX
 * of them, a sleeper uses futex_waitv(2) on the queues' own words (kernel
 * limit 128) and its list sits inline in its waiter row; past that, the
 * list goes in the segment's cells and the sleeper sleeps on one word of
 * its own that senders ring (src/internal.h, "BELL"). */
#define RB_WAIT_MAX 64
/* No futex sleep lasts longer than this; the caller's timeout is honoured by
 * sleeping again.  Bounds the damage of a waker that died between its
 * commit and its wake. */
#define RB_MAX_SLEEP_NS 200000000ULL

#define RB_DEFAULT_SIZE (64ULL << 20)
#define RB_DEFAULT_MAX_RECORD (1U << 20)
#define RB_DEFAULT_SLOTS 16384U
#define RB_DEFAULT_WAITERS 256U
#define RB_CELL_SIZE 256U

/* Return codes. */
#define RB_OK 0
#define RB_E_EMPTY (-1)    /* nothing to receive before the timeout */
#define RB_E_FULL (-2)     /* the queue holds `capacity` records */
#define RB_E_NOMEM (-3)    /* the segment's record memory is exhausted */
#define RB_E_TOOLARGE (-4) /* record larger than the segment's max_record */
#define RB_E_NAME (-5)     /* empty or over-long name, or bad prefix */
#define RB_E_NOSLOT (-6)   /* the name table is full */
#define RB_E_MAGIC (-7)    /* the segment is not one of ours */
#define RB_E_VERSION (-8)  /* the segment has another layout version */
#define RB_E_SYS (-9)      /* a system call failed (errno in the message) */
#define RB_E_INVAL (-10)   /* a bad argument */
#define RB_E_BUFSMALL (-11) /* the output buffer is too small; *out_len says how big */
#define RB_E_NOTFOUND (-12) /* no such segment */
#define RB_E_WAITERS (-13) /* the waiter table is full */
#define RB_E_CORRUPT (-14) /* rb_check found a broken invariant */
#define RB_E_BUSY (-15)    /* rb_unlink: processes are still attached */
#define RB_E_INTR (-16)    /* a signal arrived while waiting; call again */
#define RB_E_TRUST (-17)   /* the segment (or a watch FIFO) belongs to an untrusted user or
                            * grants more than the configured mode: refused, never used */
#define RB_E_LOCKED (-18)  /* the segment lock stayed held by a live process (stopped, traced,
                            * stuck) past the lock timeout; nothing was done: retry later */

/* Longest wait for the segment lock unless rb_options.lock_timeout_ns says
 * otherwise.  Critical sections last microseconds (a crash repair of a big
 * segment: milliseconds), so only a holder that does not run (SIGSTOP,
 * Ctrl-Z, a debugger) gets near it. */
#define RB_DEFAULT_LOCK_TIMEOUT_NS 5000000000ULL
/* Most uids rb_options.trusted_uids may list. */
#define RB_TRUSTED_MAX 16

/* Kinds for rb_list_names. */
#define RB_KIND_QUEUE 1
#define RB_KIND_SET 2

typedef struct rb_seg rb_seg;

/* Trust on attach: /dev/shm is world-writable, so another local user can
 * create "rbuf.<prefix>" first and read every message a site sends through
 * it.  rb_open therefore refuses (RB_E_TRUST) a segment file that is not a
 * regular file, is owned by neither the effective uid nor one of
 * trusted_uids, or whose permission bits grant more than `mode`; FD-watch
 * FIFOs are held to the same rule on both ends (watch.c, poke.c), and the
 * sweeps of companion files only remove files of trusted owners.  The
 * checks run on the open descriptor (fstat after an O_NOFOLLOW open), so
 * there is no window between the check and the use. */
typedef struct rb_options {
    uint64_t size;       /* segment bytes; 0 = RB_DEFAULT_SIZE */
    uint32_t mode;       /* file mode on create, and the widest mode accepted on attach
                          * (0..0777); 0 = 0600 */
    uint32_t max_record; /* largest record; 0 = RB_DEFAULT_MAX_RECORD */
    uint32_t slots;      /* name-table rows; 0 = RB_DEFAULT_SLOTS */
    uint32_t waiters;    /* waiter-table rows; 0 = RB_DEFAULT_WAITERS */
    int32_t create;      /* 1 = create when absent, 0 = attach only */
    uint32_t n_trusted;  /* entries of trusted_uids (at most RB_TRUSTED_MAX) */
    const uint32_t *trusted_uids; /* owners trusted besides the effective uid */
    uint64_t lock_timeout_ns; /* longest wait for the segment lock (then RB_E_LOCKED);
                               * 0 = RB_DEFAULT_LOCK_TIMEOUT_NS */
} rb_options;

typedef struct rb_info {
    uint64_t magic;
    uint32_t version;
    uint32_t max_record;
    uint64_t size;
    uint32_t cell_size;
    uint32_t cells_total;
    uint32_t cells_free;
    uint32_t slots_total;
    uint32_t slots_used;
    uint32_t waiters_total;
    uint32_t waiters_used;
    uint32_t queues;
    uint32_t sets;
    uint32_t members;
    uint64_t sent;       /* records enqueued (sends + fan-out copies) */
    uint64_t received;   /* records handed to a receiver */
    uint64_t full;       /* sends refused: queue full or memory exhausted */
    uint64_t expired;    /* records dropped at their deadline */
    uint64_t repairs;    /* EOWNERDEAD repairs run on this segment */
    uint64_t dropped;    /* records dropped because they failed their checks (corruption) */
    uint64_t corruptions; /* corruption found and repaired outside a crash repair */
    uint64_t created_ns; /* CLOCK_REALTIME ns of creation */
    uint32_t creator_pid;
    uint32_t record_format; /* RB_RECORD_FORMAT the segment was created with */
} rb_info;

typedef struct rb_queue_stats {
    uint64_t sent;          /* records enqueued */
    uint64_t full;          /* sends refused because the queue was full */
    uint64_t pending;       /* records waiting (expired ones not yet swept included) */
    uint64_t oldest_age_ns; /* age of the oldest pending record, 0 if none */
    uint32_t capacity;      /* the stored capacity (0 = unlimited) */
    uint32_t waiters;       /* receivers asleep on this queue */
} rb_queue_stats;

/* Corruption.  Shared memory that another process scribbled on (an index,
 * link or count out of range, a record that fails its checks) never makes a
 * call crash or hang: it is found where it is read, repaired under the lock
 * by the same rebuild a crash repair runs (a broken record is dropped and
 * counted in rb_info.dropped), and the call retries once or fails with
 * RB_E_CORRUPT.  Each finding is reported once, after the lock is released,
 * through this hook (`msg` names the segment and what was wrong); NULL (the
 * default) writes it to stderr.  Process-wide. */
typedef void (*rb_log_fn)(const char *msg);
void rb_set_log_hook(rb_log_fn fn);

/* Segments. */
int rb_open(const char *prefix, const rb_options *opts, rb_seg **out);
void rb_close(rb_seg *seg);
int rb_unlink(const char *prefix, int force);
int rb_stat_segment(const char *prefix, rb_info *out);
int rb_info_get(rb_seg *seg, rb_info *out);
int rb_attached(const char *prefix); /* 1 if some process holds it open, 0 if not, <0 error */
const char *rb_last_error(void);
uint64_t rb_now_ns(void);
/* After RB_E_LOCKED: the pid that held the lock (0 = not known) and its
 * state as /proc/<pid>/status words it ("stopped", "tracing stop",
 * "running", ...; "unknown" if unreadable), for the calling thread's last
 * RB_E_LOCKED. */
uint32_t rb_last_lock_holder(char *state, size_t cap);
/* Tests and diagnostics only: take / release the segment lock as an
 * operation does (a process stopped between the two is the case the lock
 * timeout exists for). */
int rb_debug_lock(rb_seg *seg);
void rb_debug_unlock(rb_seg *seg);
/* The segment's fixed geometry, read without the lock (header fields
 * written once, before the magic was published). */
void rb_limits(rb_seg *seg, uint32_t *out_max_record, uint64_t *out_size);

/* Queues.  `names` for receive/wait is a blob of `count` entries, each a
 * little-endian u16 length followed by that many bytes. */
int rb_send(rb_seg *seg, const char *name, size_t name_len, const char *data,
            size_t len, uint64_t deadline_ns, uint32_t capacity);
/* rb_send with a single frame [tag_len][tag] before data (the record
 * format above): the frame is built here, in the enqueue's copy, so the
 * caller never concatenates.  tag_len is 0..RB_FRAME_TAG_MAX. */
int rb_send_tagged(rb_seg *seg, const char *name, size_t name_len, const char *tag,
                   size_t tag_len, const char *data, size_t len, uint64_t deadline_ns,
                   uint32_t capacity);
/* Enqueue n records (record i is lens[i] bytes, back to back in data) in
 * one lock hold.  Stops at the first refusal (full, out of memory) and
 * returns its code; *out_sent says how many went in, in order. */
int rb_send_batch(rb_seg *seg, const char *name, size_t name_len, const char *data,
                  const uint32_t *lens, uint32_t n, uint64_t deadline_ns, uint32_t capacity,
                  uint32_t *out_sent);
int rb_receive(rb_seg *seg, const char *names, size_t names_len, uint32_t count,
               char *buf, size_t cap, size_t *out_len, uint32_t *out_index,
               int64_t timeout_ns, uint32_t spin_us);
/* Take up to `max` records (oldest first across the queues) in one lock
 * hold: record i is lens[i] bytes at the running offset in buf, from queue
 * names[idxs[i]]; *out_n says how many.  Blocks like rb_receive for the
 * first.  A receiver killed mid-batch loses the batch, not one record: the
 * price of the throughput. */
int rb_receive_batch(rb_seg *seg, const char *names, size_t names_len, uint32_t count,
                     char *buf, size_t cap, uint32_t *lens, uint32_t *idxs, uint32_t max,
                     uint32_t *out_n, size_t *out_len, int64_t timeout_ns, uint32_t spin_us);
int rb_wait(rb_seg *seg, const char *names, size_t names_len, uint32_t count,
            int64_t timeout_ns, uint32_t spin_us);
int rb_queue_stats_get(rb_seg *seg, const char *name, size_t name_len,
                       rb_queue_stats *out);

/* Sets (group membership).  A member receives in queue member[0:queue_len]
 * (queue_len == member_len: the whole name); the rest, member[queue_len:],
 * is its tag (at most RB_FRAME_TAG_MAX bytes), which tagged fan-out copies
 * carry in their frame.  The member states the capacity of its queue for
 * fan-out copies (0 = none: the queue's stored capacity, else the
 * fan-out's argument), so a queue never sent to directly still gets its
 * configured capacity.  Re-adding refreshes the deadline, route and
 * capacity. */
int rb_set_add_member(rb_seg *seg, const char *set, size_t set_len,
                      const char *member, size_t member_len, size_t queue_len,
                      uint32_t capacity, uint64_t deadline_ns);
int rb_set_discard(rb_seg *seg, const char *set, size_t set_len,
                   const char *member, size_t member_len);
int rb_set_members(rb_seg *seg, const char *set, size_t set_len, char *buf,
                   size_t cap, size_t *out_len, uint32_t *out_count);
/* Fan-out: one record into every live member's queue, in one lock hold.
 * tagged = RB_FANOUT_PLAIN: the payload as it is; RB_FANOUT_TAGGED: each
 * copy carries its member's single frame; RB_FANOUT_GROUPED: the members
 * sharing a queue get one grouped record carrying all their tags (a single
 * frame when alone), see the record format above and sets.c.  sent/skipped
 * count members. */
#define RB_FANOUT_PLAIN 0
#define RB_FANOUT_TAGGED 1
#define RB_FANOUT_GROUPED 2
int rb_fanout_tagged(rb_seg *seg, const char *set, size_t set_len, const char *data,
                     size_t len, uint64_t deadline_ns, uint32_t capacity, int tagged,
                     uint32_t *out_sent, uint32_t *out_skipped);

/* Maintenance. */
int rb_list_names(rb_seg *seg, int kind, char *buf, size_t cap, size_t *out_len,
                  uint32_t *out_count);
int rb_stats_reset(rb_seg *seg);
int rb_flush(rb_seg *seg);
int rb_recover(rb_seg *seg, uint32_t *out_swept);
int rb_check(rb_seg *seg, char *report, size_t cap);

/* FD watches: a file descriptor an event loop can poll, made readable by
 * senders to the watched queues (one kernel wake-up, no helper thread).
 *
 * rb_watch_open registers a waiter row (kind FD) on the queues named in the
 * blob (same format as rb_receive), creates the FIFO
 * /dev/shm/rbuf.<prefix>~w~<pid>~<token> (mode 0600) and returns its read
 * end (non-blocking, close-on-exec) in *out_fd; the process keeps a write
 * end open so the read end never reports EOF.
 * rb_watch_arm returns 1 if a watched queue holds a live record now (not
 * armed: receive at once), else arms the row and returns 0: the next send
 * to a watched queue writes one byte to the FIFO.  A poke may be lost if
 * the sender dies between unlocking and poking: sleep at most
 * RB_MAX_SLEEP_NS-ish before looking again.
 * rb_watch_close unregisters the row, closes both ends and unlinks the FIFO.
 * A watch belongs to the process that opened it (not to a forked child). */
int rb_watch_open(rb_seg *seg, const char *names, size_t names_len, uint32_t count,
                  int *out_fd, uint32_t *out_row, uint64_t *out_token);
int rb_watch_arm(rb_seg *seg, uint32_t row, uint64_t token);
int rb_watch_close(rb_seg *seg, uint32_t row, uint64_t token);
/* rb_watch_seq: a number that changes whenever a record is sent to a queue
 * the watch watches (the sum of their futex words), read WITHOUT the lock:
 * what a loop polls while it spins before arming, so that spinning never
 * contends with senders for the lock.  RB_SEQ_INVALID if the watch is not
 * this process's (closed, swept, or opened before fork). */
#define RB_SEQ_INVALID_BIT (1ULL << 63)
#define RB_SEQ_INVALID RB_SEQ_INVALID_BIT
uint64_t rb_watch_seq(rb_seg *seg, uint32_t row, uint64_t token);

#endif
