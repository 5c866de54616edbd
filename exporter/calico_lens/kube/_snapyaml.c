/* Snapshot YAML read by libyaml straight into Python objects.
 *
 * PyYAML with libyaml (CSafeLoader) still builds a node object per value and types and constructs
 * each in Python: 10,000 pods take ~7 s. This reads libyaml's events and builds the dicts, lists
 * and scalars here, ~10x quicker, with the same result as yaml.load_all(data, CSafeLoader):
 *  - quoted, literal and folded scalars are strings, as PyYAML resolves them;
 *  - a plain scalar is typed here only where that is certain (the YAML 1.1 null and bool words,
 *    a plain decimal integer, a string no implicit resolver can match); any other plain scalar
 *    is handed to `resolve`, which types it with PyYAML's own resolver and constructors;
 *  - anything else (anchors, aliases, explicit tags, directives, a collection as a key, what
 *    `resolve` answers with `fallback`, nesting deeper than MAX_DEPTH, a parse error) returns None,
 *    and the caller reads the text with PyYAML, which gives its own answer or its own error.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <yaml.h>

#define MAX_DEPTH 512

typedef struct {
    PyObject *obj; /* a dict or a list */
    PyObject *key; /* a dict's key waiting for its value (owned), or NULL */
} Frame;

typedef struct {
    Frame stack[MAX_DEPTH];
    int depth;
    PyObject *root; /* the current document's value (owned) */
    PyObject *resolve, *fallback;
    int bail; /* 1: leave this text to PyYAML */
} Builder;

/* The YAML 1.1 words PyYAML's resolver types (its bool and null regexes, exactly). */
static const char *const TRUE_WORDS[] = {"yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", NULL};
static const char *const FALSE_WORDS[] = {"no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF", NULL};
static const char *const NULL_WORDS[] = {"~", "null", "Null", "NULL", NULL};

static int in_words(const char *s, size_t n, const char *const *words) {
    for (; *words; words++)
        if (strlen(*words) == n && memcmp(*words, s, n) == 0)
            return 1;
    return 0;
}

/* Every character PyYAML's int, float and timestamp regexes can match. A plain scalar that starts
 * like a number but holds another character (or a second '.') is a string. */
static int numeric_char(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == '_' || c == '+' ||
           c == '-' || c == '.' || c == ':' || c == 'x' || c == 'X' || c == 'i' || c == 'n' || c == 'I' ||
           c == 'N' || c == 'T' || c == 't' || c == 'Z' || c == ' ' || c == '\t';
}

static PyObject *text(const char *s, size_t n) { return PyUnicode_DecodeUTF8(s, (Py_ssize_t)n, "strict"); }

/* A plain scalar's value, typed as PyYAML's SafeLoader types it. */
static PyObject *plain(Builder *b, const char *s, size_t n) {
    if (n == 0)
        Py_RETURN_NONE;
    unsigned char c = (unsigned char)s[0];
    int newline = memchr(s, '\n', n) != NULL; /* a regex's $ also matches before a final newline */
    if (!newline && c && strchr("yYnNtTfFoO~", c)) {
        if (in_words(s, n, TRUE_WORDS))
            Py_RETURN_TRUE;
        if (in_words(s, n, FALSE_WORDS))
            Py_RETURN_FALSE;
        if (in_words(s, n, NULL_WORDS))
            Py_RETURN_NONE;
        return text(s, n);
    }
    if (!newline && ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.')) {
        int dots = 0, dashes = 0, digits = 1, some_digit = 0, hex_only = 0, x = 0, n_ = 0;
        for (size_t i = 0; i < n; i++) {
            unsigned char d = (unsigned char)s[i];
            if (!numeric_char(d))
                return text(s, n);
            dots += d == '.';
            dashes += d == '-';
            digits &= d >= '0' && d <= '9';
            some_digit |= d >= '0' && d <= '9';
            n_ |= d == 'n' || d == 'N';
            hex_only |= d == 'c' || d == 'd' || d == 'B' || d == 'C' || d == 'D';
            x |= d == 'x' || d == 'X';
        }
        /* At most one '.' and three '-' (a timestamp: two in the date, one in the zone) match any
         * of them; c, d, B, C and D only in a hex int, after 0x; only .inf and .nan (each with an n
         * or N) lack a digit. So a hash, a uid or managedFields' `.` key is a string. */
        if (dots > 1 || dashes > 3 || (hex_only && !x) || (!some_digit && !n_))
            return text(s, n);
        if (digits && n <= 18 && (c != '0' || n == 1)) { /* 0 or [1-9][0-9]*: a decimal int */
            char buf[20];
            memcpy(buf, s, n);
            buf[n] = 0;
            return PyLong_FromString(buf, NULL, 10);
        }
    } else if (!newline && c && !strchr("<=!&*", c)) {
        return text(s, n); /* no implicit resolver starts with this character */
    }
    PyObject *str = text(s, n);
    if (!str)
        return NULL;
    PyObject *v = PyObject_CallOneArg(b->resolve, str);
    Py_DECREF(str);
    if (v == b->fallback) {
        Py_DECREF(v);
        b->bail = 1;
        return NULL;
    }
    return v;
}

