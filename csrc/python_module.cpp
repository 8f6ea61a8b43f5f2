// The Python entry point of initkit._C. The module is empty: importing it loads the shared
// library, whose static initializers register the torch.ops.initkit operators. No pybind11,
// so the extension builds against Python's limited API.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr,
                                          nullptr,               nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
