/* Shedder: when a UDP socket's queries outrun its worker, the busiest client prefixes lose
 * theirs first, so that a client asking at a modest rate keeps being answered through a flood.
 *
 *     Shedder(v4_bits, v6_bits, fd=-1)  .admit(peer, behind, now_ms) -> bool  .busy(ns, n)
 *         .behind(fd) -> bool  .share  .shed  .filtered  .kernel_filter  .filter_errno ...
 *
 * Why: a flood that outruns the worker fills the socket's receive queue, and the kernel then
 * drops what arrives without regard to who sent it: every client loses the same fraction, the
 * real ones with the flood's.  NSD and Knot leave it at that.  imrs instead gives every client
 * prefix (the RRL prefixes, /24 and /56 by default) an equal share of what the worker can
 * answer, and a prefix that asks less than its share is answered in full: max-min fairness,
 * the share being the water level of the prefixes' query counts.
 *
 * How: time is cut into windows of SHED_WINDOW_MS.  Counting starts once the worker is behind
 * (its receive queue over an eighth full, and the kernel dropping datagrams for a full queue:
 * a long queue alone can be one client with many queries in flight, which the worker keeps up
 * with).  At each window's end the share is set from the prefixes' averages and from what the
 * worker can read and answer in a window (measured: what it read over the time it was busy,
 * at most what it read in the last window it was busy throughout), aiming at `fill` percent
 * of it; `fill` drops by ten points after a window in which the queue still overflowed with a
 * share set (once the first shares have had SHED_SETTLE_WINDOWS windows to drain the queue
 * the flood's start filled), and creeps back up by one after each that did not.  A prefix's
 * count in a window is what it asked, estimated: scaled up by what an overflowing queue and
 * the kernel filter let through; its average is the mean of that and its average at the end
 * of the window before (a prefix new in the window: its estimate).  A resolver's queries come
 * in bursts, and a few datagrams read of a thinned prefix, scaled up, are a noisy estimate:
 * one window's count alone took real clients in and out of the filter.
 *   - Where the kernel takes it (bpf(2): root or CAP_BPF), an eBPF socket filter (on an IPv4
 *     socket for IPv4 prefixes, on an IPv6 one for IPv6 prefixes) drops a busy prefix's
 *     datagrams before they are queued, keeping each with the
 *     probability share / (its average), so the worker reads about its share and no more:
 *     reading a datagram only to drop it costs about a third of answering it, and a flood can
 *     outrun even that.  A prefix is busy when its average is over twice its share
 *     (SHED_HEAVY), and stays so until it is at its share or less: a client asking about its
 *     share is not made to pay for the noise in the counts and in the measured capacity (the
 *     share moves with them), and a flooding prefix that dips under twice the share for a
 *     window is not let through whole in the next.  When the prefixes between the share and
 *     twice it would not fit whole in the capacity the `fill` keeps in reserve (a flood whose
 *     every prefix asks a little over its share), the busiest of them are busy too
 *     (filter_entry).
 *   - In user space, while the worker is behind, a datagram from a prefix already over its
 *     share and a quarter in this window (over_share) is dropped unanswered (no kernel
 *     filter; with one, over twice its share: one the filter does not thin yet); a
 *     prefix whose average was within its share may burst to SHED_BURST shares.
 * Between two windows' ends, a queue filling past half although the filter holds the busy
 * prefixes to their share means the worker is getting less of the CPU than the share was set
 * for: the filter's keep probabilities are halved at once (filter_brake), before the queue
 * overflows, and again while it grows.  A window with too little read to measure keeps the
 * share, and the filter keeps twice as much of each busy prefix after it (its estimates, made
 * in a burst, were too high).
 * Shedding stops 20 windows after the share was last needed.  A server that keeps up never
 * sheds a query.  Memory is fixed: SHED_SLOTS prefixes are counted per window (one that finds
 * no slot is never shed) and SHED_FILTER_MAX filtered.  udp_drain calls shed_behind once per
 * full batch, shed_admit per datagram and shed_busy once per call.
 */
#include "fastpath.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/sock_diag.h>
#include <stddef.h>
#include <stdlib.h>
#include <structmember.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_MEMINFO
#define SO_MEMINFO 55
#endif

#define SHED_SLOTS 8192        /* prefixes counted per window (a power of two) */
#define SHED_PROBES 8          /* slots tried per prefix */
#define SHED_BINS 4096         /* counts of a window at or over SHED_BINS - 1 share the last bin */
#define SHED_WINDOW_MS 100     /* the counting window */
#define SHED_ARMED_WINDOWS 20  /* windows counted after the worker was last behind or shedding */
#define SHED_NONE UINT32_MAX   /* no share: nothing shed */
#define SHED_NEW UINT32_MAX    /* a prefix not counted in the window before */
#define SHED_BURST 4           /* user space sheds a prefix whose average is within its share past this many shares */
#define SHED_FILL_MIN 50       /* percent of the worker's capacity the shares may be set to fill, */
#define SHED_FILL_MAX 90       /* ... at most, */
#define SHED_FILL_START 80     /* ... at first */
#define SHED_SETTLE_WINDOWS 3  /* windows a first share takes to drain the queue the flood filled */
#define SHED_HEAVY 2           /* the kernel filter thins prefixes asking over this many shares */
#define SHED_OVERFLOW_SLACK 16 /* datagrams of a window's overflow count taken for noise */
#define SHED_MIN_PROCESSED 256 /* datagrams a window must read to measure (fewer: no flood is on) */
#define SHED_FILTER_MAX 2048   /* prefixes the kernel filter can thin out */
#define SHED_BRAKE_MS 10       /* the filter is tightened at most once in this many ms */
#define PREFIX_FOLD 0x9E3779B97F4A7C15ull /* folds the low half of an IPv6 prefix over /64 into its key */

struct shed_filtered { /* three u32s, not a u64 and a u32: 12 octets, not 16, twice SHED_FILTER_MAX times */
    uint32_t key_high, key_low; /* the prefix's table key (prefix_key), its high and low halves */
    uint32_t keep;              /* the map's value: a datagram is kept when a random u32 is below it */
};

