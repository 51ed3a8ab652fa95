/*
 * segment.c - create / attach / detach / unlink a named shm segment, the
 * segment lock, the error message helper.
 *
 * Segments live in /dev/shm as "rbuf.<prefix>" (the names shm_open(3) uses
 * on Linux).  Creation is crash-safe without any lock: the creator builds
 * the whole segment under a private temporary name and link(2)s it into
 * place, which atomically fails with EEXIST if another process won the race.
 * So an attacher never sees a half-initialised segment, and a creator killed
 * mid-way leaves only a temporary file that the next rb_open removes.
 *
 * Every attached process holds a shared flock(2) on the segment file for as
 * long as it is attached; rb_attached()/rb_unlink() probe it with a
 * non-blocking exclusive flock.  The kernel drops the lock when the last
 * descriptor closes, so a SIGKILLed process never looks attached.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define SHM_DIR "/dev/shm/"
/* Longest single sleep waiting for the segment lock (see rb_lock). */
#define RB_LOCK_SLICE_NS 20000000ULL
#if defined(__SANITIZE_THREAD__)
/* GCC's ThreadSanitizer does not intercept pthread_mutex_clocklock, so it
 * would see every unlock as "unlock of an unlocked mutex".  The TSan build
 * uses the CLOCK_REALTIME timedlock it does model (a clock step there only
 * lengthens one slice); real builds keep the monotonic clock. */
#define RB_LOCK_CLOCK CLOCK_REALTIME
#define RB_TIMED_LOCK(m, ts) pthread_mutex_timedlock((m), (ts))
/* TSan's timedlock interceptor records the lock only when it returns 0 (its
 * trylock one also on EOWNERDEAD): a lock taken over from a dead owner that
 * way must be announced, or its unlock is "unlock of an unlocked mutex". */
#include <sanitizer/tsan_interface.h>
#define RB_TSAN_ANNOUNCE_LOCK(m)                                                                   \
    do {                                                                                           \
        __tsan_mutex_pre_lock((m), __tsan_mutex_try_lock);                                         \
        __tsan_mutex_post_lock((m), __tsan_mutex_try_lock, 0);                                     \
    } while (0)
#else
#define RB_TSAN_ANNOUNCE_LOCK(m) ((void)(m))
#define RB_LOCK_CLOCK CLOCK_MONOTONIC
#define RB_TIMED_LOCK(m, ts) pthread_mutex_clocklock((m), CLOCK_MONOTONIC, (ts))
#endif
#define SHM_PREFIX "rbuf."

static __thread char rb_errbuf[512];

int rb_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rb_errbuf, sizeof rb_errbuf, fmt, ap);
    va_end(ap);
    return code;
}

const char *rb_last_error(void) { return rb_errbuf; }

uint64_t rb_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A prefix becomes a file name: keep it to a safe charset. */
static int check_prefix(const char *prefix)
{
    size_t n = prefix ? strlen(prefix) : 0;
    if (n == 0 || n > 200)
        return rb_fail(RB_E_NAME, "segment prefix must be 1..200 characters, got %zu", n);
    for (size_t i = 0; i < n; i++) {
        char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return rb_fail(RB_E_NAME,
                           "segment prefix %.200s: character %d at %zu is not one of "
                           "A-Z a-z 0-9 - _ .",
                           prefix, (int)(unsigned char)c, i);
    }
    return RB_OK;
}

static void seg_path(char *buf, size_t cap, const char *prefix)
{
    snprintf(buf, cap, SHM_DIR SHM_PREFIX "%s", prefix);
}

