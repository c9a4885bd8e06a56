/* The UDP loop: recvmmsg, the C answer and rate limiter (or a Python handler), sendmmsg. */
#include "fastpath.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>

/* rrl.py slip_response for a response of the C answer: TC set, the question kept, no answer
 * or authority records, and the OPT record, which is the last 11 octets when the query had
 * one (has_opt: the query's ARCOUNT, 0 or 1, as the C answer accepts); and for a bare header
 * (early_reply's FORMERR and NOTIMP, which a junk flood makes many of): TC set.  NULL (no
 * exception) for anything else, which the Python function then handles. */
static PyObject *
slip_wire(PyObject *response, int has_opt)
{
    const unsigned char *r = (const unsigned char *)PyBytes_AS_STRING(response);
    Py_ssize_t len = PyBytes_GET_SIZE(response);
    if (len == 12 && memcmp(r + 4, "\0\0\0\0\0\0\0\0", 8) == 0) { /* a bare header (early_reply's): TC set */
        PyObject *out = PyBytes_FromStringAndSize((const char *)r, 12);
        if (out != NULL)
            ((unsigned char *)PyBytes_AS_STRING(out))[2] |= 0x02;
        return out;
    }
    if (len < 12 || r[4] != 0 || r[5] != 1 || has_opt > 1)
        return NULL;
    Py_ssize_t o = 12;
    while (o < len && r[o] != 0) {
        if (r[o] >= 0x40)
            return NULL;
        o += r[o] + 1;
    }
    Py_ssize_t question_end = o + 5;
    Py_ssize_t opt = has_opt ? 11 : 0;
    if (question_end + opt > len || (has_opt && (r[len - 11] != 0 || r[len - 10] != 0 || r[len - 9] != 41 ||
                                                 r[len - 2] != 0 || r[len - 1] != 0)))
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, question_end + opt);
    if (out == NULL)
        return NULL;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out);
    memcpy(w, r, question_end);
    w[2] |= 0x02; /* TC */
    memset(w + 6, 0, 6);
    w[11] = (unsigned char)has_opt;
    if (has_opt)
        memcpy(w + question_end, r + len - 11, 11);
    return out;
}

/* The junk of floods, decided before any lookup exactly as query.py's parse_query and
 * error_response decide it (the batched Python loop gives the same bytes: tests/test_batchio.py):
 * no answer to a runt or a response (QR set); NOTIMP for an opcode other than QUERY and
 * NOTIFY; FORMERR for rcode bits, a question name that is compressed, too long or cut short,
 * a question running past the end, a QDCOUNT other than 1, or records in the answer or
 * authority section.  EARLY_NONE leaves the query to the C answer (or, through it, Python):
 * NOTIFY, an empty question with an OPT record and an IXFR query with records are Python's.
 * Runs only while the snapshot has no unavailable zone (Snapshot.answer checks those first). */
#define EARLY_NONE 0
#define EARLY_DROP 1
#define EARLY_REPLY 2
#define MAX_NAME_WIRE 255

Py_ssize_t
query_name_end(const unsigned char *w, Py_ssize_t n, Py_ssize_t *last)
{
    Py_ssize_t pos = 12, last_at = 12;
    for (;;) {
        if (pos >= n)
            return -1;
        unsigned int length = w[pos];
        if (length == 0)
            break;
        if (length & 0xC0)
            return -1; /* a compression pointer or an unknown label type */
        last_at = pos;
        pos += length + 1;
        if (pos - 12 >= MAX_NAME_WIRE)
            return -1;
    }
    pos++;
    if (last != NULL)
        *last = last_at;
    return pos - 12 > MAX_NAME_WIRE ? -1 : pos;
}

static PyObject *
header_only(const unsigned char *q, unsigned char flags_high, unsigned char flags_low)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, 12);
    if (out == NULL)
        return NULL;
    unsigned char *w = (unsigned char *)PyBytes_AS_STRING(out);
    memset(w, 0, 12);
    w[0] = q[0];
    w[1] = q[1];
    w[2] = flags_high;
    w[3] = flags_low;
    return out;
}