struct shed_slot {
    uint64_t key;    /* family and prefix */
    uint32_t window; /* the window its count is of */
    uint32_t count;  /* queries from the prefix in that window; at its end, what it asked,
                        estimated (estimate_arrivals), then smoothed with prev (its average) */
    uint32_t prev;   /* the prefix's average at the end of the window before (SHED_NEW: none) */
};

struct shed_average {
    uint64_t key;    /* family and prefix */
    uint32_t window; /* the window it is of */
    uint32_t avg;    /* the prefix's smoothed count at that window's end */
};

struct Shedder {
    PyObject_HEAD
    int v4_bits, v6_bits;     /* the prefix lengths */
    uint64_t seed;            /* of the table's hash */
    int fd;                   /* the socket (-1: none given) */
    /* the clock and the state of shedding */
    uint32_t window;          /* the current window's number (0 before the first) */
    uint32_t armed_from;      /* counting since the start of this window (0: not counting) */
    uint32_t armed_until;     /* ... through this window */
    uint32_t behind_in;       /* the last window in which the worker was behind */
    uint32_t share;           /* queries per prefix in this window; SHED_NONE: nothing shed */
    uint32_t shared_for;      /* windows the share has been set in a row */
    int fill;                 /* percent of its capacity the shares are set to fill */
    double capacity;          /* datagrams the worker can read and answer in a window (smoothed) */
    double sustained;         /* ... what it did in one it was busy throughout (0: none yet) */
    long long usable;         /* the capacity the share was last set from (fill percent of it) */
    /* this window's measures */
    long long processed;      /* datagrams read, while counting */
    long long busy_ns;        /* the time spent reading and answering them */
    uint32_t drops;           /* the socket's drop count when shed_behind last looked */
    uint32_t tick_drops;      /* ... and at the last window's end */
    long long filtered_total; /* the filter's drop counter at the last window's end */
    /* what the metrics show, in all */
    long long shed;           /* queries dropped in user space */
    long long overflow;       /* datagrams the kernel dropped for a full queue, while counting */
    long long windows_behind; /* windows in which the worker was behind at least once */
    long long filter_updates; /* times the kernel filter's map was rewritten */
    long long brakes;         /* times it was tightened between windows (filter_brake) */
    long long brake_after_ms; /* not again before this time */
    uint32_t brake_queue;     /* ... nor before the queue is longer than it was then (0: below half) */
    /* the kernel filter */
    int map_fd;               /* its map of prefixes to keep thresholds (-1: no kernel filter) */
    int filter_ipv6;          /* the filter is on an IPv6 socket: it thins IPv6 prefixes, not IPv4 ones */
    int count_fd;             /* its counter of datagrams dropped */
    int filter_errno;         /* why the kernel did not take it (0: it did, or no socket given) */
    int n_filtered;           /* prefixes in the map */
    struct shed_filtered filtered[SHED_FILTER_MAX]; /* what the map holds, by key */
    struct shed_filtered next[SHED_FILTER_MAX];     /* what it is to hold (filter_update) */
    uint32_t hist[SHED_BINS];  /* prefixes by their count in the window (made at its end) */
    long long top_sum;         /* the queries of those in its last bin */
    struct shed_slot table[SHED_SLOTS];
    struct shed_average last[SHED_SLOTS]; /* the table's averages at the end of window last_window */
    uint32_t last_window;
};

static uint32_t socket_drops(int fd);

/* The socket's memory figures (SO_MEMINFO), its drop count among them; -1 when the kernel
 * does not give them (no socket, an old kernel). */
static int
read_meminfo(int fd, uint32_t mem[SK_MEMINFO_VARS])
{
    socklen_t len = SK_MEMINFO_VARS * sizeof(uint32_t);
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0 || len < (SK_MEMINFO_DROPS + 1) * sizeof(uint32_t))
        return -1;
    return 0;
}
static long long filter_dropped(Shedder *s);
static void filter_update(Shedder *s);
static void filter_brake(Shedder *s, long long now_ms, uint32_t queue, int full);
static void filter_rescale(Shedder *s, int up);
static void estimate_arrivals(Shedder *s, long long overflow);

/* The largest share T with sum over prefixes of min(count, T) <= capacity, from the window's
 * histogram of counts (the water level of max-min fairness); SHED_NONE when all fit whole.
 * The last bin holds the prefixes of SHED_BINS - 1 queries or more, `top_sum` their queries:
 * a level above it is shared out among them evenly (a little low when some of them ask less
 * than that level: they would fit whole). */
static uint32_t
water_level(const uint32_t *hist, long long top_sum, long long capacity)
{
    long long at_least = 0; /* prefixes with a count >= T */
    for (int c = 1; c < SHED_BINS; c++)
        at_least += hist[c];
    long long sum = 0, below = 0; /* sum(min(count, T)); the queries of prefixes under T */
    for (uint32_t t = 1; t < SHED_BINS && at_least > 0; t++) {
        sum += at_least;
        if (sum > capacity)
            return t > 1 ? t - 1 : 1;
        at_least -= hist[t];
        below += (long long)t * hist[t];
    }
    long long top = hist[SHED_BINS - 1];
    if (top == 0 || below - (long long)(SHED_BINS - 1) * top + top_sum <= capacity)
        return SHED_NONE;
    long long level = (capacity - (below - (long long)(SHED_BINS - 1) * top)) / top;
    return level >= UINT32_MAX ? SHED_NONE - 1 : (uint32_t)level;
}

/* Move the clock to window `now`.  When the one that ended was counted whole (and was the one
 * just before), the new share is the water level of its prefixes' counts (what each asked,
 * estimated where the kernel filter thinned it) at `fill` percent of what the worker can read
 * and answer in a window (what it read over the time it was busy, scaled to a window). */