static uint32_t pow2_at_least(uint64_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static uint64_t align64(uint64_t n) { return (n + 63) & ~(uint64_t)63; }

/* Where everything lives in a segment of `size` bytes with these counts.
 * One function serves creation (init_layout) and every attach
 * (rb_validate_header), so the two can never disagree about a field. */
typedef struct rb_geometry {
    uint64_t slots_off, index_off, waiters_off, cells_off;
    uint32_t index_size, cell_count;
} rb_geometry;

/* Returns false if the counts do not fit the size (no room for a cell). */
static bool compute_geometry(uint64_t size, uint32_t slots, uint32_t waiters, rb_geometry *g)
{
    g->index_size = pow2_at_least((uint64_t)slots * 2);
    g->slots_off = align64(sizeof(rb_header));
    g->index_off = align64(g->slots_off + (uint64_t)slots * sizeof(rb_slot));
    g->waiters_off = align64(g->index_off + (uint64_t)g->index_size * sizeof(uint32_t));
    g->cells_off = align64(g->waiters_off + (uint64_t)waiters * sizeof(rb_waiter));
    if (g->cells_off >= size)
        return false;
    uint64_t cells = (size - g->cells_off) / RB_CELL_SIZE;
    g->cell_count = (uint32_t)(cells > 0xFFFFFFF0ULL ? 0xFFFFFFF0ULL : cells);
    return true;
}

/* Lay out and initialise a fresh (zero-filled) segment in memory. */
static int init_layout(unsigned char *base, uint64_t size, const rb_options *o)
{
    rb_header *h = (rb_header *)base;
    uint32_t slots = o->slots ? o->slots : RB_DEFAULT_SLOTS;
    uint32_t waiters = o->waiters ? o->waiters : RB_DEFAULT_WAITERS;
    uint32_t max_record = o->max_record ? o->max_record : RB_DEFAULT_MAX_RECORD;
    rb_geometry g;
    if (!compute_geometry(size, slots, waiters, &g))
        return rb_fail(RB_E_INVAL, "segment size %llu is too small for %u slots and %u waiters",
                       (unsigned long long)size, slots, waiters);
    if (g.cell_count < rb_cells_needed(max_record) + 1)
        return rb_fail(RB_E_INVAL,
                       "segment size %llu leaves %u cells, fewer than one max_record (%u bytes) needs",
                       (unsigned long long)size, g.cell_count, max_record);
    h->slots_off = g.slots_off;
    h->index_off = g.index_off;
    h->waiters_off = g.waiters_off;
    h->cells_off = g.cells_off;
    uint32_t index_size = g.index_size;
    uint64_t cells = g.cell_count;

    h->version = RB_LAYOUT_VERSION;
    h->record_format = RB_RECORD_FORMAT;
    h->header_size = sizeof(rb_header);
    h->slot_size = sizeof(rb_slot);
    h->cell_size = RB_CELL_SIZE;
    h->size = size;
    h->max_record = max_record;
    h->slot_count = slots;
    h->index_size = index_size;
    h->waiter_count = waiters;
    h->cell_count = (uint32_t)cells;
    h->creator_pid = (uint32_t)getpid();
    h->created_ns = realtime_ns();
    /* Slots, index and waiters are valid when zero (FREE / EMPTY / unused),
     * and cells are handed out from a bump mark: nothing else to write, so
     * initialisation is O(header), whatever the segment's size. */
    h->cell_free_head = RB_NIL;
    h->slot_free_head = RB_NIL;

    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int r = pthread_mutex_init(&h->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (r != 0)
        return rb_fail(RB_E_SYS, "pthread_mutex_init: %s", strerror(r));
    return RB_OK;
}

/* The hard limits rb_open puts on a creator's options: a stored count
 * beyond them was never written by a creator. */
#define RB_SLOTS_LIMIT (1u << 24)
#define RB_WAITERS_LIMIT 65536u
#define RB_MAX_RECORD_LIMIT (1u << 30)

int rb_validate_header(const rb_header *h, uint64_t file_size, const char *path,
                       const char *prefix)
{
    /* 1. identity: another layout is a mismatch (LayoutMismatch), not damage. */
    if (h->magic != RB_MAGIC)
        return rb_fail(RB_E_MAGIC,
                       "segment %s has magic 0x%llx, expected 0x%llx: not a ring-buffer segment",
                       path, (unsigned long long)h->magic, (unsigned long long)RB_MAGIC);
    if (h->version != RB_LAYOUT_VERSION)
        return rb_fail(RB_E_VERSION,
                       "segment %s has layout version %u, this build reads version %u; "
                       "remove it (ipc-layer rm --prefix %s) or run a matching version",
                       path, h->version, RB_LAYOUT_VERSION, prefix);
    /* Same layout, other records: reading them would misroute messages (a
     * tag taken for a payload byte), so it is refused like a layout change. */
    if (h->record_format != RB_RECORD_FORMAT)
        return rb_fail(RB_E_VERSION,
                       "segment %s has record format %u, this build reads format %u; "
                       "remove it (ipc-layer rm --prefix %s) or run a matching version",
                       path, h->record_format, RB_RECORD_FORMAT, prefix);
    if (h->header_size != sizeof(rb_header) || h->slot_size != sizeof(rb_slot) ||
        h->cell_size != RB_CELL_SIZE || h->size != file_size)
        return rb_fail(RB_E_VERSION,
                       "segment %s has header/slot/cell sizes %u/%u/%u and size %llu; this build "
                       "expects %zu/%zu/%u and the file is %llu bytes",
                       path, h->header_size, h->slot_size, h->cell_size,
                       (unsigned long long)h->size, sizeof(rb_header), sizeof(rb_slot),
                       RB_CELL_SIZE, (unsigned long long)file_size);
    /* 2. geometry: the counts must be ones a creator could have stored, and
     * every offset and derived count must be exactly what they imply for
     * this size - the layout has no freedom, so any difference is damage
     * (SegmentCorrupt), and nothing is mapped through a field unchecked. */
#define RB_BAD_FIELD(field, value, expect)                                                         \
    rb_fail(RB_E_CORRUPT, "segment %s is corrupt: header field %s is %llu, expected %s", path,    \
            field, (unsigned long long)(value), expect)
    if (h->slot_count == 0 || h->slot_count > RB_SLOTS_LIMIT)
        return RB_BAD_FIELD("slot_count", h->slot_count, "1..16777216");
    if (h->waiter_count == 0 || h->waiter_count > RB_WAITERS_LIMIT)
        return RB_BAD_FIELD("waiter_count", h->waiter_count, "1..65536");
    if (h->max_record == 0 || h->max_record > RB_MAX_RECORD_LIMIT)
        return RB_BAD_FIELD("max_record", h->max_record, "1..1073741824");
    rb_geometry g;
    if (!compute_geometry(file_size, h->slot_count, h->waiter_count, &g))
        return rb_fail(RB_E_CORRUPT,
                       "segment %s is corrupt: header field slot_count is %u and header field "
                       "waiter_count is %u, more rows than its %llu bytes hold",
                       path, h->slot_count, h->waiter_count, (unsigned long long)file_size);
    const struct {
        const char *field;
        uint64_t value, expect;
    } geo[] = {
        {"index_size", h->index_size, g.index_size},   {"slots_off", h->slots_off, g.slots_off},
        {"index_off", h->index_off, g.index_off},      {"waiters_off", h->waiters_off, g.waiters_off},
        {"cells_off", h->cells_off, g.cells_off},      {"cell_count", h->cell_count, g.cell_count},
    };
    for (size_t i = 0; i < sizeof geo / sizeof geo[0]; i++)
        if (geo[i].value != geo[i].expect) {
            char expect[96];
            snprintf(expect, sizeof expect, "%llu for %u slots, %u waiters and %llu bytes",
                     (unsigned long long)geo[i].expect, h->slot_count, h->waiter_count,
                     (unsigned long long)file_size);
            return RB_BAD_FIELD(geo[i].field, geo[i].value, expect);
        }
    if (h->cell_count < rb_cells_needed(h->max_record) + 1)
        return RB_BAD_FIELD("max_record", h->max_record, "a record that fits the cells");
#undef RB_BAD_FIELD
    return RB_OK;
}

/* Views from a VALIDATED copy of the header (never from the live one, which
 * another process could change between the check and the use). */
static void attach_views(rb_seg *s, const rb_header *h)
{
    s->slots = (rb_slot *)(s->base + h->slots_off);
    s->index = (uint32_t *)(s->base + h->index_off);
    s->waiters = (rb_waiter *)(s->base + h->waiters_off);
    s->cells = (rb_cell *)(s->base + h->cells_off);
    s->slot_count = h->slot_count;
    s->index_size = h->index_size;
    s->waiter_count = h->waiter_count;
    s->cell_count = h->cell_count;
    s->max_record = h->max_record;
}

/* ---- trust ------------------------------------------------------------- */

/* "65534 (nobody)", or just the number when the uid has no name. */
static void uid_text(uint32_t uid, char *buf, size_t cap)
{
    struct passwd pw, *res = NULL;
    char tmp[1024];
    if (getpwuid_r((uid_t)uid, &pw, tmp, sizeof tmp, &res) == 0 && res != NULL && res->pw_name)
        snprintf(buf, cap, "%u (%s)", uid, res->pw_name);
    else
        snprintf(buf, cap, "%u", uid);
}

static const char *type_text(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFREG: return "regular file";
    case S_IFIFO: return "FIFO";
    case S_IFDIR: return "directory";
    case S_IFLNK: return "symbolic link";
    case S_IFSOCK: return "socket";
    case S_IFCHR: return "character device";
    case S_IFBLK: return "block device";
    default: return "file of unknown type";
    }
}

int rb_trusts_uid(const rb_trust *t, uint32_t uid)
{
    if (uid == (uint32_t)geteuid())
        return 1;
    for (uint32_t i = 0; t != NULL && i < t->n && i < RB_TRUSTED_MAX; i++)
        if (t->uids[i] == uid)
            return 1;
    return 0;
}

int rb_check_trust(const rb_trust *t, int fd, const char *path, const char *what,
                   unsigned want_type, const char *fix)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return rb_fail(RB_E_SYS, "fstat %s: %s", path, strerror(errno));
    unsigned perm = (unsigned)st.st_mode & 07777;
    char owner[300], self[300];
    uid_text((uint32_t)st.st_uid, owner, sizeof owner);
    if ((st.st_mode & S_IFMT) != (mode_t)want_type)
        return rb_fail(RB_E_TRUST, "%s %s is a %s, not a %s (owned by uid %s, mode %04o): "
                       "refusing to use it. %s",
                       what, path, type_text(st.st_mode), type_text((mode_t)want_type), owner,
                       perm, fix);
    if (!rb_trusts_uid(t, (uint32_t)st.st_uid)) {
        uid_text((uint32_t)geteuid(), self, sizeof self);
        return rb_fail(RB_E_TRUST, "%s %s is owned by uid %s, mode %04o; this process runs as "
                       "uid %s: refusing to attach. %s or add %u to trusted_uids",
                       what, path, owner, perm, self, fix, (unsigned)st.st_uid);
    }
    if (perm & ~t->mode)
        return rb_fail(RB_E_TRUST, "%s %s has mode %04o, which grants more than the configured "
                       "mode %04o (owner uid %s): refusing to attach. %s or set mode=0o%o if "
                       "that access is intended",
                       what, path, perm, t->mode, owner, fix, perm);
    return RB_OK;
}

