/* Traffic counters in C: src/imrs/serve/traffic.py's rules on the same array("Q") layout, for
 * the C UDP loop (tests/test_traffic.py shows both count alike). */
#include "fastpath.h"

#define REQUEST_BINS 19
#define RESPONSE_BINS 257
#define RCODES 24
#define LATENCY_BUCKETS 10
#define QUERIES 0
#define RESPONSES 4
#define RCODE 8
#define QTYPE (RCODE + RCODES + 1)
#define EDNS (QTYPE + 257)
#define TRUNCATED (EDNS + 3)
#define REQUEST_SIZE (TRUNCATED + 1)
#define RESPONSE_SIZE (REQUEST_SIZE + 2 * REQUEST_BINS)
#define LATENCY (RESPONSE_SIZE + 2 * RESPONSE_BINS)
#define REQUEST_OCTETS (LATENCY + 2 * LATENCY_BUCKETS)
#define RESPONSE_OCTETS (REQUEST_OCTETS + 2)
#define LATENCY_SUM_US (RESPONSE_OCTETS + 2)
#define TRAFFIC_SIZE (LATENCY_SUM_US + 2)

static const long latency_bounds_us[LATENCY_BUCKETS - 1] = {50, 100, 250, 500, 1000, 2500, 5000, 10000, 100000};

Py_ssize_t
traffic_size(void)
{
    return TRAFFIC_SIZE;
}

/* traffic.py question_of: the qtype and EDNS cell of a query whose question parses, and where
 * its name's last label starts (traffic.py last_label: the length octet; 12, the root's octet,
 * for the root); 0 if it does not parse */
static int
question_of(const unsigned char *w, Py_ssize_t n, unsigned *qtype, int *edns, Py_ssize_t *last)
{
    if (n < 12 || !(w[4] || w[5]))
        return 0;
    Py_ssize_t pos = query_name_end(w, n, last);
    if (pos < 0 || pos + 4 > n)
        return 0;
    *qtype = (w[pos] << 8) | w[pos + 1];
    pos += 4;
    *edns = 0;
    if (w[4] == 0 && w[5] == 1 && !(w[6] || w[7] || w[8] || w[9]) && w[10] == 0 && w[11] == 1 && pos + 11 <= n &&
        w[pos] == 0 && w[pos + 1] == 0 && w[pos + 2] == 41)
        *edns = (w[pos + 7] & 0x80) ? 2 : 1;
    return 1;
}

void
traffic_query(uint64_t *v, TopLabels *tlds, const unsigned char *w, Py_ssize_t n, int tcp, int ipv6)
{
    v[QUERIES + 2 * tcp + ipv6]++;
    Py_ssize_t bin = n >> 4;
    v[REQUEST_SIZE + tcp * REQUEST_BINS + (bin < REQUEST_BINS - 1 ? bin : REQUEST_BINS - 1)]++;
    v[REQUEST_OCTETS + tcp] += (uint64_t)n;
    unsigned qtype;
    int edns;
    Py_ssize_t last;
    if (question_of(w, n, &qtype, &edns, &last)) {
        v[QTYPE + (qtype < 256 ? qtype : 256)]++;
        v[EDNS + edns]++;
        if (tlds != NULL)
            toplabels_add(tlds, w + last + 1, w[last]);
    }
}

/* rrl.py's _last_opt and the walk of traffic.py full_rcode; -1: not found */
#define RD(o) ((o) < len ? (int)r[o] : -1)

static Py_ssize_t
last_opt(const unsigned char *r, Py_ssize_t len, Py_ssize_t after)
{
    Py_ssize_t pos = after - 1;
    for (int k = 0; k < 16; k++) {
        const unsigned char *hit = NULL;
        for (Py_ssize_t i = pos + 1; i + 3 <= len; i++) {
            if (r[i] == 0 && r[i + 1] == 0 && r[i + 2] == 0x29) {
                hit = r + i;
                break;
            }
        }
        if (hit == NULL)
            return -1;
        pos = hit - r;
        if (pos + 11 > len)
            return -1;
        if (r[pos + 6] == 0 && !(r[pos + 7] & 0x7F))
            return ((r[pos + 9] << 8) | r[pos + 10]) == len - pos - 11 ? pos : -1;
    }
    return -1;
}