static void
shed_tick(Shedder *s, uint32_t now)
{
    if (now == s->window)
        return;
    int whole = s->armed_from != 0 && s->armed_from < s->window && now == s->window + 1;
    int stays = 0; /* the share is kept as it was (too little read to measure) */
    /* what the kernel dropped for a full queue in the ending window, its drops less the
     * filter's: read while counting only (a calm socket costs no system call here) */
    long long overflow = 0;
    if (s->armed_from != 0) {
        long long filtered_now = filter_dropped(s);
        uint32_t drops_now = socket_drops(s->fd);
        overflow = (long long)(uint32_t)(drops_now - s->tick_drops) - (filtered_now - s->filtered_total);
        s->filtered_total = filtered_now;
        s->tick_drops = drops_now;
        if (overflow > 0)
            s->overflow += overflow;
    }
    if (!whole)
        s->share = SHED_NONE;
    else {
        estimate_arrivals(s, overflow);
        /* the fill aimed at: lower after a window the queue overflowed although it had a share
         * (before there was one, as a flood begins, it overflows whatever the fill), a little
         * higher after one it did not (a few datagrams of difference are the two counters read
         * a moment apart) */
        if (overflow > SHED_OVERFLOW_SLACK && s->shared_for >= SHED_SETTLE_WINDOWS)
            s->fill = s->fill > SHED_FILL_MIN + 10 ? s->fill - 10 : SHED_FILL_MIN;
        else if (overflow <= SHED_OVERFLOW_SLACK)
            s->fill = s->fill < SHED_FILL_MAX ? s->fill + 1 : SHED_FILL_MAX;
        if (s->processed >= SHED_MIN_PROCESSED && s->busy_ns > 0) {
            double capacity = (double)s->processed * SHED_WINDOW_MS * 1e6 / (double)s->busy_ns;
            s->capacity = s->capacity > 0 ? (3 * s->capacity + capacity) / 4 : capacity;
            /* What a worker does in short bursts overstates what it can keep up when another
             * process wants the core too (the scheduler favours the one that slept): a window
             * it was busy throughout shows what it kept up, and bounds the capacity, the bound
             * creeping up by 2 % a window after that. */
            if (s->busy_ns >= (long long)SHED_WINDOW_MS * 900000)
                s->sustained = s->sustained > 0 ? (s->sustained + s->processed) / 2 : (double)s->processed;
            else if (s->sustained > 0)
                s->sustained *= 1.02;
            double usable = s->sustained > 0 && s->sustained < s->capacity ? s->sustained : s->capacity;
            s->usable = (long long)usable;
            s->share = water_level(s->hist, s->top_sum, (long long)(usable * s->fill / 100));
        }
        else if (s->share != SHED_NONE) {
            /* So little read with a share set: the filter holding the flood back too hard (its
             * estimates made in a burst), or the flood pausing, leaves too little to measure.
             * The share stays, and the filter keeps twice as much of each prefix, until there
             * is enough to measure again; shedding stops when the worker has not been behind
             * for SHED_ARMED_WINDOWS (emptying the filter at once would let the whole flood in
             * for the next window, the queue overflowing). */
            stays = 1;
            filter_rescale(s, 1);
        }
        if (s->share != SHED_NONE && !stays)
            s->armed_until = now + SHED_ARMED_WINDOWS; /* still shedding: still counting */
    }
    if (s->armed_from != 0 && now > s->armed_until) {
        s->armed_from = 0;
        s->share = SHED_NONE;
        s->capacity = 0;
        s->sustained = 0;
    }
    s->shared_for = s->share == SHED_NONE ? 0 : s->shared_for + 1;
    if (!stays && (whole || s->n_filtered > 0))
        filter_update(s); /* from the ending window's estimates; emptied when there is no share */
    if (whole) { /* the next window's prefixes find their averages here */
        for (size_t i = 0; i < SHED_SLOTS; i++)
            s->last[i] = (struct shed_average){s->table[i].key, s->table[i].window, s->table[i].count};
        s->last_window = s->window;
    }
    s->window = now;
    s->processed = 0;
    s->busy_ns = 0;
}

/* Can the kernel filter thin this table key's prefix?  It is on the socket, and the prefix is
 * of the socket's family (an IPv4 key has the top bit set; an IPv6 socket's filter keeps the
 * IPv4 datagrams a dual-stack socket may get). */
static inline int
filterable(const Shedder *s, uint64_t key)
{
    return s->map_fd >= 0 && (int)(key >> 63) != s->filter_ipv6;
}

/* What a prefix may ask in a window before user space sheds it: its share and a quarter, so
 * that a client asking about its share does not pay for the noise in its own count or in the
 * measured capacity.  Where the kernel filter holds the busy prefixes to their share, user
 * space only catches one the filter does not thin yet, over the filter's own threshold.  A
 * prefix whose average was within its share may burst to SHED_BURST shares: a resolver's
 * queries come in bursts, and an average within its share is not a flood. */
static inline uint64_t
over_share(const Shedder *s, const struct shed_slot *slot)
{
    if (s->share == SHED_NONE)
        return UINT64_MAX;
    if (slot->prev != SHED_NEW && slot->prev <= s->share)
        return (uint64_t)SHED_BURST * s->share;
    return filterable(s, slot->key) ? (uint64_t)SHED_HEAVY * s->share : (uint64_t)s->share + s->share / 4;
}

static uint64_t
prefix_key(const Shedder *s, const unsigned char *addr, int alen)
{
    if (alen == 16 && ipv4_mapped(addr)) {
        addr += 12;
        alen = 4;
    }
    if (alen == 4) {
        uint32_t a = ((uint32_t)addr[0] << 24) | ((uint32_t)addr[1] << 16) | ((uint32_t)addr[2] << 8) | addr[3];
        uint32_t masked = s->v4_bits == 0 ? 0 : a & (0xFFFFFFFFu << (32 - s->v4_bits));
        return ((uint64_t)1 << 63) | masked;
    }
    uint64_t high = 0, low = 0;
    for (int i = 0; i < 8; i++) {
        high = (high << 8) | addr[i];
        low = (low << 8) | addr[8 + i];
    }
    /* the prefix's bits (at most 64 of a /64 or shorter are kept whole; longer ones fold) */
    if (s->v6_bits <= 64) {
        high = s->v6_bits == 0 ? 0 : high & (~(uint64_t)0 << (64 - s->v6_bits));
        return high & ~((uint64_t)1 << 63);
    }
    low = s->v6_bits == 128 ? low : low & (~(uint64_t)0 << (128 - s->v6_bits));
    return (high ^ (low * PREFIX_FOLD)) & ~((uint64_t)1 << 63);
}