/* Unlink `name` in the open directory `dfd` only if a trusted uid (or
 * `also_uid`) owns it.  No race between the check and the unlink: /dev/shm
 * is sticky (mode 1777), so only a file's owner (or root) can remove or
 * replace it - a file we found owned by a trusted uid stays that file
 * until we, or that uid, unlink it.  Returns 1 if it was removed. */
static int unlink_if_trusted(int dfd, const char *name, const rb_trust *t, uint32_t also_uid)
{
    struct stat st;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0)
        return 0;
    if (!rb_trusts_uid(t, (uint32_t)st.st_uid) && (uint32_t)st.st_uid != also_uid)
        return 0; /* another user's file: never ours to remove */
    return unlinkat(dfd, name, 0) == 0;
}

int rb_unlink_trusted(const rb_trust *t, const char *path, uint32_t also_uid)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return unlink_if_trusted(AT_FDCWD, path, t, also_uid);
    char dir[300];
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return 0;
    int r = unlink_if_trusted(dfd, slash + 1, t, also_uid);
    close(dfd);
    return r;
}

/* Remove this prefix's companion files "rbuf.<prefix><tag><pid>...": all
 * of them (`all`), or those whose pid is dead; only files a trusted uid (or
 * `also_uid`) owns - another user's files are never touched (see
 * unlink_if_trusted).  The tags use '~', which no prefix may contain, so a
 * companion can never be another prefix's segment. */
