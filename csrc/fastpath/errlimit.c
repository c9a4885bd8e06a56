/* ErrorLimit: at most `rate` FORMERR and NOTIMP responses per second of the clock, whatever
 * their sources (serve/errlimit.py has the same in Python, and says why).
 *
 *     ErrorLimit(rate) .allow(now=None) -> bool   .rate   .dropped
 *
 * udp_drain asks errlimit_allow for every header-only FORMERR or NOTIMP it would send.
 */
#include "fastpath.h"

#include <structmember.h>
#include <time.h>

struct ErrorLimit {
    PyObject_HEAD
    long long rate;    /* 0: no limit */
    long long second;  /* the second being counted */
    long long count;   /* responses allowed in it */
    long long dropped; /* responses refused, in all */
};

int
errlimit_is_error(const unsigned char *r, Py_ssize_t len)
{
    return len == 12 && ((r[3] & 0x0F) == 1 || (r[3] & 0x0F) == 4);
}

int
errlimit_allow_at(ErrorLimit *e, long long now)
{
    if (e->rate == 0)
        return 1;
    if (now != e->second) {
        e->second = now;
        e->count = 0;
    }
    if (e->count < e->rate) {
        e->count++;
        return 1;
    }
    e->dropped++;
    return 0;
}

int
errlimit_allow(ErrorLimit *e)
{
    return errlimit_allow_at(e, (long long)time(NULL));
}

static PyObject *
errlimit_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    long long rate;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, "L", &rate))
        return NULL;
    if (rate < 0) {
        PyErr_SetString(PyExc_ValueError, "ErrorLimit: rate must be 0 (no limit) or more");
        return NULL;
    }
    ErrorLimit *e = (ErrorLimit *)type->tp_alloc(type, 0);
    if (e == NULL)
        return NULL;
    e->rate = rate;
    e->second = -1;
    return (PyObject *)e;
}

static PyObject *
errlimit_allow_method(ErrorLimit *e, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError, "allow(now=None)");
        return NULL;
    }
    if (nargs == 0 || args[0] == Py_None)
        return PyBool_FromLong(errlimit_allow(e));
    long long now = PyLong_AsLongLong(args[0]);
    if (now == -1 && PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(errlimit_allow_at(e, now));
}

static PyMethodDef errlimit_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))errlimit_allow_method, METH_FASTCALL,
     "allow(now=None) -> bool: whether one more error response may go out in this second (now: whole "
     "seconds of the clock, time.time() by default); a refusal is counted in dropped"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef errlimit_members[] = {
    {"rate", T_LONGLONG, offsetof(ErrorLimit, rate), READONLY, "error responses allowed per second; 0: no limit"},
    {"dropped", T_LONGLONG, offsetof(ErrorLimit, dropped), READONLY, "error responses refused"},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject ErrorLimitType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "imrs._fastpath.ErrorLimit",
    .tp_basicsize = sizeof(ErrorLimit),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "At most rate FORMERR and NOTIMP responses per second (serve/errlimit.py).",
    .tp_methods = errlimit_methods,
    .tp_members = errlimit_members,
    .tp_new = errlimit_new,
};