long long
shed_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    return (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The prefix's smoothed estimate at the end of the window before this one (the table as it
 * was then: its slots sit where they sit in this one's), SHED_NEW when it was not counted. */
static uint32_t
last_avg(const Shedder *s, uint64_t key, size_t at)
{
    if (s->last_window == 0 || s->last_window + 1 != s->window)
        return SHED_NEW;
    for (int i = 0; i < SHED_PROBES; i++) {
        const struct shed_average *t = &s->last[(at + i) & (SHED_SLOTS - 1)];
        if (t->window != s->last_window)
            return SHED_NEW;
        if (t->key == key)
            return t->avg;
    }
    return SHED_NEW;
}

/* The prefix's slot in this window (taken for it when `take` and it has none), NULL when it
 * has none (or the table is full along its probes).  Within a window slots are only taken,
 * so the first slot of another window along the probes ends the search. */
static struct shed_slot *
find_slot(Shedder *s, uint64_t key, int take)
{
    uint64_t h = (key ^ s->seed) * 0x9E3779B97F4A7C15ull;
    size_t at = (size_t)(h >> 40) & (SHED_SLOTS - 1);
    for (int i = 0; i < SHED_PROBES; i++) {
        struct shed_slot *t = &s->table[(at + i) & (SHED_SLOTS - 1)];
        if (t->window == s->window && t->key == key)
            return t;
        if (t->window != s->window) {
            if (!take)
                return NULL;
            t->window = s->window;
            t->key = key;
            t->count = 0;
            t->prev = last_avg(s, key, at);
            return t;
        }
    }
    return NULL;
}

int
shed_admit(Shedder *s, const unsigned char *addr, int alen, int behind, long long now_ms)
{
    shed_tick(s, (uint32_t)(now_ms / SHED_WINDOW_MS) + 1);
    if (s->armed_from == 0)
        return 1; /* not behind lately: nothing counted, nothing shed */
    struct shed_slot *slot = find_slot(s, prefix_key(s, addr, alen), 1);
    if (slot == NULL)
        return 1; /* the table is full along this prefix's probes: not counted */
    slot->count++;
    if (behind && slot->count > over_share(s, slot)) {
        s->shed++;
        return 0;
    }
    return 1;
}

/* ---- the kernel filter: the same shedding before the datagram is queued on the socket ----
 * Reading a datagram the worker then sheds still costs it the kernel's receive work, about a
 * third of what answering costs; a flood can outrun even that.  So where the kernel allows it
 * (bpf(2): root or CAP_BPF), an eBPF socket filter looks the source's
 * prefix up in a map and keeps its datagrams with the map's probability (share / the
 * prefix's rate), so that what the worker reads of a busy prefix is about its share.  The map
 * is rewritten at each window's end from the counts (scaled by what the filter let through). */

static int
bpf_call(int cmd, union bpf_attr *attr)
{
    return (int)syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

#define INSN(c, d, sr, o, i) ((struct bpf_insn){.code = (c), .dst_reg = (d), .src_reg = (sr), .off = (o), .imm = (i)})

/* A filter program being put together: its instructions, and the jumps to its "keep" exit
 * (patched once that is placed). */
struct filter_prog {
    struct bpf_insn insn[64]; /* the longest (IPv6, a prefix over /64) has 48 */
    size_t n;
    size_t to_keep[4], n_to_keep;
};

static void
emit(struct filter_prog *p, struct bpf_insn insn)
{
    if (p->n < sizeof p->insn / sizeof p->insn[0])
        p->insn[p->n] = insn;
    p->n++; /* past the end: filter_attach refuses the program (E2BIG) */
}

/* dst = a 64-bit constant (two instructions) */
static void
emit_imm64(struct filter_prog *p, int dst, uint64_t value)
{
    emit(p, INSN(BPF_LD | BPF_DW | BPF_IMM, dst, 0, 0, (int32_t)(uint32_t)value));
    emit(p, INSN(0, 0, 0, 0, (int32_t)(uint32_t)(value >> 32)));
}

/* if (dst op imm) goto keep */
static void
emit_keep_if(struct filter_prog *p, int op, int dst, int32_t imm)
{
    p->to_keep[p->n_to_keep++] = p->n;
    emit(p, INSN(BPF_JMP | op | BPF_K, dst, 0, 0, imm));
}

/* Octets [offset, offset + len) of the network header to the stack at `at`; keep the
 * datagram when they cannot be read. */
static void
emit_load_net(struct filter_prog *p, int offset, int at, int len)
{
    emit(p, INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_1, BPF_REG_6, 0, 0));
    emit(p, INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_2, 0, 0, offset));
    emit(p, INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_3, BPF_REG_10, 0, 0));
    emit(p, INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_3, 0, 0, at));
    emit(p, INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_4, 0, 0, len));
    emit(p, INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_5, 0, 0, BPF_HDR_START_NET));
    emit(p, INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_skb_load_bytes_relative));
    emit_keep_if(p, BPF_JNE, BPF_REG_0, 0);
}

/* The filter on socket fd: a map of source prefixes (`bits` long) to keep thresholds, looked
 * up by the key the table counts the prefix under (prefix_key; for IPv4 the prefix as the
 * packet has it, in network order).  The map's fd, or -1 (errno set) when the kernel does not
 * take it; *count_out: the fd of its counter of datagrams dropped. */
