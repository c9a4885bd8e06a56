/* RrlGate: RateLimiter.decide (src/imrs/serve/rrl.py) in C. */
#include "fastpath.h"

#include <math.h>
#include <time.h>

/* ---------------------------------------------------------------------------------------------
 * RrlGate: RateLimiter.decide (src/imrs/serve/rrl.py) in C.
 *
 *     RrlGate((gword, gused, ghalf), (bkey, bstamp, bcount, bhalf, blimited), rate, slip,
 *             log_only, sh4, sh6, exempt4, exempt6, secret, tick, blocked, unblocked, clock)
 *     gate.decide(peer, query, response) -> SEND (0) | DROP (1) | SLIP (2)
 *     gate.counts() -> {"responses": ..., "exempt": ..., "classified": ..., ...}
 *
 * The same decisions as the Python code (RateLimiter._decide and _account), on the same
 * tables: the columns are RateLimiter's own arrays, written in place through the buffer
 * protocol.  Python is called only for what is rare and slow: tick(now) at each new second,
 * blocked(now, slot, key, peer, response) when a bucket starts being limited and
 * unblocked(...) when one is seen back under the rate (they count, watch and log).  clock:
 * None for CLOCK_MONOTONIC (time.monotonic), else a callable giving seconds as a float.
 * exempt4: ((prefix length, network >> host bits), ...); exempt6: ((length, high 64 bits,
 * low 64 bits of network >> host bits), ...).  udp_drain calls gate_decide directly, so that
 * a rate-limited UDP response costs no Python at all (tests/test_rrl.py runs every test on
 * both, and compares them on random traffic).
 */
#define M61 ((((uint64_t)1) << 61) - 1) /* CPython's hash modulus for ints */
/* categories (rrl.py) */
#define CAT_POSITIVE 1
#define CAT_LARGE 2
#define CAT_NXDOMAIN 3
#define CAT_NODATA 4
#define CAT_REFERRAL 5
#define CAT_ERROR 6
#define LARGE_SIZE 1024

typedef unsigned __int128 u128;

typedef struct {
    int plen;
    u128 net;
} ExemptNet;

enum { G_WORD, G_USED, G_HALF, B_KEY, B_STAMP, B_COUNT, B_HALF, B_LIMITED, N_COLUMNS };

struct RrlGate {
    PyObject_HEAD
    Py_buffer columns[N_COLUMNS];
    int held; /* columns held so far */
    Py_ssize_t gsize, bsize;
    uint64_t rate, slip;
    int log_only;
    int sh4, sh6;
    uint64_t k0, k1; /* SipHash key */
    ExemptNet *ex4, *ex6;
    Py_ssize_t n4, n6;
    PyObject *tick, *blocked, *unblocked, *clock;
    long long now;
    int have_now;
    unsigned long long responses, exempt, classified, collisions, limited, dropped, slipped, log_only_would_limit;
};

static void
gate_dealloc(RrlGate *g)
{
    for (int i = 0; i < g->held; i++)
        PyBuffer_Release(&g->columns[i]);
    PyMem_Free(g->ex4);
    PyMem_Free(g->ex6);
    Py_XDECREF(g->tick);
    Py_XDECREF(g->blocked);
    Py_XDECREF(g->unblocked);
    Py_XDECREF(g->clock);
    Py_TYPE(g)->tp_free((PyObject *)g);
}

/* The networks of an exempt tuple; -1 with an exception on bad input. */
static int
read_exempt(PyObject *seq, int v6, ExemptNet **out, Py_ssize_t *count)
{
    if (!PyTuple_Check(seq)) {
        PyErr_SetString(PyExc_TypeError, "exempt networks: a tuple of tuples");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    *out = PyMem_Calloc(n ? n : 1, sizeof(ExemptNet));
    if (*out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        unsigned long long hi = 0, lo = 0;
        int plen;
        if (!PyTuple_Check(item) || !(v6 ? PyArg_ParseTuple(item, "iKK", &plen, &hi, &lo) : PyArg_ParseTuple(item, "iK", &plen, &lo))) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "exempt network: (length, network)");
            return -1;
        }
        if (plen < 0 || plen > (v6 ? 128 : 32)) {
            PyErr_SetString(PyExc_ValueError, "exempt network: bad prefix length");
            return -1;
        }
        (*out)[i].plen = plen;
        (*out)[i].net = ((u128)hi << 64) | lo;
    }
    *count = n;
    return 0;
}

