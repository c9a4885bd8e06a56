/* imrs._fastpath: CompiledAnswers.answer (src/imrs/answer/compiled.py) in C, common case only.
 *
 *     answer(compiled, wire, tcp, ipv6) -> bytes | None
 *
 * Reads the structures the Python path built (compiled.names, NameEntry, AnswerClass, Variant
 * and its shape caches) and splices the same bytes together.  It never builds or caches
 * anything: whenever the Python path would do more than look up and copy (EDNS options, an
 * unrendered variant, a shape not cached yet, glue owners, anything malformed or unexpected),
 * it returns None and the caller runs CompiledAnswers.answer, which decides everything.
 * Whenever it returns bytes, they are those CompiledAnswers.answer returns (tests/test_fastc.py).
 *
 * The GIL is held throughout; every object kept across a call into the C API is a strong
 * reference (released at "out").
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define UDP_DEFAULT_MAX 512 /* imrs.answer.respond.UDP_DEFAULT_MAX */
#define MAX_QEND 267        /* compiled.py: "if qend > 267" (12 + 255) */

/* Attribute names, interned once at module init. */
static PyObject *s_names, *s_edns_size, *s_caps, *s_deeper, *s_exact, *s_exact_default, *s_below,
    *s_gaps, *s_gap_labels, *s_owners, *s_variants, *s_fit_len, *s_pointers, *s_moved, *s_full, *s_cut;

/* A C long from an attribute that must be an int; -1 (and no exception set) otherwise. */
static int
get_long_attr(PyObject *obj, PyObject *name, long long *value)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) {
        PyErr_Clear();
        return -1;
    }
    int ok = PyLong_Check(v);
    if (ok) {
        *value = PyLong_AsLongLong(v);
        if (*value == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            ok = 0;
        }
    }
    Py_DECREF(v);
    return ok ? 0 : -1;
}

/* A new reference to obj.name, or NULL (no exception set). */
static PyObject *
get_attr(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

/* bisect.bisect_right(labels, x) over a list of bytes; -1 when an item is not bytes. */
static Py_ssize_t
bisect_right_bytes(PyObject *labels, const char *x, Py_ssize_t xlen)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(labels);
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        PyObject *item = PyList_GET_ITEM(labels, mid);
        if (!PyBytes_Check(item))
            return -1;
        Py_ssize_t ilen = PyBytes_GET_SIZE(item);
        int c = memcmp(x, PyBytes_AS_STRING(item), xlen < ilen ? xlen : ilen);
        if (c < 0 || (c == 0 && xlen < ilen)) /* x < item */
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* The bytes object at tuple[i] when tuple is a tuple of more than i items, else NULL (borrowed). */
static PyObject *
tuple_item(PyObject *tuple, Py_ssize_t i)
{
    if (tuple == NULL || !PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) <= i)
        return NULL;
    return PyTuple_GET_ITEM(tuple, i);
}