static int
filter_attach(int fd, int ipv6, int bits, int *count_out)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_type = BPF_MAP_TYPE_HASH;
    attr.key_size = ipv6 ? 8 : 4;
    attr.value_size = 4;
    attr.max_entries = 2 * SHED_FILTER_MAX; /* the new entries go in before the old ones go */
    int map_fd = bpf_call(BPF_MAP_CREATE, &attr);
    if (map_fd < 0)
        return -1;
    attr.map_type = BPF_MAP_TYPE_ARRAY; /* one counter: the datagrams the filter dropped */
    attr.key_size = 4;
    attr.value_size = 8;
    attr.max_entries = 1;
    int count_fd = bpf_call(BPF_MAP_CREATE, &attr);
    if (count_fd < 0) {
        close(map_fd);
        return -1;
    }
    *count_out = count_fd;
    struct filter_prog p = {.n = 0};
    emit(&p, INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_6, BPF_REG_1, 0, 0)); /* r6 = skb */
    if (!ipv6) { /* the IPv4 source address, masked, to the stack at -8 */
        uint32_t mask = bits == 0 ? 0 : htonl(0xFFFFFFFFu << (32 - bits));
        emit_load_net(&p, 12, -8, 4);
        emit(&p, INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_10, -8, 0));
        emit(&p, INSN(BPF_ALU | BPF_AND | BPF_K, BPF_REG_0, 0, 0, (int32_t)mask));
        emit(&p, INSN(BPF_STX | BPF_MEM | BPF_W, BPF_REG_10, BPF_REG_0, -8, 0));
    }
    else { /* prefix_key of the IPv6 source address to the stack at -8 (an IPv4 datagram on a
            * dual-stack socket is kept: its IPv4 prefix is not in this map) */
        emit(&p, INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_0, BPF_REG_6, offsetof(struct __sk_buff, protocol), 0));
        emit_keep_if(&p, BPF_JNE, BPF_REG_0, htons(ETH_P_IPV6));
        emit_load_net(&p, 8, -24, 16);
        emit(&p, INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_10, -24, 0)); /* high = its first 8 octets */
        emit(&p, INSN(BPF_ALU | BPF_END | BPF_TO_BE, BPF_REG_0, 0, 0, 64));        /* ... as a number */
        uint64_t no_family = ~((uint64_t)1 << 63);
        if (bits <= 64)
            emit_imm64(&p, BPF_REG_1, (bits == 0 ? 0 : ~(uint64_t)0 << (64 - bits)) & no_family);
        else {
            emit(&p, INSN(BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_2, BPF_REG_10, -16, 0)); /* low */
            emit(&p, INSN(BPF_ALU | BPF_END | BPF_TO_BE, BPF_REG_2, 0, 0, 64));
            if (bits < 128) {
                emit_imm64(&p, BPF_REG_1, ~(uint64_t)0 << (128 - bits));
                emit(&p, INSN(BPF_ALU64 | BPF_AND | BPF_X, BPF_REG_2, BPF_REG_1, 0, 0));
            }
            emit_imm64(&p, BPF_REG_1, PREFIX_FOLD);
            emit(&p, INSN(BPF_ALU64 | BPF_MUL | BPF_X, BPF_REG_2, BPF_REG_1, 0, 0));
            emit(&p, INSN(BPF_ALU64 | BPF_XOR | BPF_X, BPF_REG_0, BPF_REG_2, 0, 0));
            emit_imm64(&p, BPF_REG_1, no_family);
        }
        emit(&p, INSN(BPF_ALU64 | BPF_AND | BPF_X, BPF_REG_0, BPF_REG_1, 0, 0));
        emit(&p, INSN(BPF_STX | BPF_MEM | BPF_DW, BPF_REG_10, BPF_REG_0, -8, 0));
    }
    /* the prefix's keep threshold; a random u32 under it keeps the datagram */
    emit(&p, INSN(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, map_fd));
    emit(&p, INSN(0, 0, 0, 0, 0));
    emit(&p, INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0));
    emit(&p, INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -8));
    emit(&p, INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem));
    emit_keep_if(&p, BPF_JEQ, BPF_REG_0, 0);                               /* not in the map */
    emit(&p, INSN(BPF_LDX | BPF_MEM | BPF_W, BPF_REG_7, BPF_REG_0, 0, 0)); /* r7 = its keep threshold */
    emit(&p, INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_prandom_u32));
    emit(&p, INSN(BPF_JMP | BPF_JGE | BPF_X, BPF_REG_0, BPF_REG_7, 2, 0)); /* over it: drop */
    for (size_t i = 0; i < p.n_to_keep && p.n < sizeof p.insn / sizeof p.insn[0]; i++)
        p.insn[p.to_keep[i]].off = (int16_t)(p.n - p.to_keep[i] - 1);
    emit(&p, INSN(BPF_ALU | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, -1));        /* keep (the whole datagram) */
    emit(&p, INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    emit(&p, INSN(BPF_ST | BPF_MEM | BPF_W, BPF_REG_10, 0, -32, 0));       /* drop: counted */
    emit(&p, INSN(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, count_fd));
    emit(&p, INSN(0, 0, 0, 0, 0));
    emit(&p, INSN(BPF_ALU64 | BPF_MOV | BPF_X, BPF_REG_2, BPF_REG_10, 0, 0));
    emit(&p, INSN(BPF_ALU64 | BPF_ADD | BPF_K, BPF_REG_2, 0, 0, -32));
    emit(&p, INSN(BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_map_lookup_elem));
    emit(&p, INSN(BPF_JMP | BPF_JEQ | BPF_K, BPF_REG_0, 0, 2, 0));
    emit(&p, INSN(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_1, 0, 0, 1));
    emit(&p, INSN(BPF_STX | BPF_XADD | BPF_DW, BPF_REG_0, BPF_REG_1, 0, 0)); /* atomic add */
    emit(&p, INSN(BPF_ALU | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0));
    emit(&p, INSN(BPF_JMP | BPF_EXIT, 0, 0, 0, 0));
    if (p.n > sizeof p.insn / sizeof p.insn[0]) {
        close(map_fd);
        close(count_fd);
        errno = E2BIG;
        return -1;
    }
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_SOCKET_FILTER;
    attr.insns = (uint64_t)(uintptr_t)p.insn;
    attr.insn_cnt = (uint32_t)p.n;
    attr.license = (uint64_t)(uintptr_t) "Dual BSD/GPL";
    int prog_fd = bpf_call(BPF_PROG_LOAD, &attr);
    if (prog_fd < 0 || setsockopt(fd, SOL_SOCKET, SO_ATTACH_BPF, &prog_fd, sizeof prog_fd) < 0) {
        int saved = errno;
        if (prog_fd >= 0)
            close(prog_fd);
        close(map_fd);
        close(count_fd);
        errno = saved;
        return -1;
    }
    close(prog_fd); /* the socket holds the program */
    return map_fd;
}