static int
early_reply(const unsigned char *q, Py_ssize_t len, PyObject **response)
{
    *response = NULL;
    if (len < 12 || (q[2] & 0x80))
        return EARLY_DROP;
    int opcode = (q[2] >> 3) & 0xF;
    if (opcode != 0 && opcode != 4) { /* the query's flags less AD and rcode, QR set */
        *response = header_only(q, q[2] | 0x80, (q[3] & 0xD0) | 4);
        return EARLY_REPLY;
    }
    if (opcode == 4)
        return EARLY_NONE; /* NOTIFY: the handler's (the NOTIFY receiver first) */
    unsigned char formerr_high = 0x80 | (q[2] & 0x79); /* QR, opcode and RD kept */
    if (q[3] & 0x0F) {
        *response = header_only(q, formerr_high, 1);
        return EARLY_REPLY;
    }
    Py_ssize_t pos = query_name_end(q, len, NULL);
    if (pos < 0 || pos + 4 > len)
        goto formerr;
    int qd = (q[4] << 8) | q[5], an = (q[6] << 8) | q[7], ns = (q[8] << 8) | q[9], ar = (q[10] << 8) | q[11];
    if (qd != 1) {
        if (qd == 0 && an == 0 && ns == 0 && ar == 1 && len >= 23)
            return EARLY_NONE; /* maybe an OPT record to echo: Python's */
        *response = header_only(q, 0x80 | (q[2] & 0x78), 1);
        return EARLY_REPLY;
    }
    unsigned int qtype = (q[pos] << 8) | q[pos + 1];
    if (an != 0 || (ns != 0 && qtype != 251)) {
        *response = header_only(q, formerr_high, 1);
        return EARLY_REPLY;
    }
    return EARLY_NONE;
formerr:
    *response = header_only(q, formerr_high, 1);
    return EARLY_REPLY;
}

PyObject *
slip_method(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "slip(response: bytes, has_opt: int)");
        return NULL;
    }
    long has_opt = PyLong_AsLong(args[1]);
    if (has_opt == -1 && PyErr_Occurred())
        return NULL;
    PyObject *out = slip_wire(args[0], (int)has_opt);
    if (out == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return out;
}

/* ---------------------------------------------------------------------------------------------
 * udp_drain(fd, handler, ipv6, max_packets, compiled=None, gate=None, limited=None, traffic=None,
 *           sources=None, tlds=None, error_limit=None, shedder=None)
 *     -> (received, sent, errors)
 *
 * The UDP receive-answer-send loop of serve/udp.py in C: recvmmsg up to VLEN datagrams at a
 * time, until the socket is empty or max_packets were read; the responses go back with
 * sendmmsg to the address each query came from.  Per datagram:
 *   - with `compiled` (a CompiledAnswers), the C answer first; when it gives one and `gate` (an
 *     RrlGate) is set, the gate decides, and only a response it limits goes to Python:
 *     limited(verdict, wire, peer, response) gives what to send instead (bytes or None).  A
 *     query answered under the rate never enters Python;
 *   - otherwise handler(wire: bytes, peer: bytes, port: int) gives the response bytes or None
 *     (peer: the packed source address, 4 or 16 octets); it must not try the C answer again.
 * With `traffic` (TrafficCounters.values, serve/traffic.py) every datagram, every response
 * handed to sendmmsg and each batch's time from receipt to sending are counted, and with
 * `sources` (a SourceCounter) every datagram's source address (traffic.c), and with `tlds` (a
 * TopLabels) the top-level label of every question that parses.  With `error_limit` (an
 * ErrorLimit), a header-only FORMERR or NOTIMP made here goes out only while the limit allows
 * it, before the gate sees it (the handler applies the same limit to what it makes).  With
 * `shedder` (a Shedder, shed.c), every datagram is offered to it after it was counted, and one it
 * sheds (the worker is behind its socket and the source's prefix over its share) gets no answer.
 * The callbacks are expected to catch their own errors; one that escapes anyway (or an error
 * in the gate) is cleared, counted in ``errors``, and that datagram gets no answer.  A
 * datagram cut short (MSG_TRUNC) is dropped.  Buffers are allocated once (the GIL serialises
 * every call).
 */