static PyObject *
fast_answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "answer(compiled, wire, tcp, ipv6) takes 4 arguments");
        return NULL;
    }
    PyObject *compiled = args[0], *wire_obj = args[1];
    int tcp = PyObject_IsTrue(args[2]);
    int ipv6 = PyObject_IsTrue(args[3]);
    if (tcp < 0 || ipv6 < 0)
        return NULL;
    if (!PyBytes_Check(wire_obj))
        Py_RETURN_NONE;
    const unsigned char *wire = (const unsigned char *)PyBytes_AS_STRING(wire_obj);
    Py_ssize_t n = PyBytes_GET_SIZE(wire_obj);

    /* Header: a query (QR clear, opcode QUERY, rcode 0), one question, no answer or
     * authority records, no or one additional record. */
    if (n < 17 || (wire[2] & 0xF8) || (wire[3] & 0x0F))
        Py_RETURN_NONE;
    static const unsigned char one_question[7] = {0, 1, 0, 0, 0, 0, 0};
    if (memcmp(wire + 4, one_question, 7) != 0 || wire[11] > 1)
        Py_RETURN_NONE;
    int has_opt = wire[11];

    /* The question name: uncompressed labels; starts[] as in the Python path (offsets from
     * the start of the name).  A name ending past MAX_QEND is refused there too. */
    Py_ssize_t starts[MAX_QEND];
    int nstarts = 0;
    Py_ssize_t pos = 12;
    unsigned int length = wire[12];
    while (length) {
        if (length > 63)
            Py_RETURN_NONE; /* a compression pointer or an unknown label type */
        starts[nstarts++] = pos - 12;
        pos += length + 1;
        if (pos >= MAX_QEND || pos >= n)
            Py_RETURN_NONE; /* too long, or runs past the end */
        length = wire[pos];
    }
    if (pos + 5 > n)
        Py_RETURN_NONE; /* no room for type and class */
    starts[nstarts++] = pos - 12; /* the root label */
    Py_ssize_t qend = pos + 1;
    unsigned int qtype = (wire[pos + 1] << 8) | wire[pos + 2];
    unsigned int qclass = (wire[pos + 3] << 8) | wire[pos + 4];
    if (qclass != 1 || qtype == 252 || qtype == 251)
        Py_RETURN_NONE; /* a class other than IN, or AXFR / IXFR */
    Py_ssize_t end = qend + 4;

    PyObject *result = NULL, *names = NULL, *caps = NULL, *entry = NULL, *answer_class = NULL;
    PyObject *variants = NULL, *variant = NULL, *shape = NULL, *cache = NULL, *key = NULL;
    long long limit;
    int do_bit;
    if (has_opt) {
        /* An OPT record with the root as owner, version 0, no options, ending the message. */
        if (n != end + 11)
            Py_RETURN_NONE;
        const unsigned char *opt = wire + end;
        unsigned int rrtype = (opt[1] << 8) | opt[2];
        unsigned int payload = (opt[3] << 8) | opt[4];
        unsigned int rdlen = (opt[9] << 8) | opt[10];
        if (opt[0] || rrtype != 41 || opt[6] || rdlen)
            Py_RETURN_NONE; /* opt[6]: EDNS version; options: the Python path (cookies, ...) */
        do_bit = opt[7] >> 7;
        if (tcp)
            limit = 65535 - 11;
        else if (payload > UDP_DEFAULT_MAX) {
            long long edns_size;
            if (get_long_attr(compiled, s_edns_size, &edns_size) < 0)
                Py_RETURN_NONE;
            limit = (payload < edns_size ? payload : edns_size) - 11;
        }
        else
            limit = UDP_DEFAULT_MAX - 11;
    }
    else {
        if (n != end)
            Py_RETURN_NONE; /* trailing data */
        do_bit = 0;
        limit = tcp ? 65535 : UDP_DEFAULT_MAX;
    }

    /* The deepest name we hold that ends the question name, from the root down. */
    unsigned char lname[MAX_QEND];
    Py_ssize_t qlen = qend - 12;
    for (Py_ssize_t i = 0; i < qlen; i++) {
        unsigned char c = wire[12 + i];
        lname[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c; /* bytes.lower() */
    }
    names = get_attr(compiled, s_names);
    if (names == NULL || !PyDict_CheckExact(names))
        goto out;
    int found = nstarts - 1;
    for (int k = nstarts - 1; k >= 0; k--) {
        PyObject *suffix = PyBytes_FromStringAndSize((const char *)lname + starts[k], qlen - starts[k]);
        if (suffix == NULL)
            goto error;
        PyObject *candidate = PyDict_GetItemWithError(names, suffix); /* borrowed */
        Py_DECREF(suffix);
        if (candidate == NULL) {
            if (PyErr_Occurred())
                goto error;
            if (entry != NULL)
                break;
            continue;
        }
        Py_INCREF(candidate);
        Py_XSETREF(entry, candidate);
        found = k;
        PyObject *deeper = get_attr(candidate, s_deeper);
        if (deeper == NULL)
            goto out;
        int deep = PyObject_IsTrue(deeper);
        Py_DECREF(deeper);
        if (deep < 0)
            goto error;
        if (!deep)
            break;
    }
    if (entry == NULL)
        goto out; /* in none of our zones: REFUSED, by the Python path */

    if (found == 0) { /* entry.exact.get(qtype) or entry.exact_default */
        PyObject *exact = get_attr(entry, s_exact);
        if (exact == NULL)
            goto out;
        if (!PyDict_CheckExact(exact)) {
            Py_DECREF(exact);
            goto out;
        }
        PyObject *type_key = PyLong_FromUnsignedLong(qtype);
        if (type_key == NULL) {
            Py_DECREF(exact);
            goto error;
        }
        answer_class = PyDict_GetItemWithError(exact, type_key); /* borrowed */
        Py_XINCREF(answer_class);
        Py_DECREF(type_key);
        Py_DECREF(exact);
        if (answer_class == NULL && PyErr_Occurred())
            goto error;
        if (answer_class == NULL || answer_class == Py_None) {
            Py_XDECREF(answer_class);
            answer_class = get_attr(entry, s_exact_default);
        }
    }
    else { /* entry.below, or the NXDOMAIN gap the next label falls in */
        answer_class = get_attr(entry, s_below);
        if (answer_class == Py_None) {
            Py_CLEAR(answer_class);
            PyObject *gaps = get_attr(entry, s_gaps);
            PyObject *labels = gaps != NULL ? get_attr(entry, s_gap_labels) : NULL;
            if (gaps != NULL && labels != NULL && PyList_CheckExact(gaps) && PyList_CheckExact(labels)) {
                Py_ssize_t lo = starts[found - 1] + 1;
                Py_ssize_t i = bisect_right_bytes(labels, (const char *)lname + lo, starts[found] - lo);
                if (i >= 0 && i < PyList_GET_SIZE(gaps)) {
                    answer_class = PyList_GET_ITEM(gaps, i);
                    Py_INCREF(answer_class);
                }
            }
            Py_XDECREF(gaps);
            Py_XDECREF(labels);
        }
    }
    if (answer_class == Py_None)
        Py_CLEAR(answer_class);
    if (answer_class == NULL) {
        /* A glue owner (entry.referral set): the class _glue_owner_class keeps in
         * entry.owners for this name, when it has made one; else the Python path makes it. */
        PyObject *owners = get_attr(entry, s_owners);
        if (owners != NULL && PyDict_CheckExact(owners)) {
            PyObject *suffix = PyBytes_FromStringAndSize((const char *)lname + starts[found], qlen - starts[found]);
            if (suffix == NULL) {
                Py_DECREF(owners);
                goto error;
            }
            answer_class = PyDict_GetItemWithError(owners, suffix); /* borrowed */
            Py_XINCREF(answer_class);
            Py_DECREF(suffix);
        }
        Py_XDECREF(owners);
        PyErr_Clear();
        if (answer_class == NULL || answer_class == Py_None)
            goto out; /* no answer here (REFUSED...), or a new glue owner: the Python path */
    }

    /* The rendered variant: [do + 2 * ipv6]; None until the Python path renders it. */
    variants = get_attr(answer_class, s_variants);
    if (variants == NULL)
        goto out;
    Py_ssize_t index = do_bit + 2 * ipv6;
    if (PyList_CheckExact(variants) && PyList_GET_SIZE(variants) > index)
        variant = PyList_GET_ITEM(variants, index);
    else if (PyTuple_CheckExact(variants) && PyTuple_GET_SIZE(variants) > index)
        variant = PyTuple_GET_ITEM(variants, index);
    if (variant == NULL || variant == Py_None) {
        variant = NULL;
        goto out;
    }
    Py_INCREF(variant);

    /* The shape: the full body (pointers moved for this name length) when it all fits, else
     * the cut one for this (length, limit, transport); only ever from the caches. */
    long long fit_len, cap;
    caps = get_attr(compiled, s_caps);
    PyObject *cap_obj = tuple_item(caps, ipv6);
    if (cap_obj == NULL || !PyLong_Check(cap_obj))
        goto out;
    cap = PyLong_AsLongLong(cap_obj);
    if ((cap == -1 && PyErr_Occurred()) || get_long_attr(variant, s_fit_len, &fit_len) < 0) {
        PyErr_Clear();
        goto out;
    }
    if (end + fit_len <= ((tcp || limit < cap) ? limit : cap)) {
        PyObject *pointers = get_attr(variant, s_pointers);
        if (pointers == NULL)
            goto out;
        int moved = PyObject_IsTrue(pointers);
        Py_DECREF(pointers);
        if (moved < 0)
            goto error;
        if (moved) {
            cache = get_attr(variant, s_moved);
            key = PyLong_FromSsize_t(qlen);
        }
        else
            shape = get_attr(variant, s_full);
    }
    else {
        cache = get_attr(variant, s_cut);
        /* qlen | (limit << 8) | (tcp << 25), as Python ints (limit > -2**50 here) */
        key = PyLong_FromLongLong((long long)((uint64_t)limit << 8) | qlen | ((long long)tcp << 25));
    }
    if (cache != NULL) {
        if (key == NULL || !PyDict_CheckExact(cache))
            goto out_clear;
        shape = PyDict_GetItemWithError(cache, key); /* borrowed */
        if (shape == NULL)
            goto out_clear; /* not derived yet: the Python path derives and caches it */
        Py_INCREF(shape);
    }

    /* wire[:2] + shape[0][has_opt][rdcd] + wire[12:end] + shape[1][has_opt] */
    int rdcd = (wire[2] & 1) | ((wire[3] >> 3) & 2);
    PyObject *head = tuple_item(tuple_item(tuple_item(shape, 0), has_opt), rdcd);
    PyObject *body = tuple_item(tuple_item(shape, 1), has_opt);
    if (head == NULL || body == NULL || !PyBytes_Check(head) || !PyBytes_Check(body))
        goto out;
    Py_ssize_t hlen = PyBytes_GET_SIZE(head), blen = PyBytes_GET_SIZE(body);
    result = PyBytes_FromStringAndSize(NULL, 2 + hlen + (end - 12) + blen);
    if (result == NULL)
        goto error;
    char *p = PyBytes_AS_STRING(result);
    memcpy(p, wire, 2);
    memcpy(p + 2, PyBytes_AS_STRING(head), hlen);
    memcpy(p + 2 + hlen, wire + 12, end - 12);
    memcpy(p + 2 + hlen + (end - 12), PyBytes_AS_STRING(body), blen);
    goto out;

out_clear:
    PyErr_Clear(); /* a failed lookup falls back, it does not raise */
out:
    Py_XDECREF(names);
    Py_XDECREF(caps);
    Py_XDECREF(entry);
    Py_XDECREF(answer_class);
    Py_XDECREF(variants);
    Py_XDECREF(variant);
    Py_XDECREF(shape);
    Py_XDECREF(cache);
    Py_XDECREF(key);
    if (result == NULL)
        Py_RETURN_NONE;
    return result;

error: /* a real error (memory): raise it */
    Py_XDECREF(names);
    Py_XDECREF(caps);
    Py_XDECREF(entry);
    Py_XDECREF(answer_class);
    Py_XDECREF(variants);
    Py_XDECREF(variant);
    Py_XDECREF(shape);
    Py_XDECREF(cache);
    Py_XDECREF(key);
    return NULL;
}