/* What the kernel filter dropped, in all (0 without it). */
static long long
filter_dropped(Shedder *s)
{
    if (s->count_fd < 0)
        return 0;
    uint32_t key = 0;
    uint64_t value = 0;
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_fd = (uint32_t)s->count_fd;
    attr.key = (uint64_t)(uintptr_t)&key;
    attr.value = (uint64_t)(uintptr_t)&value;
    return bpf_call(BPF_MAP_LOOKUP_ELEM, &attr) == 0 ? (long long)value : s->filtered_total;
}

static uint64_t
filtered_key(const struct shed_filtered *entry)
{
    return ((uint64_t)entry->key_high << 32) | entry->key_low;
}

static int
compare_filtered(const void *a, const void *b)
{
    uint64_t x = filtered_key(a), y = filtered_key(b);
    return x < y ? -1 : x > y;
}

/* The map's key for a filtered prefix, in out: 4 octets on an IPv4 socket (the prefix in
 * network order, as the packet has it), 8 on an IPv6 one (its table key, which the filter
 * computes as prefix_key does). */
static void
filter_map_key(const Shedder *s, const struct shed_filtered *entry, unsigned char out[8])
{
    if (s->filter_ipv6) {
        uint64_t key = filtered_key(entry);
        memcpy(out, &key, 8);
    }
    else {
        uint32_t key = htonl(entry->key_low);
        memcpy(out, &key, 4);
    }
}

/* At the end of a window counted whole, each prefix's count becomes what it asked, estimated:
 * scaled up by what the full queue let through (its overflow struck every prefix alike) and
 * by what the kernel filter let through of it; and the histogram is made of them.  Without
 * the first, an overflowing queue makes every prefix look smaller than it is, the filter lets
 * more of them through, and the queue overflows more. */
static void
estimate_arrivals(Shedder *s, long long overflow)
{
    if (overflow > SHED_OVERFLOW_SLACK && s->processed > 0) {
        double scale = (double)(s->processed + overflow) / (double)s->processed;
        for (size_t i = 0; i < SHED_SLOTS; i++) {
            struct shed_slot *t = &s->table[i];
            if (t->window == s->window) {
                double estimate = t->count * scale;
                t->count = estimate >= UINT32_MAX ? UINT32_MAX : (uint32_t)estimate;
            }
        }
    }
    for (int i = 0; i < s->n_filtered; i++) {
        struct shed_slot *slot = find_slot(s, filtered_key(&s->filtered[i]), 0);
        if (slot != NULL && s->filtered[i].keep > 0) {
            uint64_t estimate = ((uint64_t)slot->count << 32) / s->filtered[i].keep;
            slot->count = estimate > UINT32_MAX ? UINT32_MAX : (uint32_t)estimate;
        }
    }
    memset(s->hist, 0, sizeof s->hist);
    s->top_sum = 0;
    for (size_t i = 0; i < SHED_SLOTS; i++) {
        struct shed_slot *t = &s->table[i];
        if (t->window != s->window)
            continue;
        /* smoothed over the windows before: a prefix's count in one window moves with its
         * bursts and with the noise of the estimate (a few datagrams read of a thinned
         * prefix, scaled up); a prefix new this window is taken at its word */
        if (t->prev != SHED_NEW)
            t->count = (uint32_t)(((uint64_t)t->prev + t->count) / 2);
        s->hist[t->count < SHED_BINS - 1 ? t->count : SHED_BINS - 1]++;
        if (t->count >= SHED_BINS - 1)
            s->top_sum += t->count;
    }
}

/* The map's entry for one prefix, written. */
static void
filter_put(Shedder *s, const struct shed_filtered *entry)
{
    unsigned char key[8];
    filter_map_key(s, entry, key);
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.map_fd = (uint32_t)s->map_fd;
    attr.key = (uint64_t)(uintptr_t)key;
    attr.value = (uint64_t)(uintptr_t)&entry->keep;
    attr.flags = BPF_ANY;
    bpf_call(BPF_MAP_UPDATE_ELEM, &attr);
}

/* The average over which a prefix enters the filter: SHED_HEAVY shares, or less where the
 * prefixes between the share and that would not fit whole in what the shares leave of the
 * worker's capacity (the 100 - fill percent kept in reserve): a flood whose every prefix
 * asks a little over its share must still be thinned, the busiest prefixes first. */
static uint64_t
filter_entry(const Shedder *s)
{
    uint64_t t = s->share, heavy = (uint64_t)SHED_HEAVY * t;
    if (t + 1 >= SHED_BINS)
        return heavy;
    long long fitted = 0; /* what the shares let through: sum of min(avg, T) */
    for (uint64_t a = 1; a < SHED_BINS; a++)
        fitted += (long long)s->hist[a] * (long long)(a < t ? a : t);
    long long room = s->usable - fitted, excess = 0;
    for (uint64_t a = t + 1; a <= heavy && a < SHED_BINS - 1; a++) {
        excess += (long long)s->hist[a] * (long long)(a - t);
        if (excess > room)
            return a - 1;
    }
    return heavy;
}

/* At the end of a window: the map gets each prefix of the socket's family whose average is
 * over the new share and over the entry bar (or was in the map already), with the probability
 * that thins it to the share (none without a share). */
