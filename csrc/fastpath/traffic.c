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
#define TRAFFIC_SIZE (LATENCY + 2 * LATENCY_BUCKETS)

static const long latency_bounds_us[LATENCY_BUCKETS - 1] = {50, 100, 250, 500, 1000, 2500, 5000, 10000, 100000};

Py_ssize_t
traffic_size(void)
{
    return TRAFFIC_SIZE;
}

/* traffic.py question_of: the qtype and EDNS cell of a query whose question parses; 0 if not */
static int
question_of(const unsigned char *w, Py_ssize_t n, unsigned *qtype, int *edns)
{
    if (n < 12 || !(w[4] || w[5]))
        return 0;
    Py_ssize_t pos = 12;
    for (;;) {
        if (pos >= n)
            return 0;
        unsigned length = w[pos];
        if (length == 0) {
            pos++;
            break;
        }
        if (length & 0xC0)
            return 0;
        pos += length + 1;
        if (pos - 12 >= 255)
            return 0;
    }
    if (pos - 12 > 255 || pos + 4 > n)
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
traffic_query(uint64_t *v, const unsigned char *w, Py_ssize_t n, int tcp, int ipv6)
{
    v[QUERIES + 2 * tcp + ipv6]++;
    Py_ssize_t bin = n >> 4;
    v[REQUEST_SIZE + tcp * REQUEST_BINS + (bin < REQUEST_BINS - 1 ? bin : REQUEST_BINS - 1)]++;
    unsigned qtype;
    int edns;
    if (question_of(w, n, &qtype, &edns)) {
        v[QTYPE + (qtype < 256 ? qtype : 256)]++;
        v[EDNS + edns]++;
    }
}

/* rrl.py's _skip_name and _last_opt, and the walk of traffic.py full_rcode; -1: not found */
#define RD(o) ((o) < len ? (int)r[o] : -1)

static Py_ssize_t
skip_name_at(const unsigned char *r, Py_ssize_t len, Py_ssize_t o)
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
        o = skip_name_at(r, len, o);
        if (o < 0)
            return rcode;
        o += 4;
    }
    Py_ssize_t start = last_opt(r, len, o);
    if (start < 0) {
        int records = ((r[6] << 8) | r[7]) + ((r[8] << 8) | r[9]);
        for (int i = 0; i < records; i++) { /* rrl.py _skip_records */
            int b = RD(o);
            if (b < 0)
                return rcode;
            Py_ssize_t e = b >= 0xC0 ? o + 2 : b == 0 ? o + 1 : skip_name_at(r, len, o);
            if (e < 0 || RD(e + 9) < 0)
                return rcode;
            o = e + 10 + ((r[e + 8] << 8) | r[e + 9]);
        }
        for (int i = 0; i < ((r[10] << 8) | r[11]); i++) {
            int b = RD(o);
            if (b < 0)
                return rcode;
            Py_ssize_t e = b >= 0xC0 ? o + 2 : b == 0 ? o + 1 : skip_name_at(r, len, o);
            if (e < 0 || RD(e + 1) < 0)
                return rcode;
            if (b == 0 && r[e] == 0 && r[e + 1] == 41) {
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
}