/* ---------------------------------------------------------------------------------------------
 * udp_drain(fd, handler, ipv6, max_packets) -> (received, sent, errors)
 *
 * The UDP receive-answer-send loop of serve/udp.py (UdpListener._drain_batched) in C: recvmmsg
 * up to VLEN datagrams at a time, until the socket is empty or max_packets were read; for each,
 * handler(wire: bytes, peer: bytes) gives the response bytes or None (peer: the packed source
 * address, 4 or 16 octets); the responses go back with sendmmsg to the address each query came
 * from.  The handler is expected to catch its own errors; one that escapes anyway is cleared,
 * counted in ``errors``, and that datagram gets no answer.  A datagram cut short (MSG_TRUNC) is
 * dropped.  Buffers are allocated once (the GIL serialises every call).
 */
#define VLEN 64
#define SLOT 65536

static char *recv_buffer;
static struct sockaddr_in6 names[VLEN];
static struct iovec recv_iov[VLEN], send_iov[VLEN];
static struct mmsghdr recv_msgs[VLEN], send_msgs[VLEN];

static PyObject *
udp_drain(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "udp_drain(fd, handler, ipv6, max_packets)");
        return NULL;
    }
    int fd = (int)PyLong_AsLong(args[0]);
    PyObject *handler = args[1];
    int ipv6 = PyObject_IsTrue(args[2]);
    long max_packets = PyLong_AsLong(args[3]);
    if (PyErr_Occurred())
        return NULL;
    if (recv_buffer == NULL) {
        recv_buffer = PyMem_RawMalloc((size_t)VLEN * SLOT);
        if (recv_buffer == NULL)
            return PyErr_NoMemory();
    }
    long received = 0, sent = 0, errors = 0;
    PyObject *responses[VLEN];
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
        int count = 0;
        for (int i = 0; i < n; i++) {
            responses[i] = NULL;
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
            PyObject *wire = PyBytes_FromStringAndSize(recv_iov[i].iov_base, recv_msgs[i].msg_len);
            PyObject *peer = PyBytes_FromStringAndSize(addr, alen);
            PyObject *response = NULL;
            if (wire != NULL && peer != NULL) {
                PyObject *call_args[2] = {wire, peer};
                response = PyObject_Vectorcall(handler, call_args, 2, NULL);
            }
            Py_XDECREF(wire);
            Py_XDECREF(peer);
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
            if (m <= 0)
                break; /* socket buffer full or an error: the rest are lost, like packets */
            done += m;
        }
        sent += done;
        for (int i = 0; i < n; i++)
            Py_XDECREF(responses[i]);
    }
    return Py_BuildValue("(lll)", received, sent, errors);
}