static void
filter_update(Shedder *s)
{
    if (s->map_fd < 0 || (s->share == SHED_NONE && s->n_filtered == 0))
        return;
    int n = 0;
    uint64_t entry = s->share == SHED_NONE ? 0 : filter_entry(s);
    if (s->share != SHED_NONE)
        for (size_t i = 0; i < SHED_SLOTS && n < SHED_FILTER_MAX; i++) {
            struct shed_slot *t = &s->table[i];
            if (t->window != s->window || !filterable(s, t->key) || t->count <= s->share)
                continue;
            s->next[n].key_high = (uint32_t)(t->key >> 32);
            s->next[n].key_low = (uint32_t)t->key;
            /* a prefix enters the filter asking over SHED_HEAVY shares (or the entry bar, when
             * less), and leaves it asking its share or less: the counts' noise does not take a
             * busy prefix in and out */
            if (t->count <= entry &&
                bsearch(&s->next[n], s->filtered, (size_t)s->n_filtered, sizeof s->filtered[0], compare_filtered) == NULL)
                continue;
            s->next[n].keep = (uint32_t)(((uint64_t)s->share << 32) / t->count);
            n++;
        }
    qsort(s->next, (size_t)n, sizeof s->next[0], compare_filtered);
    for (int i = 0; i < n; i++)
        filter_put(s, &s->next[i]);
    union bpf_attr attr;
    for (int i = 0; i < s->n_filtered; i++) {
        if (bsearch(&s->filtered[i], s->next, (size_t)n, sizeof s->next[0], compare_filtered) != NULL)
            continue;
        unsigned char key[8];
        filter_map_key(s, &s->filtered[i], key);
        memset(&attr, 0, sizeof attr);
        attr.map_fd = (uint32_t)s->map_fd;
        attr.key = (uint64_t)(uintptr_t)key;
        bpf_call(BPF_MAP_DELETE_ELEM, &attr);
    }
    memcpy(s->filtered, s->next, (size_t)n * sizeof s->next[0]);
    s->n_filtered = n;
    s->filter_updates++;
}

/* The queue is over half full although the filter holds the busy prefixes to their share:
 * the worker is getting less of the CPU than the share was set for (another process took
 * it), and the window's end would come too late, the queue overflowing and the kernel
 * dropping at random, the real clients' queries too.  So what the filter keeps of each busy
 * prefix is halved now, and again after SHED_BRAKE_MS if the queue is longer still (`queue`,
 * in octets) or nearly `full`.  A queue that long but draining needs no more: halving on
 * every look while a deep queue drains thinned the flood to nothing, starving the worker in
 * the next window and making each prefix's estimate (what was read over what was kept)
 * swing.  (The window's counts look a little larger than they were: the next share errs low.) */
static void
filter_brake(Shedder *s, long long now_ms, uint32_t queue, int full)
{
    if (s->map_fd < 0 || s->n_filtered == 0 || s->share == SHED_NONE || now_ms < s->brake_after_ms ||
        (queue <= s->brake_queue && !full))
        return;
    s->brake_after_ms = now_ms + SHED_BRAKE_MS;
    s->brake_queue = queue;
    filter_rescale(s, 0);
    s->brakes++;
}

/* What the filter keeps of each prefix, doubled (up) or halved. */
static void
filter_rescale(Shedder *s, int up)
{
    for (int i = 0; i < s->n_filtered; i++) {
        uint32_t keep = s->filtered[i].keep;
        s->filtered[i].keep = !up ? keep / 2 : keep >= UINT32_MAX / 2 ? UINT32_MAX : keep * 2;
        filter_put(s, &s->filtered[i]);
    }
}

void
shed_busy(Shedder *s, long long ns, long long datagrams)
{
    if (s->armed_from != 0) {
        s->busy_ns += ns;
        s->processed += datagrams;
    }
}

/* The worker is behind now: counting, and the shedding it allows, go on for another
 * SHED_ARMED_WINDOWS windows. */
static void
shed_mark_behind(Shedder *s, long long now_ms)
{
    shed_tick(s, (uint32_t)(now_ms / SHED_WINDOW_MS) + 1);
    if (s->behind_in != s->window) {
        s->behind_in = s->window;
        s->windows_behind++;
    }
    if (s->armed_from == 0) { /* counting starts: the overflow is counted from now */
        s->armed_from = s->window;
        s->tick_drops = socket_drops(s->fd);
        s->filtered_total = filter_dropped(s);
    }
    s->armed_until = s->window + SHED_ARMED_WINDOWS;
}

/* Whether the worker is behind its socket: the receive queue over an eighth of its buffer.
 * Shedding starts only once the kernel has dropped datagrams on it as well (a queue that long
 * can also be a client with many queries in flight, which the worker keeps up with). */
int
shed_behind(Shedder *s, int fd, long long now_ms)
{
    uint32_t mem[SK_MEMINFO_VARS];
    if (read_meminfo(fd, mem) < 0)
        return 0; /* no way to know (an old kernel): never shed */
    int dropped = mem[SK_MEMINFO_DROPS] != s->drops;
    s->drops = mem[SK_MEMINFO_DROPS];
    uint64_t queue = mem[SK_MEMINFO_RMEM_ALLOC], limit = mem[SK_MEMINFO_RCVBUF];
    if (queue * 8 < limit || (s->armed_from == 0 && !dropped))
        return 0;
    shed_mark_behind(s, now_ms);
    if (queue * 2 > limit)
        filter_brake(s, now_ms, (uint32_t)queue, queue * 8 >= limit * 7);
    else
        s->brake_queue = 0;
    return 1;
}

/* The socket's drop count now (0 when it cannot be read). */
static uint32_t
socket_drops(int fd)
{
    uint32_t mem[SK_MEMINFO_VARS];
    return read_meminfo(fd, mem) < 0 ? 0 : mem[SK_MEMINFO_DROPS];
}

static PyObject *
shedder_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    int v4_bits, v6_bits, fd = -1;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "ii|i", &v4_bits, &v6_bits, &fd))
        return NULL;
    if (v4_bits < 0 || v4_bits > 32 || v6_bits < 0 || v6_bits > 128) {
        PyErr_SetString(PyExc_ValueError, "Shedder: prefix lengths 0-32 (IPv4) and 0-128 (IPv6)");
        return NULL;
    }
    Shedder *s = (Shedder *)type->tp_alloc(type, 0);
    if (s == NULL)
        return NULL;
    s->v4_bits = v4_bits;
    s->v6_bits = v6_bits;
    s->share = SHED_NONE;
    s->map_fd = -1;
    s->count_fd = -1;
    s->fd = fd;
    s->fill = SHED_FILL_START;
    s->drops = socket_drops(fd);
    /* a random seed: spoofed sources cannot aim at one run of slots */
    PyObject *os = PyImport_ImportModule("os");
    PyObject *bytes = os != NULL ? PyObject_CallMethod(os, "urandom", "i", 8) : NULL;
    Py_XDECREF(os);
    if (bytes == NULL) {
        Py_DECREF(s);
        return NULL;
    }
    memcpy(&s->seed, PyBytes_AS_STRING(bytes), 8);
    Py_DECREF(bytes);
    int domain = 0;
    socklen_t len = sizeof domain;
    if (fd >= 0 && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && (domain == AF_INET || domain == AF_INET6)) {
        s->filter_ipv6 = domain == AF_INET6;
        s->map_fd = filter_attach(fd, s->filter_ipv6, s->filter_ipv6 ? v6_bits : v4_bits, &s->count_fd);
        if (s->map_fd < 0)
            s->filter_errno = errno; /* shedding in user space only */
    }
    return (PyObject *)s;
}