static PyObject *
gate_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static const char *formats[N_COLUMNS] = {"Q", "Q", "Q", "Q", "q", "I", "I", "Q"};
    PyObject *gate_columns, *bucket_columns, *ex4, *ex6, *tick, *blocked, *unblocked, *clock;
    unsigned long long rate, slip;
    int log_only, sh4, sh6;
    Py_buffer secret;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "RrlGate takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!KKpiiOOy*OOOO", &PyTuple_Type, &gate_columns, &PyTuple_Type, &bucket_columns,
                          &rate, &slip, &log_only, &sh4, &sh6, &ex4, &ex6, &secret, &tick, &blocked, &unblocked,
                          &clock))
        return NULL;
    int secret_ok = secret.len == 16;
    uint64_t k0 = 0, k1 = 0;
    if (secret_ok) {
        memcpy(&k0, secret.buf, 8); /* little-endian, as SipHash reads its key */
        memcpy(&k1, (char *)secret.buf + 8, 8);
    }
    PyBuffer_Release(&secret);
    if (!secret_ok || sh4 < 0 || sh4 > 32 || sh6 < 0 || sh6 > 128 || PyTuple_GET_SIZE(gate_columns) != 3 ||
        PyTuple_GET_SIZE(bucket_columns) != 5) {
        PyErr_SetString(PyExc_ValueError, "RrlGate: 3 gate and 5 bucket columns, a 16-octet secret, shifts in range");
        return NULL;
    }
    RrlGate *g = (RrlGate *)type->tp_alloc(type, 0);
    if (g == NULL)
        return NULL;
    for (int i = 0; i < N_COLUMNS; i++) {
        PyObject *column = i < 3 ? PyTuple_GET_ITEM(gate_columns, i) : PyTuple_GET_ITEM(bucket_columns, i - 3);
        Py_buffer *view = &g->columns[i];
        if (PyObject_GetBuffer(column, view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0)
            goto fail;
        g->held++;
        if (view->format == NULL || strcmp(view->format, formats[i]) != 0 || view->itemsize != (formats[i][0] == 'I' ? 4 : 8)) {
            PyErr_Format(PyExc_TypeError, "RrlGate: column %d must be array('%s')", i, formats[i]);
            goto fail;
        }
    }
    g->gsize = g->columns[G_WORD].len / 8;
    g->bsize = g->columns[B_KEY].len / 8;
    int lengths_ok = g->gsize >= 2 && !(g->gsize & 1) && g->bsize >= 1;
    for (int i = 0; i < N_COLUMNS; i++)
        lengths_ok = lengths_ok && g->columns[i].len / g->columns[i].itemsize == (i < 3 ? g->gsize : g->bsize);
    if (!lengths_ok) {
        PyErr_SetString(PyExc_ValueError, "RrlGate: gate columns of one even length >= 2, bucket columns of one length");
        goto fail;
    }
    if (read_exempt(ex4, 0, &g->ex4, &g->n4) < 0 || read_exempt(ex6, 1, &g->ex6, &g->n6) < 0)
        goto fail;
    g->rate = rate;
    g->slip = slip;
    g->log_only = log_only;
    g->sh4 = sh4;
    g->sh6 = sh6;
    g->k0 = k0;
    g->k1 = k1;
    Py_INCREF(tick);
    g->tick = tick;
    Py_INCREF(blocked);
    g->blocked = blocked;
    Py_INCREF(unblocked);
    g->unblocked = unblocked;
    if (clock != Py_None) {
        Py_INCREF(clock);
        g->clock = clock;
    }
    return (PyObject *)g;
fail:
    Py_DECREF(g);
    return NULL;
}

static int
is_exempt(const ExemptNet *nets, Py_ssize_t n, u128 address, int bits)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        int shift = bits - nets[i].plen;
        if ((shift >= 128 ? 0 : address >> shift) == nets[i].net)
            return 1;
    }
    return 0;
}


/* SipHash-2-4 (Aumasson and Bernstein), as the siphash24 package computes it. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                            \
    do {                                                                                                    \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                                           \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                                              \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                                              \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                                           \
    } while (0)

uint64_t
imrs_siphash24(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    const unsigned char *end = in + len - (len % 8);
    for (; in != end; in += 8) {
        uint64_t m;
        memcpy(&m, in, 8); /* little-endian hosts (x86, arm64) */
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = ((uint64_t)len) << 56;
    for (int i = (int)(len & 7) - 1; i >= 0; i--)
        b |= ((uint64_t)in[i]) << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* Reading the response wire, as rrl.py's classify and its helpers: every read checked
 * (-1: "IndexError", the response is malformed, category error). */