static PyMethodDef methods[] = {
    {"udp_drain", (PyCFunction)(void (*)(void))udp_drain, METH_FASTCALL,
     "udp_drain(fd, handler, ipv6, max_packets) -> (received, sent, errors)\n\n"
     "recvmmsg, handler(wire, peer) per datagram, sendmmsg; until the socket is empty."},
    {"answer", (PyCFunction)(void (*)(void))fast_answer, METH_FASTCALL,
     "answer(compiled, wire, tcp, ipv6) -> bytes | None\n\n"
     "CompiledAnswers.answer for queries without EDNS options whose answer shape is cached;\n"
     "None whenever the Python path must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "imrs._fastpath", "The compiled answer path in C (see answer).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } attrs[] = {
        {&s_names, "names"}, {&s_edns_size, "_edns_size"}, {&s_caps, "_caps"}, {&s_deeper, "deeper"},
        {&s_exact, "exact"}, {&s_exact_default, "exact_default"}, {&s_below, "below"}, {&s_gaps, "gaps"},
        {&s_gap_labels, "gap_labels"}, {&s_owners, "owners"}, {&s_variants, "variants"}, {&s_fit_len, "fit_len"},
        {&s_pointers, "pointers"}, {&s_moved, "moved"}, {&s_full, "full"}, {&s_cut, "cut"},
    };
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        if (*attrs[i].slot == NULL && (*attrs[i].slot = PyUnicode_InternFromString(attrs[i].name)) == NULL)
            return NULL;
    }
    return PyModule_Create(&moduledef);
}