static void
shedder_dealloc(Shedder *s)
{
    if (s->map_fd >= 0) {
        close(s->map_fd);
        close(s->count_fd);
    }
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyObject *
shedder_admit_method(Shedder *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0]) || (PyBytes_GET_SIZE(args[0]) != 4 && PyBytes_GET_SIZE(args[0]) != 16)) {
        PyErr_SetString(PyExc_TypeError, "admit(peer: 4 or 16 octets, behind: bool, now_ms: int)");
        return NULL;
    }
    int behind = PyObject_IsTrue(args[1]);
    long long now_ms = PyLong_AsLongLong(args[2]);
    if (behind < 0 || (now_ms == -1 && PyErr_Occurred()))
        return NULL;
    if (behind)
        shed_mark_behind(s, now_ms); /* what shed_behind does when the queue is long */
    return PyBool_FromLong(shed_admit(s, (const unsigned char *)PyBytes_AS_STRING(args[0]),
                                      (int)PyBytes_GET_SIZE(args[0]), behind, now_ms));
}

static PyObject *
shedder_busy_method(Shedder *s, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "busy(ns, datagrams)");
        return NULL;
    }
    long long ns = PyLong_AsLongLong(args[0]), n = PyLong_AsLongLong(args[1]);
    if ((ns == -1 || n == -1) && PyErr_Occurred())
        return NULL;
    shed_busy(s, ns, n);
    Py_RETURN_NONE;
}

static PyObject *
shedder_behind_method(Shedder *s, PyObject *args)
{
    PyObject *sock;
    long long now_ms = -1;
    if (!PyArg_ParseTuple(args, "O|L", &sock, &now_ms))
        return NULL;
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0)
        return NULL;
    return PyBool_FromLong(shed_behind(s, fd, now_ms < 0 ? shed_now_ms() : now_ms));
}

static PyMethodDef shedder_methods[] = {
    {"admit", (PyCFunction)(void (*)(void))shedder_admit_method, METH_FASTCALL,
     "admit(peer, behind, now_ms) -> bool: count a query from peer (4 or 16 octets) at now_ms\n"
     "(milliseconds of a monotonic clock) and say whether to answer it; behind: the socket's\n"
     "queue is long now (what behind(fd) finds)"},
    {"busy", (PyCFunction)(void (*)(void))shedder_busy_method, METH_FASTCALL,
     "busy(ns, datagrams): the worker read and answered this many datagrams in ns nanoseconds\n"
     "(what udp_drain reports of each call)"},
    {"behind", (PyCFunction)shedder_behind_method, METH_VARARGS,
     "behind(fd, now_ms=the monotonic clock) -> bool: whether the socket's receive queue is over an\n"
     "eighth of its buffer (over half: the kernel filter is tightened, filter_brake)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef shedder_members[] = {
    {"shed", T_LONGLONG, offsetof(Shedder, shed), READONLY, "queries dropped unanswered in user space, in all"},
    {"overflow", T_LONGLONG, offsetof(Shedder, overflow), READONLY,
     "datagrams the kernel dropped for a full queue while shedding was on, in all"},
    {"windows_behind", T_LONGLONG, offsetof(Shedder, windows_behind), READONLY,
     "windows (of 100 ms) in which the worker was behind its socket at least once"},
    {"filter_updates", T_LONGLONG, offsetof(Shedder, filter_updates), READONLY,
     "times the kernel filter's map was rewritten"},
    {"brakes", T_LONGLONG, offsetof(Shedder, brakes), READONLY,
     "times the kernel filter was tightened between windows, its socket's queue over half full"},
    {"filtered_prefixes", T_INT, offsetof(Shedder, n_filtered), READONLY, "prefixes the kernel filter thins out now"},
    {"fill", T_INT, offsetof(Shedder, fill), READONLY, "percent of the worker's capacity the shares are set to fill"},
    {"filter_errno", T_INT, offsetof(Shedder, filter_errno), READONLY,
     "why the kernel did not take the filter (an errno; 0: it did, or it was not asked)"},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
shedder_get_share(Shedder *s, void *closure)
{
    (void)closure;
    if (s->share == SHED_NONE)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(s->share);
}

static PyObject *
shedder_get_kernel_filter(Shedder *s, void *closure)
{
    (void)closure;
    return PyBool_FromLong(s->map_fd >= 0);
}

static PyObject *
shedder_get_filtered(Shedder *s, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(filter_dropped(s));
}

static PyGetSetDef shedder_getset[] = {
    {"share", (getter)shedder_get_share, NULL, "queries per prefix in this window (100 ms); None: nothing shed", NULL},
    {"kernel_filter", (getter)shedder_get_kernel_filter, NULL, "whether the socket has the kernel filter", NULL},
    {"filtered", (getter)shedder_get_filtered, NULL, "datagrams the kernel filter dropped, in all", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject ShedderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "imrs._fastpath.Shedder",
    .tp_basicsize = sizeof(Shedder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Behind its socket, a worker sheds the busiest client prefixes' queries first (csrc/fastpath/shed.c).",
    .tp_methods = shedder_methods,
    .tp_members = shedder_members,
    .tp_getset = shedder_getset,
    .tp_new = shedder_new,
    .tp_dealloc = (destructor)shedder_dealloc,
};