#define VLEN 64
#define SLOT 65536

static char *recv_buffer;
static struct sockaddr_in6 names[VLEN];
static struct iovec recv_iov[VLEN], send_iov[VLEN];
static struct mmsghdr recv_msgs[VLEN], send_msgs[VLEN];

/* *out = args[i] when it was given and is not None, else NULL; -1 (TypeError `message`) when it
 * is not of `type`. */
static int
typed_arg(PyObject *const *args, Py_ssize_t nargs, Py_ssize_t i, PyTypeObject *type, const char *message, void **out)
{
    *out = NULL;
    if (nargs <= i || args[i] == Py_None)
        return 0;
    if (!PyObject_TypeCheck(args[i], type)) {
        PyErr_SetString(PyExc_TypeError, message);
        return -1;
    }
    *out = args[i];
    return 0;
}

PyObject *
udp_drain(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 4 || nargs > 12) {
        PyErr_SetString(PyExc_TypeError, "udp_drain(fd, handler, ipv6, max_packets, compiled=None, gate=None, "
                                         "limited=None, traffic=None, sources=None, tlds=None, error_limit=None, "
                                         "shedder=None)");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    PyObject *handler = args[1];
    int ipv6 = PyObject_IsTrue(args[2]);
    long max_packets = PyLong_AsLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    PyObject *compiled = nargs > 4 && args[4] != Py_None ? args[4] : NULL;
    RrlGate *gate = NULL;
    PyObject *limited = nargs > 6 && args[6] != Py_None ? args[6] : NULL;
    if (nargs > 5 && args[5] != Py_None) {
        if (!PyObject_TypeCheck(args[5], &RrlGateType) || limited == NULL) {
            PyErr_SetString(PyExc_TypeError, "udp_drain: gate must be an RrlGate, with limited");
            return NULL;
        }
        gate = (RrlGate *)args[5];
    }
    SourceCounter *sources;
    TopLabels *tlds;
    ErrorLimit *error_limit;
    Shedder *shedder;
    if (typed_arg(args, nargs, 8, &SourceCounterType, "udp_drain: sources must be a SourceCounter", (void **)&sources) < 0 ||
        typed_arg(args, nargs, 9, &TopLabelsType, "udp_drain: tlds must be a TopLabels", (void **)&tlds) < 0 ||
        typed_arg(args, nargs, 10, &ErrorLimitType, "udp_drain: error_limit must be an ErrorLimit", (void **)&error_limit) < 0 ||
        typed_arg(args, nargs, 11, &ShedderType, "udp_drain: shedder must be a Shedder", (void **)&shedder) < 0)
        return NULL;
    Py_buffer traffic_view = {0};
    uint64_t *traffic = NULL;
    if (nargs > 7 && args[7] != Py_None) {
        if (PyObject_GetBuffer(args[7], &traffic_view, PyBUF_WRITABLE | PyBUF_FORMAT) < 0)
            return NULL;
        if (traffic_view.format == NULL || strcmp(traffic_view.format, "Q") != 0 ||
            traffic_view.len != traffic_size() * 8) {
            PyBuffer_Release(&traffic_view);
            PyErr_SetString(PyExc_TypeError, "udp_drain: traffic must be traffic.TrafficCounters.values");
            return NULL;
        }
        traffic = traffic_view.buf;
    }
    if (recv_buffer == NULL) {
        recv_buffer = PyMem_RawMalloc((size_t)VLEN * SLOT);
        if (recv_buffer == NULL) {
            if (traffic != NULL)
                PyBuffer_Release(&traffic_view);
            return PyErr_NoMemory();
        }
    }
    long received = 0, sent = 0, errors = 0;
    PyObject *responses[VLEN];
    struct timespec entered;
    if (shedder != NULL)
        clock_gettime(CLOCK_MONOTONIC, &entered);
    while (received < max_packets) {
        for (int i = 0; i < VLEN; i++) {
            recv_iov[i].iov_base = recv_buffer + (size_t)i * SLOT;
            recv_iov[i].iov_len = SLOT;
            memset(&recv_msgs[i].msg_hdr, 0, sizeof recv_msgs[i].msg_hdr);
            recv_msgs[i].msg_hdr.msg_name = &names[i];
            recv_msgs[i].msg_hdr.msg_namelen = sizeof names[i];
            recv_msgs[i].msg_hdr.msg_iov = &recv_iov[i];
            recv_msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, recv_msgs, VLEN, MSG_DONTWAIT, NULL);
        if (n <= 0)
            break; /* empty (EAGAIN), interrupted, or an error reported on the socket: done for now */
        received += n;
        struct timespec began;
        if (traffic != NULL)
            clock_gettime(CLOCK_MONOTONIC, &began);
        int behind = 0;
        long long now_ms = 0;
        if (shedder != NULL) {
            now_ms = shed_now_ms();
            if (n == VLEN) /* a full batch: maybe a long queue behind it */
                behind = shed_behind(shedder, fd, now_ms);
        }
        int count = 0;
        for (int i = 0; i < n; i++) {
            responses[i] = NULL;
            if (traffic != NULL)
                traffic_query(traffic, tlds, recv_iov[i].iov_base, recv_msgs[i].msg_len, 0, ipv6);
            if (sources != NULL)
                sources_count(sources, ipv6 ? (const unsigned char *)&names[i].sin6_addr
                                            : (const unsigned char *)&((struct sockaddr_in *)&names[i])->sin_addr,
                              ipv6 ? 16 : 4);
            if (recv_msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
                continue;
            const char *addr;
            Py_ssize_t alen;
            if (ipv6) {
                addr = (const char *)&names[i].sin6_addr;
                alen = 16;
            } else {
                addr = (const char *)&((struct sockaddr_in *)&names[i])->sin_addr;
                alen = 4;
            }
            if (shedder != NULL && !shed_admit(shedder, (const unsigned char *)addr, (int)alen, behind, now_ms))
                continue;
            PyObject *response = NULL, *slipped;
            int c_made = 0; /* made here (no extended rcode), not by Python */
            if (compiled != NULL) {
                const unsigned char *q = recv_iov[i].iov_base;
                Py_ssize_t qlen = recv_msgs[i].msg_len;
                int early = early_reply(q, qlen, &response);
                if (early == EARLY_DROP)
                    continue;
                if (early == EARLY_NONE)
                    response = answer_wire(compiled, q, qlen, 0, ipv6);
                if (response == Py_None)
                    Py_CLEAR(response);
                else if (response == NULL)
                    PyErr_Clear(); /* (memory) the handler tries the Python path */
                c_made = response != NULL;
            }
            if (response != NULL && error_limit != NULL &&
                errlimit_is_error((const unsigned char *)PyBytes_AS_STRING(response), PyBytes_GET_SIZE(response)) &&
                !errlimit_allow(error_limit)) {
                Py_DECREF(response); /* over the error limit: no answer, and nothing for the gate */
                continue;
            }
            if (response != NULL) {
                int verdict = gate != NULL ? gate_decide(gate, (const unsigned char *)addr, alen, NULL, response) : RRL_SEND;
                if (verdict == RRL_DROP) { /* the C answer took no EDNS option: no cookie exempts it */
                    Py_DECREF(response);
                    continue;
                }
                if (verdict < 0) /* an error in the gate: counted below */
                    Py_CLEAR(response);
                else if (verdict == RRL_SLIP && (slipped = slip_wire(response, ((const unsigned char *)recv_iov[i].iov_base)[11])) != NULL)
                    Py_SETREF(response, slipped);
                else if (verdict != RRL_SEND) { /* a slip C does not make: Python's */
                    c_made = 0;
                    PyErr_Clear();
                    PyObject *limited_response = NULL;
                    PyObject *wire = PyBytes_FromStringAndSize(recv_iov[i].iov_base, recv_msgs[i].msg_len);
                    PyObject *peer = PyBytes_FromStringAndSize(addr, alen);
                    PyObject *v = PyLong_FromLong(verdict);
                    if (wire != NULL && peer != NULL && v != NULL) {
                        PyObject *call_args[4] = {v, wire, peer, response};
                        limited_response = PyObject_Vectorcall(limited, call_args, 4, NULL);
                    }
                    Py_XDECREF(wire);
                    Py_XDECREF(peer);
                    Py_XDECREF(v);
                    Py_SETREF(response, limited_response);
                }
            }
            else {
                PyObject *wire = PyBytes_FromStringAndSize(recv_iov[i].iov_base, recv_msgs[i].msg_len);
                PyObject *peer = PyBytes_FromStringAndSize(addr, alen);
                PyObject *port = PyLong_FromLong(ntohs(ipv6 ? names[i].sin6_port : ((struct sockaddr_in *)&names[i])->sin_port));
                if (wire != NULL && peer != NULL && port != NULL) {
                    PyObject *call_args[3] = {wire, peer, port};
                    response = PyObject_Vectorcall(handler, call_args, 3, NULL);
                }
                Py_XDECREF(wire);
                Py_XDECREF(peer);
                Py_XDECREF(port);
            }
            if (response == NULL) {
                PyErr_Clear();
                errors++;
                continue;
            }
            if (!PyBytes_Check(response)) {
                Py_DECREF(response); /* None: nothing to send */
                continue;
            }
            responses[i] = response;
            if (traffic != NULL)
                traffic_response(traffic, (const unsigned char *)PyBytes_AS_STRING(response), PyBytes_GET_SIZE(response),
                                 0, ipv6, c_made);
            send_iov[count].iov_base = PyBytes_AS_STRING(response);
            send_iov[count].iov_len = (size_t)PyBytes_GET_SIZE(response);
            memset(&send_msgs[count].msg_hdr, 0, sizeof send_msgs[count].msg_hdr);
            send_msgs[count].msg_hdr.msg_name = &names[i];
            send_msgs[count].msg_hdr.msg_namelen = recv_msgs[i].msg_hdr.msg_namelen;
            send_msgs[count].msg_hdr.msg_iov = &send_iov[count];
            send_msgs[count].msg_hdr.msg_iovlen = 1;
            count++;
        }
        int done = 0;
        while (done < count) {
            int m = sendmmsg(fd, send_msgs + done, (unsigned)(count - done), MSG_DONTWAIT);
            if (m > 0) {
                done += m;
                sent += m;
            }
            else if (m < 0 && errno == EINTR)
                continue;
            else if (m == 0 || errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
                break; /* the socket's buffer is full: the rest are lost, like packets */
            else
                done++; /* this one's destination is refused (no route, a firewall): the rest still go */
        }
        for (int i = 0; i < n; i++)
            Py_XDECREF(responses[i]);
        if (traffic != NULL) {
            struct timespec ended;
            clock_gettime(CLOCK_MONOTONIC, &ended);
            traffic_latency(traffic, (double)(ended.tv_sec - began.tv_sec) + (ended.tv_nsec - began.tv_nsec) * 1e-9, 0, n);
        }
    }
    if (shedder != NULL) { /* how fast this worker reads and answers, for the shedder's share */
        struct timespec left;
        clock_gettime(CLOCK_MONOTONIC, &left);
        shed_busy(shedder, (long long)(left.tv_sec - entered.tv_sec) * 1000000000LL + (left.tv_nsec - entered.tv_nsec),
                  received);
    }
    if (traffic != NULL)
        PyBuffer_Release(&traffic_view);
    return Py_BuildValue("(lll)", received, sent, errors);
}