static void sweep_companions(const char *prefix, const char *tag, int all, const rb_trust *t,
                             uint32_t also_uid)
{
    char want[300];
    snprintf(want, sizeof want, SHM_PREFIX "%s%s", prefix, tag);
    DIR *d = opendir(SHM_DIR);
    if (!d)
        return;
    struct dirent *e;
    size_t wl = strlen(want);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, want, wl) != 0)
            continue;
        long pid = strtol(e->d_name + wl, NULL, 10);
        if (all || (pid > 0 && kill((pid_t)pid, 0) == -1 && errno == ESRCH))
            unlink_if_trusted(dirfd(d), e->d_name, t, also_uid);
    }
    closedir(d);
}

/* Temporary files "rbuf.<prefix>~init~<pid>" of creators that died mid-way. */
static void sweep_stale_temps(const char *prefix, const rb_trust *t)
{
    sweep_companions(prefix, "~init~", 0, t, (uint32_t)-1);
}

/* Remove FD-watch FIFOs "rbuf.<prefix>~w~<pid>~<token>" (watch.c): all of
 * them (`all`, when the segment itself is removed: nobody can register on it
 * any more), or those of dead pids (on create: orphans of a segment removed
 * while its watchers ran, or of owners killed after the row was swept). */
void rb_sweep_watch_fifos(const char *prefix, int all, const rb_trust *t, uint32_t also_uid)
{
    sweep_companions(prefix, "~w~", all, t, also_uid);
}

/* Build a complete segment under a temporary name and link it into place.
 * Returns RB_OK (created), 1 (somebody else's is there now) or an error. */