static int
full_rcode(const unsigned char *r, Py_ssize_t len)
{
    int rcode = r[3] & 0x0F;
    if (!(r[10] || r[11]))
        return rcode;
    Py_ssize_t o = 12;
    for (int i = 0; i < ((r[4] << 8) | r[5]); i++) {
        o = wire_skip_name(r, len, o);
        if (o < 0)
            return rcode;
        o += 4;
    }
    Py_ssize_t start = last_opt(r, len, o);
    if (start < 0) { /* walk the records to the OPT */
        o = wire_skip_records(r, len, o, ((r[6] << 8) | r[7]) + ((r[8] << 8) | r[9]));
        for (int i = 0; o >= 0 && i < ((r[10] << 8) | r[11]); i++) {
            Py_ssize_t e = wire_owner_end(r, len, o);
            if (e < 0 || RD(e + 1) < 0)
                return rcode;
            if (r[o] == 0 && r[e] == 0 && r[e + 1] == 41) {
                start = o;
                break;
            }
            if (RD(e + 9) < 0)
                return rcode;
            o = e + 10 + ((r[e + 8] << 8) | r[e + 9]);
        }
    }
    if (start >= 0 && start + 5 < len)
        return rcode | (r[start + 5] << 4);
    return rcode;
}
#undef RD

void
traffic_response(uint64_t *v, const unsigned char *r, Py_ssize_t n, int tcp, int ipv6, int plain_rcode)
{
    v[RESPONSES + 2 * tcp + ipv6]++;
    Py_ssize_t bin = n >> 4;
    v[RESPONSE_SIZE + tcp * RESPONSE_BINS + (bin < RESPONSE_BINS - 1 ? bin : RESPONSE_BINS - 1)]++;
    v[RESPONSE_OCTETS + tcp] += (uint64_t)n;
    if (n >= 12) {
        int rcode = plain_rcode ? (r[3] & 0x0F) : full_rcode(r, n);
        v[RCODE + (rcode < RCODES ? rcode : RCODES)]++;
        if (r[2] & 0x02)
            v[TRUNCATED]++;
    }
}

void
traffic_latency(uint64_t *v, double seconds, int tcp, long count)
{
    double us = seconds * 1e6;
    int b = 0;
    while (b < LATENCY_BUCKETS - 1 && us > latency_bounds_us[b])
        b++;
    v[LATENCY + tcp * LATENCY_BUCKETS + b] += (uint64_t)count;
    v[LATENCY_SUM_US + tcp] += (uint64_t)(us + 0.5) * (uint64_t)count; /* traffic.py: int(us + 0.5) */
}

/* ---------------------------------------------------------------------------------------------
 * SourceCounter(exact_threshold): the distinct sources of the queries the C loop received, for
 * RSSAC002 unique-sources, kept as src/imrs/telemetry/unique_sources.py's SourceSet keeps them:
 * for IPv4, IPv6 and IPv6 /64 prefixes (an IPv4-mapped address is IPv4), the 64-bit SipHash-2-4
 * (key SOURCE_HASH_KEY) of the packed address or prefix, in an exact set while it holds at
 * most exact_threshold of them, in HyperLogLog registers (p = 14) always, so that the
 * registers are those of the set whenever it overflows.  export(i) gives ("exact", hashes as
 * big-endian 64-bit words) or ("hll", registers); reset() starts a new day.
 */
#define HLL_P 14
#define HLL_M (1 << HLL_P)
#define HLL_Q (64 - HLL_P)

static const unsigned char source_key[17] = "imrs-rssac002-v2";

typedef struct {
    uint64_t *slots; /* open addressing, 0 = empty (a hash of 0 is kept in has_zero) */
    size_t capacity, count;
    int has_zero, overflow;
    unsigned char registers[HLL_M];
} Sources;

struct SourceCounter {
    PyObject_HEAD
    Py_ssize_t threshold;
    uint64_t k0, k1;
    Sources sets[3]; /* IPv4, IPv6, IPv6 /64 */
};

static void
sources_clear(Sources *s, size_t capacity)
{
    PyMem_Free(s->slots);
    s->slots = PyMem_Calloc(capacity, sizeof(uint64_t));
    s->capacity = s->slots != NULL ? capacity : 0;
    s->count = 0;
    s->has_zero = 0;
    s->overflow = s->slots == NULL; /* out of memory: the sketch alone */
    memset(s->registers, 0, sizeof s->registers);
}

static void
sources_add(Sources *s, uint64_t h, Py_ssize_t threshold)
{
    uint64_t w = h & ((((uint64_t)1) << HLL_Q) - 1);
    unsigned char rank = (unsigned char)(HLL_Q + 1 - (w ? 64 - __builtin_clzll(w) : 0));
    unsigned char *r = &s->registers[h >> HLL_Q];
    if (*r < rank)
        *r = rank;
    if (s->overflow)
        return;
    if (h == 0) {
        if (s->has_zero)
            return;
        s->has_zero = 1;
    }
    else {
        size_t mask = s->capacity - 1, i = (size_t)(h ^ (h >> 29)) & mask;
        while (s->slots[i] != 0) {
            if (s->slots[i] == h)
                return;
            i = (i + 1) & mask;
        }
        s->slots[i] = h;
    }
    if ((Py_ssize_t)++s->count > threshold) { /* the set is too big: the sketch goes on alone */
        s->overflow = 1;
        PyMem_Free(s->slots);
        s->slots = NULL;
    }
}

