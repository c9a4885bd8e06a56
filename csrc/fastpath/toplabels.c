/* TopLabels: the most queried top-level labels (TLDs), in bounded memory whatever the names.
 *
 *     TopLabels(capacity, key)   key: 16 octets for SipHash (random per process)
 *     .add(label)                count one query whose question name ends in this label
 *     .top(n)                    [(label, count, error)], most counted first (then by label)
 *     .reset()
 *
 * The Space-Saving algorithm (Metwally, Agrawal, El Abbadi 2005): `capacity` entries; a label
 * seen is counted in its entry; a label not seen takes over the entry with the least count c,
 * starting at c + 1 with error c.  Every label counted more than N / capacity times (N: all
 * adds) is among the entries, and an entry's count is at most `error` above the truth.  The
 * entries are a min-heap on the count (a sift per add), found by label through a chained hash
 * table under a secret key, so that a flood of crafted labels cannot make long chains.
 *
 * src/imrs/serve/toplabels.py is the same algorithm in Python, heap moves included: both give
 * the same top() for the same adds (tests/test_toplabels.py).  Labels are counted lower-cased
 * (ASCII), at most 63 octets; the root name counts as the empty label.
 */
#include "fastpath.h"

#define LABEL_MAX 63
#define CAPACITY_MAX 65536

typedef struct {
    uint64_t count, error;
    int32_t next;   /* the next entry in its hash chain, -1: none */
    int32_t heap;   /* its position in the heap */
    uint32_t chain; /* its hash chain (bucket) */
    uint8_t len;
    unsigned char label[LABEL_MAX];
} Entry;

struct TopLabels {
    PyObject_HEAD
    int32_t capacity, used;
    uint64_t k0, k1;
    uint32_t mask;
    int32_t *buckets; /* the first entry of each chain, -1: none */
    int32_t *heap;    /* entry indices; heap[0] has the least count */
    Entry *entries;
};

#define COUNT(t, pos) ((t)->entries[(t)->heap[pos]].count)

static void
heap_swap(TopLabels *t, int32_t a, int32_t b)
{
    int32_t ea = t->heap[a], eb = t->heap[b];
    t->heap[a] = eb;
    t->heap[b] = ea;
    t->entries[eb].heap = a;
    t->entries[ea].heap = b;
}

/* after a count went up: move down while a child has less (the left one first on a tie) */
static void
sift_down(TopLabels *t, int32_t pos)
{
    for (;;) {
        int32_t least = pos, left = 2 * pos + 1, right = left + 1;
        if (left < t->used && COUNT(t, left) < COUNT(t, least))
            least = left;
        if (right < t->used && COUNT(t, right) < COUNT(t, least))
            least = right;
        if (least == pos)
            return;
        heap_swap(t, pos, least);
        pos = least;
    }
}

/* a new entry at the end: move up while its parent has more */
static void
sift_up(TopLabels *t, int32_t pos)
{
    while (pos > 0) {
        int32_t parent = (pos - 1) / 2;
        if (!(COUNT(t, pos) < COUNT(t, parent)))
            return;
        heap_swap(t, pos, parent);
        pos = parent;
    }
}

static void
unlink_entry(TopLabels *t, int32_t e)
{
    int32_t *link = &t->buckets[t->entries[e].chain];
    while (*link != e)
        link = &t->entries[*link].next;
    *link = t->entries[e].next;
}