static int create_segment(const char *prefix, const rb_options *o, const rb_trust *t)
{
    char path[300], tmp[340];
    seg_path(path, sizeof path, prefix);
    snprintf(tmp, sizeof tmp, "%s~init~%d", path, (int)getpid());
    uint64_t size = o->size ? o->size : RB_DEFAULT_SIZE;
    mode_t mode = o->mode ? (mode_t)o->mode : 0600;

    sweep_stale_temps(prefix, t);
    rb_sweep_watch_fifos(prefix, 0, t, (uint32_t)-1);
    /* A leftover temp of ours (an earlier process with this pid) goes;
     * another user's stays and O_EXCL below refuses it, naming the file:
     * we only ever build in a file this very open created, so nobody else
     * can hold a descriptor of it or have chosen its mode. */
    rb_unlink_trusted(t, tmp, (uint32_t)-1);
    int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        int e = errno;
        struct stat st;
        if (e == EEXIST && lstat(tmp, &st) == 0) {
            char owner[300];
            uid_text((uint32_t)st.st_uid, owner, sizeof owner);
            return rb_fail(RB_E_TRUST, "create %s: it exists and is owned by uid %s, mode %04o "
                           "(another user's file, not removed): refusing to create the segment "
                           "there. Remove it (rm %s)", tmp, owner, (unsigned)st.st_mode & 07777,
                           tmp);
        }
        return rb_fail(RB_E_SYS, "create %s: %s", tmp, strerror(e));
    }
    /* The umask must not narrow the mode the user asked for. */
    if (fchmod(fd, mode) != 0 || ftruncate(fd, (off_t)size) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return rb_fail(RB_E_SYS, "size %s to %llu bytes: %s", tmp, (unsigned long long)size,
                       strerror(e));
    }
    /* Reserve every page now: a sparse tmpfs file would let a later first
     * touch of a page die with SIGBUS when /dev/shm is full, in whichever
     * process happened to touch it.  Refusing here, once, is the only clean
     * place to say "no room". */
    int fe = posix_fallocate(fd, 0, (off_t)size);
    if (fe != 0 && fe != EOPNOTSUPP && fe != EINVAL) {
        close(fd);
        unlink(tmp);
        return rb_fail(RB_E_SYS, "reserve %llu bytes for %s: %s (is /dev/shm big enough?)",
                       (unsigned long long)size, tmp, strerror(fe));
    }
    unsigned char *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
        int e = errno;
        unlink(tmp);
        return rb_fail(RB_E_SYS, "mmap %s: %s", tmp, strerror(e));
    }
    int r = init_layout(base, size, o);
    if (r == RB_OK)
        /* The magic is the last store of initialisation: a reader that sees
         * it sees the whole header (release pairs with the acquire load in
         * rb_open). */
        RB_STORE_RELEASE(&((rb_header *)base)->magic, RB_MAGIC);
    munmap(base, size);
    if (r != RB_OK) {
        unlink(tmp);
        return r;
    }
    /* CRASH POINT: killed here, the temp file stays and is swept by the next
     * create; nobody ever attached to it.  link(2) never replaces an
     * existing name: if another user made "rbuf.<prefix>" first, we get
     * EEXIST and rb_open's trust check on the file it then opens refuses
     * theirs. */
    r = link(tmp, path) == 0 ? RB_OK : (errno == EEXIST ? 1 : -errno);
    unlink(tmp); /* made by the O_EXCL open above: ours */
    if (r < 0)
        return rb_fail(RB_E_SYS, "link %s -> %s: %s", tmp, path, strerror(-r));
    return r;
}

