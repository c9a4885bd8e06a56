/* imrs._fastpath: the module (its functions and types live in answer.c, rrl.c, errlimit.c,
 * shed.c, traffic.c, toplabels.c and udp.c). */
#include "fastpath.h"

static PyMethodDef methods[] = {
    {"udp_drain", (PyCFunction)(void (*)(void))udp_drain, METH_FASTCALL,
     "udp_drain(fd, handler, ipv6, max_packets, compiled=None, gate=None, limited=None, traffic=None,\n"
     "          sources=None, tlds=None, error_limit=None, shedder=None)\n"
     "    -> (received, sent, errors)\n\n"
     "recvmmsg, the C answer and RRL gate or handler(wire, peer, port) per datagram, sendmmsg;\n"
     "until the socket is empty."},
    {"slip", (PyCFunction)(void (*)(void))slip_method, METH_FASTCALL,
     "slip(response, has_opt) -> bytes | None\n\n"
     "rrl.slip_response for a response of the C answer (has_opt: the query's ARCOUNT); None\n"
     "for anything else."},
    {"answer", (PyCFunction)(void (*)(void))fast_answer, METH_FASTCALL,
     "answer(compiled, wire, tcp, ipv6) -> bytes | None\n\n"
     "CompiledAnswers.answer for queries without EDNS options whose answer shape is cached;\n"
     "None whenever the Python path must decide."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "imrs._fastpath", "The data plane's hot path in C: answer, RrlGate, udp_drain, slip (see csrc/fastpath/).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    if (answer_init() < 0)
        return NULL;
    if (PyType_Ready(&RrlGateType) < 0 || PyType_Ready(&SourceCounterType) < 0 || PyType_Ready(&TopLabelsType) < 0 ||
        PyType_Ready(&ErrorLimitType) < 0 || PyType_Ready(&ShedderType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&moduledef);
    if (module == NULL)
        return NULL;
    if (PyModule_AddType(module, &RrlGateType) < 0 || PyModule_AddType(module, &SourceCounterType) < 0 ||
        PyModule_AddType(module, &TopLabelsType) < 0 || PyModule_AddType(module, &ErrorLimitType) < 0 ||
        PyModule_AddType(module, &ShedderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