void
toplabels_add(TopLabels *t, const unsigned char *label, Py_ssize_t len)
{
    unsigned char lower[LABEL_MAX];
    if (len > LABEL_MAX)
        return; /* not a label */
    for (Py_ssize_t i = 0; i < len; i++) {
        unsigned char c = label[i];
        lower[i] = (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
    }
    uint32_t chain = (uint32_t)imrs_siphash24(t->k0, t->k1, lower, (size_t)len) & t->mask;
    for (int32_t e = t->buckets[chain]; e >= 0; e = t->entries[e].next) {
        Entry *entry = &t->entries[e];
        if (entry->len == len && memcmp(entry->label, lower, (size_t)len) == 0) {
            entry->count++;
            sift_down(t, entry->heap);
            return;
        }
    }
    int32_t e;
    uint64_t least = 0;
    if (t->used < t->capacity) {
        e = t->used++;
        t->heap[e] = e;
        t->entries[e].heap = e;
    }
    else { /* take over the entry with the least count */
        e = t->heap[0];
        least = t->entries[e].count;
        unlink_entry(t, e);
    }
    Entry *entry = &t->entries[e];
    entry->count = least + 1;
    entry->error = least;
    entry->len = (uint8_t)len;
    memcpy(entry->label, lower, (size_t)len);
    entry->chain = chain;
    entry->next = t->buckets[chain];
    t->buckets[chain] = e;
    if (least)
        sift_down(t, entry->heap);
    else
        sift_up(t, entry->heap);
}

static void
toplabels_clear(TopLabels *t)
{
    t->used = 0;
    for (uint32_t i = 0; i <= t->mask; i++)
        t->buckets[i] = -1;
}

static PyObject *
toplabels_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t capacity;
    const char *key;
    Py_ssize_t key_len;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "ny#", &capacity, &key, &key_len))
        return NULL;
    if (capacity < 1 || capacity > CAPACITY_MAX || key_len != 16) {
        PyErr_SetString(PyExc_ValueError, "TopLabels(capacity: 1..65536, key: 16 octets)");
        return NULL;
    }
    TopLabels *t = (TopLabels *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    uint32_t buckets = 16;
    while (buckets < 2 * (uint32_t)capacity)
        buckets *= 2;
    t->capacity = (int32_t)capacity;
    t->mask = buckets - 1;
    memcpy(&t->k0, key, 8);
    memcpy(&t->k1, key + 8, 8);
    t->buckets = PyMem_Malloc(buckets * sizeof(int32_t));
    t->heap = PyMem_Malloc((size_t)capacity * sizeof(int32_t));
    t->entries = PyMem_Malloc((size_t)capacity * sizeof(Entry));
    if (t->buckets == NULL || t->heap == NULL || t->entries == NULL) {
        Py_DECREF(t);
        return PyErr_NoMemory();
    }
    toplabels_clear(t);
    return (PyObject *)t;
}

static void
toplabels_dealloc(TopLabels *t)
{
    PyMem_Free(t->buckets);
    PyMem_Free(t->heap);
    PyMem_Free(t->entries);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyObject *
toplabels_add_method(TopLabels *t, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "add(label: bytes)");
        return NULL;
    }
    toplabels_add(t, (const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg));
    Py_RETURN_NONE;
}

static int
by_count(const void *a, const void *b)
{
    const Entry *x = *(const Entry *const *)a, *y = *(const Entry *const *)b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    int c = memcmp(x->label, y->label, x->len < y->len ? x->len : y->len);
    return c ? c : (int)x->len - (int)y->len;
}

static PyObject *
toplabels_top(TopLabels *t, PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    const Entry **sorted = PyMem_Malloc((t->used ? (size_t)t->used : 1) * sizeof(Entry *));
    if (sorted == NULL)
        return PyErr_NoMemory();
    for (int32_t i = 0; i < t->used; i++)
        sorted[i] = &t->entries[i];
    qsort(sorted, (size_t)t->used, sizeof(Entry *), by_count);
    if (n < 0 || n > t->used)
        n = t->used;
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *item = Py_BuildValue("(y#KK)", (const char *)sorted[i]->label, (Py_ssize_t)sorted[i]->len,
                                       (unsigned long long)sorted[i]->count, (unsigned long long)sorted[i]->error);
        if (item == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, item);
    }
    PyMem_Free(sorted);
    return out;
}

static PyObject *
toplabels_reset(TopLabels *t, PyObject *unused)
{
    (void)unused;
    toplabels_clear(t);
    Py_RETURN_NONE;
}

static PyMethodDef toplabels_methods[] = {
    {"add", (PyCFunction)toplabels_add_method, METH_O, "add(label): count one query for this top-level label"},
    {"top", (PyCFunction)toplabels_top, METH_O,
     "top(n) -> [(label, count, error)]: the n most counted (n < 0: all), most first, then by label"},
    {"reset", (PyCFunction)toplabels_reset, METH_NOARGS, "reset(): forget every label"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject TopLabelsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "imrs._fastpath.TopLabels",
    .tp_basicsize = sizeof(TopLabels),
    .tp_dealloc = (destructor)toplabels_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The most queried top-level labels, by Space-Saving (see toplabels.c).",
    .tp_methods = toplabels_methods,
    .tp_new = toplabels_new,
};
