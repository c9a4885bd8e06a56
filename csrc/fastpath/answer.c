/* The C answer: CompiledAnswers.answer (src/imrs/answer/compiled.py), common case only.
 *
 *     answer(compiled, wire, tcp, ipv6) -> bytes | None
 *
 * Reads the structures the Python path built (compiled.names, NameEntry, AnswerClass, Variant
 * and its shape caches) and splices the same bytes together.  It never builds or caches
 * answers: whenever the Python path would do more than look up and copy (EDNS options, an
 * unrendered variant, a shape not cached yet, glue owners, anything malformed or unexpected),
 * it returns None and the caller runs CompiledAnswers.answer, which decides everything.
 * Whenever it returns bytes, they are those CompiledAnswers.answer returns (tests/test_fastc.py).
 *
 * The GIL is held throughout; every object kept across a call into the C API is a strong
 * reference (released at "out").
 */
#include "fastpath.h"

#include <structmember.h>

#define UDP_DEFAULT_MAX 512 /* imrs.answer.respond.UDP_DEFAULT_MAX */
#define MAX_QEND 267        /* compiled.py: "if qend > 267" (12 + 255) */

/* Attribute names, interned once at module init. */
static PyObject *s_names, *s_edns_size, *s_caps, *s_deeper, *s_exact, *s_exact_default, *s_below,
    *s_gaps, *s_gap_labels, *s_owners, *s_variants, *s_fit_len, *s_pointers, *s_moved, *s_full, *s_cut;
static PyObject *s_c_index;

/* Slot attributes read in place.  The compiled structures are objects of classes with
 * __slots__ (NameEntry, AnswerClass, Variant): once a (type, attribute name) pair is known
 * to be a plain object slot, its value is read at the slot's offset, without the generic
 * attribute lookup (most of the C path's own time before).  Anything else (the compiled
 * object's instance attributes, other types, properties) goes through PyObject_GetAttr. */
#define SLOT_CACHE 64 /* direct-mapped by the name's address */
static struct {
    PyTypeObject *type; /* a strong reference */
    PyObject *name;     /* interned */
    Py_ssize_t offset;
} slot_cache[SLOT_CACHE];

/* A new reference to obj.name, or NULL (no exception set). */
static PyObject *
get_attr(PyObject *obj, PyObject *name)
{
    PyTypeObject *type = Py_TYPE(obj);
    size_t at = ((uintptr_t)name >> 4) % SLOT_CACHE;
    if (slot_cache[at].type == type && slot_cache[at].name == name) {
        PyObject *v = *(PyObject **)((char *)obj + slot_cache[at].offset);
        Py_XINCREF(v); /* NULL: an unset slot, as AttributeError */
        return v;
    }
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *descr = _PyType_Lookup(type, name); /* borrowed */
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type) && type->tp_getattro == PyObject_GenericGetAttr) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY) &&
            *(PyObject **)((char *)obj + member->offset) == v) {
            Py_INCREF(type);
            Py_XSETREF(slot_cache[at].type, type);
            slot_cache[at].name = name;
            slot_cache[at].offset = member->offset;
        }
    }
    return v;
}

