/* imrs._fastpath, the data plane's hot path in C, in three parts with one job each:
 *   answer.c  the C answer (CompiledAnswers.answer's common case, same bytes);
 *   rrl.c     RrlGate (RateLimiter.decide: the same decisions on the same tables);
 *   udp.c     udp_drain, the receive-answer-send loop, and the RRL slip of a C answer;
 *   traffic.c the traffic counters (src/imrs/serve/traffic.py's rules and layout);
 *   toplabels.c the most queried TLDs (src/imrs/serve/toplabels.py's algorithm);
 *   module.c  the module.
 * Each is optional for imrs: without a compiler the pure-Python paths do the same work
 * (src/imrs/answer/fastc.py, src/imrs/serve/rrl.py, src/imrs/serve/udp.py).
 */
#ifndef IMRS_FASTPATH_H
#define IMRS_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* answer/query.py read_name: the offset after the uncompressed question name at offset 12 of
 * w[:n] (at most 255 octets, no compression), -1 if there is none such; and, when `last` is
 * not NULL, where the name's last label starts (its length octet; 12 for the root), which
 * the TLD count needs (traffic.c), from the same walk.  (udp.c) */
Py_ssize_t query_name_end(const unsigned char *w, Py_ssize_t n, Py_ssize_t *last);

/* Is this 16-octet address IPv4-mapped (::ffff:a.b.c.d)?  Such a source counts as IPv4. */
static inline int
ipv4_mapped(const unsigned char *addr)
{
    return memcmp(addr, "\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0;
}

/* answer.c */
int answer_init(void);
/* The response to the query wire[:n] (a new reference), Py_None (a new reference) when the
 * Python path must decide, NULL with an exception on a real error (memory). */
PyObject *answer_wire(PyObject *compiled, const unsigned char *wire, Py_ssize_t n, int tcp, int ipv6);
PyObject *fast_answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* rrl.c */
#define RRL_SEND 0
#define RRL_DROP 1
#define RRL_SLIP 2
typedef struct RrlGate RrlGate;
extern PyTypeObject RrlGateType;
/* Reading a response's wire as rrl.py does (every read checked; -1: malformed): the offset
 * after the name at o, after the owner of the record at o, after count records from o. */
Py_ssize_t wire_skip_name(const unsigned char *r, Py_ssize_t len, Py_ssize_t o);
Py_ssize_t wire_owner_end(const unsigned char *r, Py_ssize_t len, Py_ssize_t o);
Py_ssize_t wire_skip_records(const unsigned char *r, Py_ssize_t len, Py_ssize_t o, int count);
/* SipHash-2-4 of in[:len] under the key k0, k1 (little-endian halves), as an integer. */
uint64_t imrs_siphash24(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len);
/* The verdict for `response` to `peer` (4 or 16 octets); -1 with an exception set. */
int gate_decide(RrlGate *g, const unsigned char *peer, Py_ssize_t alen, PyObject *peer_obj, PyObject *response);

/* toplabels.c */
typedef struct TopLabels TopLabels;
extern PyTypeObject TopLabelsType;
/* count one query for this top-level label (at most 63 octets; lower-cased here) */
void toplabels_add(TopLabels *t, const unsigned char *label, Py_ssize_t len);

/* traffic.c: count into an array("Q") of traffic_size() cells (and its TLD into tlds, when set) */
Py_ssize_t traffic_size(void);
void traffic_query(uint64_t *v, TopLabels *tlds, const unsigned char *w, Py_ssize_t n, int tcp, int ipv6);
/* plain_rcode: the response has no extended rcode (made in C), the header's is the rcode */
void traffic_response(uint64_t *v, const unsigned char *r, Py_ssize_t n, int tcp, int ipv6, int plain_rcode);
void traffic_latency(uint64_t *v, double seconds, int tcp, long count);
typedef struct SourceCounter SourceCounter;
extern PyTypeObject SourceCounterType;
/* count a query's source (4 or 16 octets) */
void sources_count(SourceCounter *c, const unsigned char *addr, int alen);

/* errlimit.c */
typedef struct ErrorLimit ErrorLimit;
extern PyTypeObject ErrorLimitType;
/* a header-only FORMERR or NOTIMP (what the limit counts) */
int errlimit_is_error(const unsigned char *r, Py_ssize_t len);
/* whether one more may go out in this second of the clock; a refusal is counted */
int errlimit_allow(ErrorLimit *e);

/* shed.c */
typedef struct Shedder Shedder;
extern PyTypeObject ShedderType;
/* milliseconds of the coarse monotonic clock (what the two below take) */
long long shed_now_ms(void);
/* whether fd's receive queue is long (the worker is behind; marked so) */
int shed_behind(Shedder *s, int fd, long long now_ms);
/* count a datagram from addr (4 or 16 octets); 0: shed it (behind, and its prefix over its share) */
int shed_admit(Shedder *s, const unsigned char *addr, int alen, int behind, long long now_ms);
/* one call of the loop: this many datagrams read (and answered) in ns nanoseconds */
void shed_busy(Shedder *s, long long ns, long long datagrams);

/* udp.c */
PyObject *udp_drain(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *slip_method(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