int rb_open(const char *prefix, const rb_options *opts, rb_seg **out)
{
    rb_options defaults = {0};
    const rb_options *o = opts ? opts : &defaults;
    int r = check_prefix(prefix);
    if (r != RB_OK)
        return r;
    if (o->slots > RB_SLOTS_LIMIT || o->max_record > RB_MAX_RECORD_LIMIT ||
        o->waiters > RB_WAITERS_LIMIT)
        return rb_fail(RB_E_INVAL, "options out of range: slots=%u max_record=%u waiters=%u",
                       o->slots, o->max_record, o->waiters);
    if (o->mode > 0777)
        return rb_fail(RB_E_INVAL, "mode 0%o is out of range: permission bits 0..0777 only "
                       "(no setuid, setgid or sticky bit)", o->mode);
    if (o->n_trusted > RB_TRUSTED_MAX || (o->n_trusted && o->trusted_uids == NULL))
        return rb_fail(RB_E_INVAL, "trusted_uids: at most %d uids, got %u", RB_TRUSTED_MAX,
                       o->n_trusted);
    rb_trust trust = {.mode = o->mode ? o->mode : 0600, .n = o->n_trusted};
    for (uint32_t i = 0; i < o->n_trusted; i++)
        trust.uids[i] = o->trusted_uids[i];

    char path[300], fix[300];
    seg_path(path, sizeof path, prefix);
    snprintf(fix, sizeof fix, "Remove it (ipc-layer rm --prefix %s --force)", prefix);
    int fd = -1;
    for (int attempt = 0; attempt < 8 && fd < 0; attempt++) {
        fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0 || errno != ENOENT)
            break;
        if (!o->create)
            return rb_fail(RB_E_NOTFOUND, "no segment for prefix %s (%s)", prefix, path);
        r = create_segment(prefix, o, &trust);
        if (r < 0)
            return r;
    }
    if (fd < 0)
        return rb_fail(RB_E_SYS, "open %s: %s", path, strerror(errno));

    /* Trust before use, on this very descriptor (no check/use window): the
     * file we map is the file we checked, whoever renames what meanwhile. */
    r = rb_check_trust(&trust, fd, path, "segment", S_IFREG, fix);
    if (r != RB_OK) {
        close(fd);
        return r;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(rb_header)) {
        close(fd);
        return rb_fail(RB_E_MAGIC, "segment %s is %lld bytes, too small to be a ring-buffer segment",
                       path, (long long)st.st_size);
    }
    unsigned char *base = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        int e = errno;
        close(fd);
        return rb_fail(RB_E_SYS, "mmap %s: %s", path, strerror(e));
    }
    rb_header *h = (rb_header *)base;
    /* Validate a private copy: the acquire load of the magic pairs with the
     * creator's release store (the whole header is there once it is). */
    rb_header hc;
    RB_LOAD_ACQUIRE(&h->magic);
    memcpy(&hc, h, sizeof hc);
    int code = rb_validate_header(&hc, (uint64_t)st.st_size, path, prefix);
    if (code != RB_OK) {
        munmap(base, (size_t)st.st_size);
        close(fd);
        return code;
    }
    rb_seg *s = calloc(1, sizeof *s);
    if (!s) {
        munmap(base, (size_t)st.st_size);
        close(fd);
        return rb_fail(RB_E_SYS, "out of memory");
    }
    s->base = base;
    s->hdr = h;
    s->size = (size_t)st.st_size;
    s->fd = fd;
    s->file_mode = (uint32_t)st.st_mode & 0777;
    s->lock_timeout_ns = o->lock_timeout_ns ? o->lock_timeout_ns : RB_DEFAULT_LOCK_TIMEOUT_NS;
    s->trust = trust;
    snprintf(s->prefix, sizeof s->prefix, "%s", prefix);
    attach_views(s, &hc);
    /* Mark this process attached for as long as the descriptor lives
     * (inherited across fork, dropped by the kernel at death). */
    flock(fd, LOCK_SH);
    *out = s;
    return RB_OK;
}

void rb_close(rb_seg *s)
{
    if (!s)
        return;
    munmap(s->base, s->size);
    close(s->fd);
    free(s);
}

/* 1 if attached, 0 if not, <0 error; *owner (if not NULL) gets the file's uid. */
static int attached_owner(const char *prefix, uint32_t *owner)
{
    int r = check_prefix(prefix);
    if (r != RB_OK)
        return r;
    char path[300];
    seg_path(path, sizeof path, prefix);
    /* O_NONBLOCK: a FIFO planted under the segment's name must not block us. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return errno == ENOENT ? rb_fail(RB_E_NOTFOUND, "no segment for prefix %s (%s)", prefix, path)
                               : rb_fail(RB_E_SYS, "open %s: %s", path, strerror(errno));
    struct stat st;
    if (owner != NULL)
        *owner = fstat(fd, &st) == 0 ? (uint32_t)st.st_uid : (uint32_t)-1;
    int busy = flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return busy ? 1 : 0;
}

int rb_attached(const char *prefix) { return attached_owner(prefix, NULL); }

int rb_unlink(const char *prefix, int force)
{
    uint32_t owner = (uint32_t)-1;
    int r = attached_owner(prefix, &owner);
    if (r < 0)
        return r;
    if (r == 1 && !force)
        return rb_fail(RB_E_BUSY, "segment for prefix %s is still attached by a process; "
                                  "stop them or force the removal", prefix);
    char path[300];
    seg_path(path, sizeof path, prefix);
    if (unlink(path) != 0)
        return errno == ENOENT ? rb_fail(RB_E_NOTFOUND, "no segment for prefix %s", prefix)
                               : rb_fail(RB_E_SYS, "unlink %s: %s", path, strerror(errno));
    /* The segment is gone: so are its FD watches' FIFOs (a watcher still
     * mapping it keeps its fds; it just is not poked any more) - those of
     * this uid and of the segment's owner, nobody else's. */
    rb_sweep_watch_fifos(prefix, 1, NULL, owner);
    return RB_OK;
}

/* ---- the lock ---------------------------------------------------------- */

static __thread uint32_t holder_pid;
static __thread char holder_state[40];

/* The thread id owning a robust mutex, from its futex word.  For robust
 * (and PI) futexes the word's low 30 bits ARE the owner's TID: that is the
 * kernel ABI the robust-list cleanup relies on (futex(2), "Robust futexes";
 * FUTEX_TID_MASK), and glibc keeps it in __data.__lock.  Read relaxed: a
 * diagnostic only, possibly stale by the time it is used (the owner may
 * unlock right after); never a decision input.  0 = unlocked, owner died
 * (FUTEX_OWNER_DIED with no TID), or a C library we do not know. */