void
sources_count(SourceCounter *c, const unsigned char *addr, int alen)
{
    if (alen == 16 && ipv4_mapped(addr)) {
        addr += 12;
        alen = 4;
    }
    if (alen == 4) {
        sources_add(&c->sets[0], imrs_siphash24(c->k0, c->k1, addr, 4), c->threshold);
    }
    else {
        sources_add(&c->sets[1], imrs_siphash24(c->k0, c->k1, addr, 16), c->threshold);
        sources_add(&c->sets[2], imrs_siphash24(c->k0, c->k1, addr, 8), c->threshold);
    }
}

static size_t
capacity_for(Py_ssize_t threshold)
{
    size_t capacity = 16;
    while (capacity < 2 * (size_t)threshold + 2)
        capacity *= 2;
    return capacity;
}

static PyObject *
source_counter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t threshold;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "n", &threshold))
        return NULL;
    if (threshold < 0 || threshold > 10000000) {
        PyErr_SetString(PyExc_ValueError, "SourceCounter: exact_threshold out of range");
        return NULL;
    }
    SourceCounter *c = (SourceCounter *)type->tp_alloc(type, 0);
    if (c == NULL)
        return NULL;
    c->threshold = threshold;
    memcpy(&c->k0, source_key, 8);
    memcpy(&c->k1, source_key + 8, 8);
    for (int i = 0; i < 3; i++)
        sources_clear(&c->sets[i], capacity_for(threshold));
    return (PyObject *)c;
}

static void
source_counter_dealloc(SourceCounter *c)
{
    for (int i = 0; i < 3; i++)
        PyMem_Free(c->sets[i].slots);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyObject *
source_counter_add(SourceCounter *c, PyObject *arg)
{
    if (!PyBytes_Check(arg) || (PyBytes_GET_SIZE(arg) != 4 && PyBytes_GET_SIZE(arg) != 16)) {
        PyErr_SetString(PyExc_TypeError, "add(packed address: 4 or 16 octets)");
        return NULL;
    }
    sources_count(c, (const unsigned char *)PyBytes_AS_STRING(arg), (int)PyBytes_GET_SIZE(arg));
    Py_RETURN_NONE;
}

static PyObject *
source_counter_export(SourceCounter *c, PyObject *arg)
{
    long i = PyLong_AsLong(arg);
    if (i < 0 || i > 2) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_IndexError, "export(0: IPv4, 1: IPv6, 2: IPv6 /64)");
        return NULL;
    }
    Sources *s = &c->sets[i];
    if (s->overflow)
        return Py_BuildValue("(sy#)", "hll", (const char *)s->registers, (Py_ssize_t)HLL_M);
    PyObject *data = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(8 * s->count));
    if (data == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(data);
    size_t k = 0;
    for (size_t j = 0; j < s->capacity + (s->has_zero ? 1 : 0); j++) {
        uint64_t h;
        if (j == s->capacity)
            h = 0;
        else if ((h = s->slots[j]) == 0)
            continue;
        for (int b = 0; b < 8; b++)
            p[8 * k + b] = (unsigned char)(h >> (56 - 8 * b));
        k++;
    }
    PyObject *out = Py_BuildValue("(sN)", "exact", data);
    return out;
}

static PyObject *
source_counter_reset(SourceCounter *c, PyObject *unused)
{
    (void)unused;
    for (int i = 0; i < 3; i++)
        sources_clear(&c->sets[i], capacity_for(c->threshold));
    Py_RETURN_NONE;
}

static PyMethodDef source_counter_methods[] = {
    {"add", (PyCFunction)source_counter_add, METH_O, "add(packed address): count a query's source"},
    {"export", (PyCFunction)source_counter_export, METH_O,
     "export(i) -> ('exact', big-endian hashes) | ('hll', registers); i: 0 IPv4, 1 IPv6, 2 IPv6 /64"},
    {"reset", (PyCFunction)source_counter_reset, METH_NOARGS, "reset(): forget every source"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject SourceCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "imrs._fastpath.SourceCounter",
    .tp_basicsize = sizeof(SourceCounter),
    .tp_dealloc = (destructor)source_counter_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The distinct sources of queries, as unique_sources.SourceSet counts them (see traffic.c).",
    .tp_methods = source_counter_methods,
    .tp_new = source_counter_new,
};