#define RD(o) ((o) < len ? (int)r[o] : -1)

Py_ssize_t
wire_skip_name(const unsigned char *r, Py_ssize_t len, Py_ssize_t o)
{
    int n = RD(o);
    while (n) {
        if (n < 0)
            return -1;
        if (n >= 0xC0)
            return o + 2;
        o += n + 1;
        n = RD(o);
    }
    return o + 1;
}

/* The name at o, uncompressed, lower case, into out (256 octets); its length, or -1. */
static Py_ssize_t
read_name_lower(const unsigned char *r, Py_ssize_t len, Py_ssize_t o, unsigned char *out)
{
    int hops = 0;
    Py_ssize_t length = 0;
    int n = RD(o);
    while (n) {
        if (n < 0)
            return -1;
        if (n >= 0xC0) {
            if (++hops > 64)
                return -1;
            int low = RD(o + 1);
            if (low < 0)
                return -1;
            o = ((n & 0x3F) << 8) | low;
        }
        else {
            length += n + 1;
            if (length > 254 || o + n + 1 >= len) /* too long; or the next read fails */
                return -1;
            for (Py_ssize_t i = 0; i <= n; i++) {
                unsigned char c = r[o + i];
                out[length - n - 1 + i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c; /* bytes.lower() */
            }
            o += n + 1;
        }
        n = RD(o);
    }
    out[length] = 0;
    return length + 1;
}

/* The end of the owner name of the record at o, as _owner_of_first / _skip_records step. */
Py_ssize_t
wire_owner_end(const unsigned char *r, Py_ssize_t len, Py_ssize_t o)
{
    int b = RD(o);
    if (b < 0)
        return -1;
    return b >= 0xC0 ? o + 2 : b == 0 ? o + 1 : wire_skip_name(r, len, o);
}

Py_ssize_t
wire_skip_records(const unsigned char *r, Py_ssize_t len, Py_ssize_t o, int count)
{
    for (int i = 0; i < count; i++) {
        Py_ssize_t e = wire_owner_end(r, len, o);
        if (e < 0 || RD(e + 9) < 0)
            return -1;
        o = e + 10 + ((r[e + 8] << 8) | r[e + 9]);
    }
    return o;
}

/* The owner of the first record of `type` among `count` from o into out: its length, 0 for
 * none, -1 malformed. */
static Py_ssize_t
owner_of_first(const unsigned char *r, Py_ssize_t len, Py_ssize_t o, int count, int type, unsigned char *out)
{
    for (int i = 0; i < count; i++) {
        Py_ssize_t e = wire_owner_end(r, len, o);
        if (e < 0 || RD(e + 1) < 0)
            return -1;
        if (r[e + 1] == type && r[e] == 0) {
            if (r[o] == 0) {
                out[0] = 0;
                return 1;
            }
            return read_name_lower(r, len, o, out);
        }
        if (RD(e + 9) < 0)
            return -1;
        o = e + 10 + ((r[e + 8] << 8) | r[e + 9]);
    }
    return 0;
}

/* classify(response): the category; the imputed name into name (its length in *nlen); the
 * qtype or -1 in *qtype. */
static int
classify_wire(const unsigned char *r, Py_ssize_t len, unsigned char *name, Py_ssize_t *nlen, int *qtype)
{
    *nlen = 0;
    *qtype = -1;
    if (len < 12)
        return CAT_ERROR;
    int rcode = r[3] & 0x0F;
    if (rcode && rcode != 3)
        return CAT_ERROR;
    int qd = (r[4] << 8) | r[5], an = (r[6] << 8) | r[7], ns = (r[8] << 8) | r[9];
    Py_ssize_t qend = 0, o;
    if (qd == 1) {
        o = 12;
        int n = RD(o);
        while (0 < n && n < 0x40) {
            o += n + 1;
            n = RD(o);
        }
        if (n < 0)
            return CAT_ERROR;
        if (n == 0) {
            qend = o + 1;
            o = qend + 4;
            if (qend - 12 > 255)
                return CAT_ERROR; /* longer than a name can be (the name buffer's size) */
        }
        else {
            o = wire_skip_name(r, len, 12);
            if (o < 0)
                return CAT_ERROR;
            o += 4;
        }
    }
    else {
        o = 12;
        for (int i = 0; i < qd; i++) {
            o = wire_skip_name(r, len, o);
            if (o < 0)
                return CAT_ERROR;
            o += 4;
        }
    }
    if (o > len)
        return CAT_ERROR;
    Py_ssize_t got;
    if (rcode) {
        Py_ssize_t at = an ? wire_skip_records(r, len, o, an) : o;
        got = at < 0 ? -1 : owner_of_first(r, len, at, ns, 6, name);
        if (got < 0)
            return CAT_ERROR;
        *nlen = got;
        return CAT_NXDOMAIN;
    }
    if (an) {
        if (qd) {
            if (qend) {
                got = qend - 12;
                for (Py_ssize_t i = 0; i < got; i++)
                    name[i] = (r[12 + i] >= 'A' && r[12 + i] <= 'Z') ? r[12 + i] + 32 : r[12 + i];
            }
            else if ((got = read_name_lower(r, len, 12, name)) < 0)
                return CAT_ERROR;
            *nlen = got;
            *qtype = (r[o - 4] << 8) | r[o - 3];
        }
        if (*qtype == 255 || *qtype == 46 || *qtype == 48 || len >= LARGE_SIZE) {
            *qtype = -1;
            return CAT_LARGE;
        }
        return CAT_POSITIVE;
    }
    if (!(r[2] & 0x04) && ns) {
        int b = RD(o);
        if (b < 0)
            return CAT_ERROR;
        if (b >= 0xC0) {
            if (RD(o + 3) < 0)
                return CAT_ERROR;
            if (r[o + 2] == 0 && r[o + 3] == 2) {
                Py_ssize_t p = ((b & 0x3F) << 8) | r[o + 1];
                if (12 <= p && p < qend) {
                    for (Py_ssize_t i = 0; i < qend - p; i++)
                        name[i] = (r[p + i] >= 'A' && r[p + i] <= 'Z') ? r[p + i] + 32 : r[p + i];
                    *nlen = qend - p;
                    return CAT_REFERRAL;
                }
            }
        }
        got = owner_of_first(r, len, o, ns, 2, name);
        if (got < 0)
            return CAT_ERROR;
        if (got > 0) {
            *nlen = got;
            return CAT_REFERRAL;
        }
    }
    got = owner_of_first(r, len, o, ns, 6, name);
    if (got < 0)
        return CAT_ERROR;
    *nlen = got;
    return CAT_NODATA;
}
#undef RD

/* r/2 after `elapsed` steps (rrl.py _fold) */
static uint64_t
fold(uint64_t half, uint64_t count, long long elapsed)
{
    if (elapsed == 1)
        return (half + count) >> 1;
    if (elapsed <= 0 || elapsed > 16)
        return 0;
    return (half + count) >> elapsed;
}

/* blocked / unblocked(now, slot, key, peer, response); -1 with an exception set */
static int
gate_event(RrlGate *g, PyObject *callback, Py_ssize_t slot, uint64_t key, const unsigned char *peer, Py_ssize_t alen,
           PyObject *peer_obj, PyObject *response)
{
    PyObject *now = PyLong_FromLongLong(g->now);
    PyObject *i = PyLong_FromSsize_t(slot);
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    PyObject *p = peer_obj != NULL ? (Py_INCREF(peer_obj), peer_obj) : PyBytes_FromStringAndSize((const char *)peer, alen);
    PyObject *result = NULL;
    if (now != NULL && i != NULL && k != NULL && p != NULL) {
        PyObject *call_args[5] = {now, i, k, p, response};
        result = PyObject_Vectorcall(callback, call_args, 5, NULL);
    }
    Py_XDECREF(now);
    Py_XDECREF(i);
    Py_XDECREF(k);
    Py_XDECREF(p);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* rrl.py RateLimiter._account: the decision by the response's bucket. */
static int
gate_account(RrlGate *g, const unsigned char *peer, Py_ssize_t alen, PyObject *peer_obj, PyObject *response)
{
    g->classified++;
    const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(response);
    Py_ssize_t len = PyBytes_GET_SIZE(response);
    /* the key's input: family, masked address, category, qtype + 1 (3 octets), name */
    unsigned char data[1 + 16 + 1 + 3 + 256];
    size_t at;
    if (alen == 4 || ipv4_mapped(peer)) {
        const unsigned char *v4 = peer + (alen - 4);
        uint32_t a = ((uint32_t)v4[0] << 24) | ((uint32_t)v4[1] << 16) | ((uint32_t)v4[2] << 8) | v4[3];
        uint32_t masked = g->sh4 >= 32 ? 0 : (a >> g->sh4) << g->sh4;
        data[0] = 4;
        data[1] = masked >> 24;
        data[2] = masked >> 16;
        data[3] = masked >> 8;
        data[4] = masked;
        at = 5;
    }
    else {
        data[0] = 6;
        for (int i = 0; i < 16; i++) {
            int bit = 8 * i; /* the octet's first bit; masked from bit 128 - sh6 on */
            int keep = 128 - g->sh6 - bit;
            data[1 + i] = keep >= 8 ? peer[i] : keep <= 0 ? 0 : (unsigned char)(peer[i] & (0xFF << (8 - keep)));
        }
        at = 17;
    }
    Py_ssize_t nlen;
    int qtype;
    int cat = classify_wire(r, len, data + at + 4, &nlen, &qtype);
    data[at] = (unsigned char)cat;
    data[at + 1] = (unsigned char)((qtype + 1) >> 16);
    data[at + 2] = (unsigned char)((qtype + 1) >> 8);
    data[at + 3] = (unsigned char)(qtype + 1);
    uint64_t key = imrs_siphash24(g->k0, g->k1, data, at + 4 + nlen) | 1;

    uint64_t *bkey = g->columns[B_KEY].buf, *blimited = g->columns[B_LIMITED].buf;
    int64_t *bstamp = g->columns[B_STAMP].buf;
    uint32_t *bcount = g->columns[B_COUNT].buf, *bhalf = g->columns[B_HALF].buf;
    Py_ssize_t i = (Py_ssize_t)(key % (uint64_t)g->bsize);
    long long now = g->now;
    if (bkey[i] != key) { /* a new bucket, here or in the place of another one */
        if (bkey[i] != 0)
            g->collisions++;
        bkey[i] = key;
        bstamp[i] = now;
        bcount[i] = 1;
        bhalf[i] = 0;
        blimited[i] = 0;
        return RRL_SEND;
    }
    uint64_t c, h;
    if (bstamp[i] == now) {
        c = bcount[i];
        h = bhalf[i];
    }
    else {
        h = fold(bhalf[i], bcount[i], now - bstamp[i]);
        bhalf[i] = (uint32_t)h;
        bstamp[i] = now;
        c = 0;
        if (blimited[i] && h < g->rate && gate_event(g, g->unblocked, i, key, peer, alen, peer_obj, response) < 0)
            return -1;
    }
    bcount[i] = (uint32_t)(c + 1);
    if (h < g->rate && c + h + 1 < 2 * g->rate) /* NSD: limited when max(r, count + r/2) >= 2 * rate */
        return RRL_SEND;
    uint64_t n = ++blimited[i];
    if (n == 1 && gate_event(g, g->blocked, i, key, peer, alen, peer_obj, response) < 0)
        return -1;
    if (g->log_only) {
        g->log_only_would_limit++;
        return RRL_SEND;
    }
    g->limited++;
    if (g->slip && n % g->slip == 0) {
        g->slipped++;
        return RRL_SLIP;
    }
    g->dropped++;
    return RRL_DROP;
}

/* The verdict for `response` to `peer` (4 or 16 octets); -1 with an exception set.  peer_obj:
 * the same address as bytes when the caller has it, else NULL (made only when needed). */
int
gate_decide(RrlGate *g, const unsigned char *peer, Py_ssize_t alen, PyObject *peer_obj, PyObject *response)
{
    g->responses++;
    long long now;
    if (g->clock == NULL) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (long long)ts.tv_sec;
    }
    else {
        PyObject *t = PyObject_CallNoArgs(g->clock);
        if (t == NULL)
            return -1;
        double d = PyFloat_AsDouble(t);
        Py_DECREF(t);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
        now = (long long)floor(d);
    }
    if (!g->have_now || now != g->now) {
        g->now = now;
        g->have_now = 1;
        PyObject *arg = PyLong_FromLongLong(now);
        PyObject *r = arg != NULL ? PyObject_CallOneArg(g->tick, arg) : NULL;
        Py_XDECREF(arg);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    uint64_t key;
    if (alen == 4 || (alen == 16 && ipv4_mapped(peer))) {
        const unsigned char *v4 = peer + (alen - 4); /* IPv4-mapped: counted as IPv4 */
        uint64_t a = ((uint64_t)v4[0] << 24) | ((uint64_t)v4[1] << 16) | ((uint64_t)v4[2] << 8) | v4[3];
        if (g->n4 && is_exempt(g->ex4, g->n4, a, 32)) {
            g->exempt++;
            return RRL_SEND;
        }
        key = a >> g->sh4;
    }
    else if (alen == 16) {
        u128 a = 0;
        for (int i = 0; i < 16; i++)
            a = (a << 8) | peer[i];
        if (g->n6 && is_exempt(g->ex6, g->n6, a, 128)) {
            g->exempt++;
            return RRL_SEND;
        }
        u128 prefix = g->sh6 >= 128 ? 0 : a >> g->sh6;
        key = (uint64_t)(prefix % M61) & 0x3FFFFFFF; /* hash(prefix) & 0x3FFFFFFF, as rrl.py */
    }
    else {
        PyErr_SetString(PyExc_ValueError, "peer: 4 or 16 octets");
        return -1;
    }
    uint64_t *gword = g->columns[G_WORD].buf, *gused = g->columns[G_USED].buf, *ghalf = g->columns[G_HALF].buf;
    uint64_t step = (uint64_t)(((now % 65536) + 65536) % 65536);
    Py_ssize_t j = (Py_ssize_t)(key % (uint64_t)g->gsize);
    uint64_t word = key * 65536 + step;
    uint64_t w = gword[j];
    if (w == word) { /* this prefix, this step */
        uint64_t u = gused[j] + 1;
        gused[j] = u;
        if (u <= g->rate)
            return RRL_SEND;
        return gate_account(g, peer, alen, peer_obj, response);
    }
    if (w >> 16 != key) { /* not in the first slot of its pair: the other, or new */
        j ^= 1;
        uint64_t w2 = gword[j];
        if (w2 >> 16 != key) { /* new: take the slot stepped least lately, the first on a tie */
            if ((uint16_t)(step - w2) <= (uint16_t)(step - w))
                j ^= 1;
            gword[j] = word;
            ghalf[j] = g->rate;
            gused[j] = g->rate + 1;
            return gate_account(g, peer, alen, peer_obj, response);
        }
        w = w2;
        if (w == word) {
            uint64_t u = gused[j] + 1;
            gused[j] = u;
            if (u <= g->rate)
                return RRL_SEND;
            return gate_account(g, peer, alen, peer_obj, response);
        }
    }
    /* this prefix, a new step */
    uint64_t h = ghalf[j];
    h = fold(h, gused[j] - h, (uint16_t)(step - w));
    gword[j] = word;
    ghalf[j] = h;
    gused[j] = h + 1;
    if (h + 1 <= g->rate)
        return RRL_SEND;
    return gate_account(g, peer, alen, peer_obj, response);
}

static PyObject *
gate_decide_method(RrlGate *g, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "decide(peer: bytes, query, response: bytes)");
        return NULL;
    }
    int verdict = gate_decide(g, (const unsigned char *)PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]),
                              args[0], args[2]);
    if (verdict < 0)
        return NULL;
    return PyLong_FromLong(verdict);
}

static PyObject *
gate_counts(RrlGate *g, PyObject *unused)
{
    (void)unused;
    return Py_BuildValue("{sKsKsKsKsKsKsKsK}", "responses", g->responses, "exempt", g->exempt, "classified",
                         g->classified, "collisions", g->collisions, "limited", g->limited, "dropped", g->dropped,
                         "slipped", g->slipped, "log_only_would_limit", g->log_only_would_limit);
}

static PyMethodDef gate_methods[] = {
    {"decide", (PyCFunction)(void (*)(void))gate_decide_method, METH_FASTCALL,
     "decide(peer, query, response) -> 0 (SEND), 1 (DROP) or 2 (SLIP)"},
    {"counts", (PyCFunction)gate_counts, METH_NOARGS, "counts() -> {counter: value} (the hot path's counters)"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject RrlGateType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "imrs._fastpath.RrlGate",
    .tp_basicsize = sizeof(RrlGate),
    .tp_dealloc = (destructor)gate_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RateLimiter.decide in C over RateLimiter's gate columns (see rrl.py).",
    .tp_methods = gate_methods,
    .tp_new = gate_new,
};