static uint32_t mutex_owner_tid(pthread_mutex_t *m)
{
#if defined(__GLIBC__)
    return __atomic_load_n((unsigned int *)&m->__data.__lock, __ATOMIC_RELAXED) & 0x3fffffffu;
#else
    (void)m;
    return 0;
#endif
}

/* The process (Tgid) of thread `tid` and its state as /proc words it
 * ("stopped", "tracing stop", "running", "sleeping", ...).  The TID is
 * this pid namespace's view: a holder in another namespace sharing
 * /dev/shm reads as "unknown". */
static void describe_tid(uint32_t tid, uint32_t *pid, char *state, size_t cap)
{
    *pid = 0;
    snprintf(state, cap, "unknown");
    if (tid == 0)
        return;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%u/status", tid);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return;
    while (fgets(line, sizeof line, f) != NULL) {
        unsigned v;
        if (strncmp(line, "State:", 6) == 0) {
            /* "State:\tT (stopped)": keep the words in parentheses */
            char *open_p = strchr(line, '('), *close_p = open_p ? strchr(open_p, ')') : NULL;
            if (open_p && close_p)
                snprintf(state, cap, "%.*s", (int)(close_p - open_p - 1), open_p + 1);
        } else if (sscanf(line, "Tgid: %u", &v) == 1) {
            *pid = v;
        }
    }
    fclose(f);
}

uint32_t rb_last_lock_holder(char *state, size_t cap)
{
    if (state != NULL && cap > 0)
        snprintf(state, cap, "%s", holder_state[0] ? holder_state : "unknown");
    return holder_pid;
}

/* The lock stayed held for lock_timeout: name the holder and give up.
 * Cold and never inlined: its buffers and formatting must not grow the
 * frame (or add a stack-protector check) of rb_lock, which every send and
 * receive of every process runs. */
static __attribute__((noinline, cold)) int lock_timed_out(rb_seg *s, uint64_t waited_ns)
{
    uint32_t tid = mutex_owner_tid(&s->hdr->lock), pid;
    describe_tid(tid, &pid, holder_state, sizeof holder_state);
    holder_pid = pid;
    double secs = (double)waited_ns / 1e9;
    if (pid == 0)
        return rb_fail(RB_E_LOCKED,
                       "segment lock of prefix %s stayed held for %.1f s (lock_timeout) by a "
                       "process this one cannot identify (owner thread %u, state %s); nothing "
                       "was done: retry later",
                       s->prefix, secs, tid, holder_state);
    return rb_fail(RB_E_LOCKED,
                   "segment lock of prefix %s is held by pid %u (%s) for more than %.1f s "
                   "(lock_timeout); nothing was done: retry later. A live holder keeps it until "
                   "it runs again: if it is stopped (SIGSTOP, Ctrl-Z) resume it (kill -CONT %u), "
                   "if traced detach the debugger, else end it",
                   s->prefix, pid, holder_state, secs, pid);
}

/* The contended path of rb_lock, kept out of line so that the uncontended
 * one (every send and receive) keeps its few instructions and small frame.
 * Returns pthread's result (0, EOWNERDEAD, an error number) or RB_E_LOCKED
 * (negative, message set) after lock_timeout. */
static __attribute__((noinline)) int lock_wait(rb_seg *s, pthread_mutex_t *m)
{
    /* Sleep for the lock in bounded slices, never indefinitely.  glibc's
     * robust mutexes can lose a wake-up when a process is SIGKILLed inside
     * pthread_mutex_unlock between releasing the word and FUTEX_WAKE while
     * a third process grabs the lock meanwhile: the kernel's robust-list
     * cleanup only wakes a waiter when the word's owner is 0, and the
     * grabber (who never saw FUTEX_WAITERS) unlocks without a wake.  The
     * sleeper would then wait forever although the lock is free or its
     * owner dead (seen in the multiprocess kill fuzz: word =
     * FUTEX_OWNER_DIED, a waiter asleep).  Re-trying after a timeout
     * re-reads the word: a dead owner gives EOWNERDEAD, a free lock is
     * taken, a live owner is waited for again (with FUTEX_WAITERS set).
     *
     * A live owner that does not run (stopped by SIGSTOP or Ctrl-Z, held
     * by a debugger) cannot be robbed of the lock - its critical section
     * is half done and, unlike a dead one's, may resume at any moment -
     * so after lock_timeout the call gives up with RB_E_LOCKED, naming the
     * holder: nothing was changed, the caller may retry. */
    uint64_t start = rb_now_ns(), limit = s->lock_timeout_ns;
    for (;;) {
        uint64_t waited = rb_now_ns() - start;
        if (waited >= limit)
            return lock_timed_out(s, waited);
        uint64_t slice = limit - waited < RB_LOCK_SLICE_NS ? limit - waited : RB_LOCK_SLICE_NS;
        struct timespec ts;
        clock_gettime(RB_LOCK_CLOCK, &ts);
        ts.tv_nsec += (long)slice;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        int r = RB_TIMED_LOCK(m, &ts);
        if (r == EOWNERDEAD)
            RB_TSAN_ANNOUNCE_LOCK(m);
        if (r != ETIMEDOUT)
            return r;
    }
}