/* A C long from an attribute that must be an int; -1 (and no exception set) otherwise. */
static int
get_long_attr(PyObject *obj, PyObject *name, long long *value)
{
    PyObject *v = get_attr(obj, name);
    if (v == NULL)
        return -1;
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

/* The name index: compiled.names (lower-case wire name -> NameEntry) as an open-addressing
 * table with the keys' bytes in place, and every entry's gap_labels copied into one arena, so
 * that walking a question name and finding its NXDOMAIN gap touch few cache lines (the walk
 * through dicts of bytes objects and lists of them was most of the time per query).  Built
 * on the first answer from a CompiledAnswers and kept on it (attribute _c_index, a capsule),
 * so it lives and dies with it; compiled.names and the gap labels never change once built. */
typedef struct {
    const char *key; /* the names dict's key bytes (the dict is held) */
    Py_ssize_t klen;
    uint64_t hash;
    PyObject *entry;   /* a strong reference */
    Py_ssize_t gap0;   /* first of this entry's gap labels in labels[], -1: none */
    Py_ssize_t ngaps;  /* len(gap_labels) */
} IndexSlot;

typedef struct {
    PyObject *names; /* a strong reference */
    IndexSlot *slots;
    /* tags[i]: 0 for an empty slot, else the top bits of its hash (never 0).  A probe reads
     * these 4 octets, not the 48 of a slot: random names (a junk flood's) miss the index, and
     * the tags stay in cache where the slots do not. */
    uint32_t *tags;
    size_t mask;
    struct {
        size_t offset;
        Py_ssize_t len;
    } *labels;
    char *arena;
    long long edns_size, caps[2]; /* compiled._edns_size and _caps: constants of it */
} NameIndex;

/* The last compiled object asked about and its index: most calls are for the one snapshot
 * being served.  A weak reference, so that a new object at a freed one's address is not
 * taken for it. */
static PyObject *memo_ref;
static NameIndex *memo_index;

static uint64_t
name_hash(const unsigned char *p, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

static void
index_free(PyObject *capsule)
{
    NameIndex *index = PyCapsule_GetPointer(capsule, "imrs._fastpath.NameIndex");
    if (index == NULL)
        return;
    if (index->slots != NULL)
        for (size_t i = 0; i <= index->mask; i++)
            Py_XDECREF(index->slots[i].entry);
    Py_XDECREF(index->names);
    PyMem_Free(index->slots);
    PyMem_Free(index->tags);
    PyMem_Free(index->labels);
    PyMem_Free(index->arena);
    PyMem_Free(index);
}

static uint32_t
hash_tag(uint64_t h)
{
    return (uint32_t)(h >> 32) | 1;
}

static const IndexSlot *
index_find(const NameIndex *index, const unsigned char *key, Py_ssize_t klen)
{
    uint64_t h = name_hash(key, klen);
    uint32_t tag = hash_tag(h);
    for (size_t i = h & index->mask;; i = (i + 1) & index->mask) {
        uint32_t t = index->tags[i];
        if (t == 0)
            return NULL;
        if (t != tag)
            continue;
        const IndexSlot *slot = &index->slots[i];
        if (slot->hash == h && slot->klen == klen && memcmp(slot->key, key, klen) == 0)
            return slot;
    }
}

/* The index of `compiled` (borrowed: owned by compiled), built on first use; NULL when
 * compiled.names is not a dict of bytes (no exception set) or on a real error (set). */
static NameIndex *build_name_index(PyObject *compiled);

static NameIndex *
name_index(PyObject *compiled)
{
    if (memo_ref != NULL && PyWeakref_GET_OBJECT(memo_ref) == compiled)
        return memo_index;
    NameIndex *index = NULL;
    PyObject *capsule = get_attr(compiled, s_c_index);
    if (capsule != NULL) {
        index = PyCapsule_GetPointer(capsule, "imrs._fastpath.NameIndex");
        Py_DECREF(capsule); /* compiled keeps it */
        if (index == NULL)
            PyErr_Clear();
    }
    else
        index = build_name_index(compiled);
    if (index != NULL) {
        PyObject *ref = PyWeakref_NewRef(compiled, NULL);
        if (ref == NULL)
            PyErr_Clear(); /* no weak references to it: no memo */
        Py_XSETREF(memo_ref, ref);
        memo_index = ref != NULL ? index : NULL;
    }
    return index;
}

static NameIndex *
build_name_index(PyObject *compiled)
{
    long long edns_size, caps[2];
    PyObject *caps_obj = get_attr(compiled, s_caps);
    int ok_caps = caps_obj != NULL && PyTuple_Check(caps_obj) && PyTuple_GET_SIZE(caps_obj) == 2 &&
                  get_long_attr(compiled, s_edns_size, &edns_size) == 0;
    for (int i = 0; ok_caps && i < 2; i++) {
        caps[i] = PyLong_Check(PyTuple_GET_ITEM(caps_obj, i)) ? PyLong_AsLongLong(PyTuple_GET_ITEM(caps_obj, i)) : -1;
        ok_caps = !(caps[i] == -1 && PyErr_Occurred()) && caps[i] >= 0;
    }
    Py_XDECREF(caps_obj);
    if (!ok_caps) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *capsule;
    PyObject *names = get_attr(compiled, s_names);
    if (names == NULL || !PyDict_CheckExact(names)) {
        Py_XDECREF(names);
        return NULL;
    }
    NameIndex *index = PyMem_Calloc(1, sizeof *index);
    if (index == NULL) {
        Py_DECREF(names);
        PyErr_NoMemory();
        return NULL;
    }
    index->names = names;
    index->edns_size = edns_size;
    index->caps[0] = caps[0];
    index->caps[1] = caps[1];
    capsule = PyCapsule_New(index, "imrs._fastpath.NameIndex", index_free);
    if (capsule == NULL) {
        Py_DECREF(names);
        PyMem_Free(index);
        return NULL;
    }
    size_t size = 16;
    while (size < 2 * (size_t)PyDict_GET_SIZE(names))
        size *= 2;
    index->mask = size - 1;
    index->slots = PyMem_Calloc(size, sizeof(IndexSlot));
    index->tags = PyMem_Calloc(size, sizeof(uint32_t));
    Py_ssize_t nlabels = 0;
    size_t arena_len = 0;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int ok = index->slots != NULL && index->tags != NULL;
    while (ok && PyDict_Next(names, &pos, &key, &value)) { /* sizes of the gap labels first */
        PyObject *labels = get_attr(value, s_gap_labels);
        if (labels != NULL && PyList_CheckExact(labels)) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(labels); i++) {
                PyObject *label = PyList_GET_ITEM(labels, i);
                if (PyBytes_Check(label))
                    arena_len += PyBytes_GET_SIZE(label);
            }
            nlabels += PyList_GET_SIZE(labels);
        }
        Py_XDECREF(labels);
        ok = PyBytes_Check(key);
    }
    if (ok) {
        index->labels = PyMem_Calloc(nlabels ? nlabels : 1, sizeof *index->labels);
        index->arena = PyMem_Malloc(arena_len ? arena_len : 1);
        ok = index->labels != NULL && index->arena != NULL;
    }
    pos = 0;
    nlabels = 0;
    arena_len = 0;
    while (ok && PyDict_Next(names, &pos, &key, &value)) {
        const char *k = PyBytes_AS_STRING(key);
        Py_ssize_t klen = PyBytes_GET_SIZE(key);
        uint64_t h = name_hash((const unsigned char *)k, klen);
        size_t i = h & index->mask;
        while (index->slots[i].entry != NULL)
            i = (i + 1) & index->mask;
        IndexSlot *slot = &index->slots[i];
        index->tags[i] = hash_tag(h);
        slot->key = k;
        slot->klen = klen;
        slot->hash = h;
        Py_INCREF(value);
        slot->entry = value;
        slot->gap0 = -1;
        PyObject *labels = get_attr(value, s_gap_labels);
        if (labels != NULL && PyList_CheckExact(labels)) {
            Py_ssize_t n = PyList_GET_SIZE(labels);
            int all_bytes = 1;
            for (Py_ssize_t j = 0; j < n && all_bytes; j++)
                all_bytes = PyBytes_Check(PyList_GET_ITEM(labels, j));
            if (all_bytes) { /* else the gap is looked up in the list, per query */
                slot->gap0 = nlabels;
                slot->ngaps = n;
                for (Py_ssize_t j = 0; j < n; j++) {
                    PyObject *label = PyList_GET_ITEM(labels, j);
                    index->labels[nlabels].offset = arena_len;
                    index->labels[nlabels].len = PyBytes_GET_SIZE(label);
                    memcpy(index->arena + arena_len, PyBytes_AS_STRING(label), PyBytes_GET_SIZE(label));
                    arena_len += PyBytes_GET_SIZE(label);
                    nlabels++;
                }
            }
        }
        Py_XDECREF(labels);
    }
    if (!ok) {
        Py_DECREF(capsule);
        if (!PyErr_Occurred() && (index->slots == NULL || index->tags == NULL))
            PyErr_NoMemory();
        return NULL;
    }
    int set = PyObject_SetAttr(compiled, s_c_index, capsule);
    Py_DECREF(capsule);
    if (set < 0) {
        PyErr_Clear(); /* e.g. a compiled object without a __dict__: no index, the slow walk */
        return NULL;
    }
    return index;
}