/* Place a new value (stolen) in its parent: a list item, a dict key, or a dict value. */
static int place(Builder *b, PyObject *v, int is_collection) {
    if (b->depth == 0) {
        Py_XSETREF(b->root, v);
        return 0;
    }
    Frame *f = &b->stack[b->depth - 1];
    int rc;
    if (PyList_CheckExact(f->obj)) {
        rc = PyList_Append(f->obj, v);
        Py_DECREF(v);
        return rc;
    }
    if (!f->key) {
        if (is_collection) { /* unhashable: PyYAML says so in its own words */
            Py_DECREF(v);
            b->bail = 1;
            return -1;
        }
        f->key = v;
        return 0;
    }
    rc = PyDict_SetItem(f->obj, f->key, v);
    Py_CLEAR(f->key);
    Py_DECREF(v);
    return rc;
}

static int open_collection(Builder *b, PyObject *c) {
    if (!c)
        return -1;
    if (b->depth >= MAX_DEPTH) {
        Py_DECREF(c);
        b->bail = 1;
        return -1;
    }
    Py_INCREF(c); /* one reference for the parent, one for the stack */
    if (place(b, c, 1) < 0) {
        Py_DECREF(c);
        return -1;
    }
    b->stack[b->depth].obj = c;
    b->stack[b->depth].key = NULL;
    b->depth++;
    return 0;
}

static void close_collection(Builder *b) {
    Frame *f = &b->stack[--b->depth];
    Py_CLEAR(f->key);
    Py_CLEAR(f->obj);
}

/* An anchor or an explicit tag on a node: PyYAML gives those their meaning, so the text is its. */
static int marked(Builder *b, const yaml_char_t *anchor, const yaml_char_t *tag) {
    if (anchor || tag)
        b->bail = 1;
    return b->bail;
}

/* One event; -1 ends the read (an exception set, or b->bail). */
static int on_event(Builder *b, yaml_event_t *e, PyObject *docs) {
    switch (e->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (e->data.document_start.version_directive ||
            e->data.document_start.tag_directives.start != e->data.document_start.tag_directives.end) {
            b->bail = 1;
            return -1;
        }
        return 0;
    case YAML_DOCUMENT_END_EVENT: {
        int rc = PyList_Append(docs, b->root ? b->root : Py_None);
        Py_CLEAR(b->root);
        return rc;
    }
    case YAML_ALIAS_EVENT:
        b->bail = 1;
        return -1;
    case YAML_SCALAR_EVENT: {
        if (marked(b, e->data.scalar.anchor, e->data.scalar.tag))
            return -1;
        const char *s = (const char *)e->data.scalar.value;
        size_t n = e->data.scalar.length;
        PyObject *v = e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ? plain(b, s, n) : text(s, n);
        return v ? place(b, v, 0) : -1;
    }
    case YAML_SEQUENCE_START_EVENT:
        if (marked(b, e->data.sequence_start.anchor, e->data.sequence_start.tag))
            return -1;
        return open_collection(b, PyList_New(0));
    case YAML_MAPPING_START_EVENT:
        if (marked(b, e->data.mapping_start.anchor, e->data.mapping_start.tag))
            return -1;
        return open_collection(b, PyDict_New());
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        close_collection(b);
        return 0;
    default: /* stream start and end */
        return 0;
    }
}

static PyObject *load_all(PyObject *self, PyObject *args) {
    Py_buffer data;
    Builder b;
    memset(&b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "y*OO:load_all", &data, &b.resolve, &b.fallback))
        return NULL;
    PyObject *docs = PyList_New(0);
    yaml_parser_t parser;
    if (!docs || !yaml_parser_initialize(&parser)) {
        PyBuffer_Release(&data);
        Py_XDECREF(docs);
        return PyErr_NoMemory();
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)data.buf, (size_t)data.len);
    int failed = 0, done = 0;
    while (!done) {
        yaml_event_t e;
        if (!yaml_parser_parse(&parser, &e)) {
            b.bail = 1; /* PyYAML reads it again and reports the error with its own message */
            break;
        }
        done = e.type == YAML_STREAM_END_EVENT;
        failed = on_event(&b, &e, docs) < 0;
        yaml_event_delete(&e);
        if (failed)
            break;
    }
    yaml_parser_delete(&parser);
    PyBuffer_Release(&data);
    while (b.depth)
        close_collection(&b);
    Py_CLEAR(b.root);
    if (b.bail && !PyErr_Occurred()) {
        Py_DECREF(docs);
        Py_RETURN_NONE;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(docs);
        return NULL;
    }
    return docs;
}

static PyMethodDef methods[] = {
    {"load_all", load_all, METH_VARARGS,
     "load_all(data: bytes, resolve, fallback) -> list | None: the documents of a YAML text as "
     "yaml.load_all(data, CSafeLoader) gives them, or None to leave the text to PyYAML."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_snapyaml", NULL, -1, methods};

PyMODINIT_FUNC PyInit__snapyaml(void) { return PyModule_Create(&module); }