int rb_lock(rb_seg *s)
{
    pthread_mutex_t *m = &s->hdr->lock;
    int r;
    /* A short trylock spin first: critical sections are a few hundred
     * nanoseconds, far less than the futex sleep/wake a contended
     * pthread_mutex_lock would pay. */
    for (int i = 0; i < 200; i++) {
        r = pthread_mutex_trylock(m);
        if (r != EBUSY)
            goto got;
        rb_cpu_relax();
    }
    r = lock_wait(s, m);
    if (r < 0)
        return r; /* RB_E_LOCKED */
got:
    if (r == 0)
        return RB_OK;
    if (r == EOWNERDEAD) {
        /* The previous owner died inside a critical section.  Rebuild the
         * derived state from the primary data, then mark the mutex
         * consistent.  CRASH POINT: if we die during the repair the mutex
         * stays inconsistent and the next locker gets EOWNERDEAD again and
         * repeats the (idempotent) repair. */
        rb_repair(s);
        s->hdr->repairs++;
        pthread_mutex_consistent(m);
        return RB_OK;
    }
    return rb_fail(RB_E_SYS, "segment lock of prefix %s: %s", s->prefix, strerror(r));
}

void rb_unlock(rb_seg *s)
{
    if (RB_LIKELY(!s->damage)) {
        pthread_mutex_unlock(&s->hdr->lock);
        return;
    }
    /* Corruption was found (and repaired) in this lock hold: report it once,
     * after unlocking - the hook may log, and logging may block. */
    char note[sizeof s->note];
    memcpy(note, s->note, sizeof note);
    s->damage = 0;
    pthread_mutex_unlock(&s->hdr->lock);
    rb_log_note(note);
}

int rb_debug_lock(rb_seg *s) { return rb_lock(s); }

void rb_debug_unlock(rb_seg *s) { rb_unlock(s); }

void rb_limits(rb_seg *s, uint32_t *out_max_record, uint64_t *out_size)
{
    if (out_max_record != NULL)
        *out_max_record = s->max_record; /* the validated copy, not the header's */
    if (out_size != NULL)
        *out_size = s->size;
}

/* ---- information -------------------------------------------------------- */

static void fill_info(rb_seg *s, rb_info *o)
{
    rb_header *h = s->hdr;
    memset(o, 0, sizeof *o);
    o->magic = h->magic;
    o->version = h->version;
    o->record_format = h->record_format;
    o->max_record = s->max_record;
    o->size = h->size;
    o->cell_size = h->cell_size;
    o->cells_total = s->cell_count;
    o->cells_free = h->cell_free + (s->cell_count - h->cell_bump);
    o->slots_total = s->slot_count;
    o->slots_used = h->slots_used;
    o->waiters_total = s->waiter_count;
    o->waiters_used = h->waiters_used;
    for (uint32_t i = 0, hi = rb_slot_hi(s); i < hi; i++) {
        uint32_t st = s->slots[i].state;
        o->queues += st == RB_SLOT_QUEUE;
        o->sets += st == RB_SLOT_SET;
        o->members += st == RB_SLOT_MEMBER;
    }
    o->sent = h->sent;
    o->received = h->received;
    o->full = h->full;
    o->expired = h->expired;
    o->repairs = h->repairs;
    o->dropped = h->dropped;
    o->corruptions = h->corruptions;
    o->created_ns = h->created_ns;
    o->creator_pid = h->creator_pid;
}

int rb_info_get(rb_seg *s, rb_info *out)
{
    int r = rb_lock(s);
    if (r != RB_OK)
        return r;
    fill_info(s, out);
    rb_unlock(s);
    return RB_OK;
}

int rb_stat_segment(const char *prefix, rb_info *out)
{
    rb_options o = {0};
    o.create = 0;
    rb_seg *s;
    int r = rb_open(prefix, &o, &s);
    if (r != RB_OK)
        return r;
    r = rb_info_get(s, out);
    rb_close(s);
    return r;
}