/* bisect.bisect_right over the gap labels [gap0, gap0 + n) of the index's arena */
static Py_ssize_t
bisect_right_arena(const NameIndex *index, Py_ssize_t gap0, Py_ssize_t n, const char *x, Py_ssize_t xlen)
{
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        const char *item = index->arena + index->labels[gap0 + mid].offset;
        Py_ssize_t ilen = index->labels[gap0 + mid].len;
        int c = memcmp(x, item, xlen < ilen ? xlen : ilen);
        if (c < 0 || (c == 0 && xlen < ilen)) /* x < item */
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
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

/* The response to the query wire[:n] (a new reference), Py_None (a new reference) when the
 * Python path must decide, NULL with an exception on a real error (memory). */
PyObject *
answer_wire(PyObject *compiled, const unsigned char *wire, Py_ssize_t n, int tcp, int ipv6)
{

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

    const NameIndex *names_index = name_index(compiled);
    if (names_index == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE; /* not a CompiledAnswers as expected: the Python path */
    }
    PyObject *result = NULL, *entry = NULL, *answer_class = NULL;
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
            long long edns_size = names_index->edns_size;
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
    int found = nstarts - 1;
    const IndexSlot *slot = NULL;
    for (int k = nstarts - 1; k >= 0; k--) {
        const IndexSlot *candidate = index_find(names_index, lname + starts[k], qlen - starts[k]);
        if (candidate == NULL) {
            if (entry != NULL)
                break;
            continue;
        }
        Py_INCREF(candidate->entry);
        Py_XSETREF(entry, candidate->entry);
        slot = candidate;
        found = k;
        PyObject *deeper = get_attr(candidate->entry, s_deeper);
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
            if (gaps != NULL && PyList_CheckExact(gaps)) {
                Py_ssize_t lo = starts[found - 1] + 1;
                Py_ssize_t i = -1;
                if (slot->gap0 >= 0)
                    i = bisect_right_arena(names_index, slot->gap0, slot->ngaps, (const char *)lname + lo, starts[found] - lo);
                else {
                    PyObject *labels = get_attr(entry, s_gap_labels);
                    if (labels != NULL && PyList_CheckExact(labels))
                        i = bisect_right_bytes(labels, (const char *)lname + lo, starts[found] - lo);
                    Py_XDECREF(labels);
                }
                if (i >= 0 && i < PyList_GET_SIZE(gaps)) {
                    answer_class = PyList_GET_ITEM(gaps, i);
                    Py_INCREF(answer_class);
                }
            }
            Py_XDECREF(gaps);
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
    long long fit_len, cap = names_index->caps[ipv6];
    if (get_long_attr(variant, s_fit_len, &fit_len) < 0)
        goto out;
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
    Py_XDECREF(entry);
    Py_XDECREF(answer_class);
    Py_XDECREF(variants);
    Py_XDECREF(variant);
    Py_XDECREF(shape);
    Py_XDECREF(cache);
    Py_XDECREF(key);
    return NULL;
}

PyObject *
fast_answer(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "answer(compiled, wire, tcp, ipv6) takes 4 arguments");
        return NULL;
    }
    int tcp = PyObject_IsTrue(args[2]);
    int ipv6 = PyObject_IsTrue(args[3]);
    if (tcp < 0 || ipv6 < 0)
        return NULL;
    if (!PyBytes_Check(args[1]))
        Py_RETURN_NONE;
    return answer_wire(args[0], (const unsigned char *)PyBytes_AS_STRING(args[1]), PyBytes_GET_SIZE(args[1]), tcp, ipv6);
}


int
answer_init(void)
{
    struct {
        PyObject **slot;
        const char *name;
    } attrs[] = {
        {&s_names, "names"}, {&s_edns_size, "_edns_size"}, {&s_caps, "_caps"}, {&s_deeper, "deeper"},
        {&s_exact, "exact"}, {&s_exact_default, "exact_default"}, {&s_below, "below"}, {&s_gaps, "gaps"},
        {&s_gap_labels, "gap_labels"}, {&s_owners, "owners"}, {&s_variants, "variants"}, {&s_fit_len, "fit_len"},
        {&s_pointers, "pointers"}, {&s_moved, "moved"}, {&s_full, "full"}, {&s_cut, "cut"}, {&s_c_index, "_c_index"},
    };
    for (size_t i = 0; i < sizeof attrs / sizeof attrs[0]; i++) {
        if (*attrs[i].slot == NULL && (*attrs[i].slot = PyUnicode_InternFromString(attrs[i].name)) == NULL)
            return -1;
    }
    return 0;
}
