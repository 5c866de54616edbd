/*
 * calico_lens.parse._scan: the kernel LOG line scanner in C.
 *
 * scan(text) does what parse_lines() in kernel_log.py does for a batch without eBPF lines, line by
 * line, with the same result: {(head, span, proto, dport): count}, lines, ignored, malformed, and
 * the first malformed line. It only handles 1-byte strings (ASCII/Latin-1, what kernel logs are);
 * for anything else it returns None and the caller takes the Python path. A property test checks
 * that both paths agree on arbitrary input.
 *
 * The grammar (LOG_RX in kernel_log.py), per line:
 *   wrapper?  dmesg-stamp?  head  "IN=" [^ ]* " OUT=" [^ ]* " " [^L]* "LEN="  ...  "PROTO=" [^ ]+
 *   (" SPT=" digits " DPT=" [^ ]+)?   (DPT as it stands: enrichment refuses what is not a port)
 * head is everything up to the first "IN="; span runs from "IN=" to just before the first "LEN=",
 * which must begin at the first 'L' after the OUT= value.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef const unsigned char *P;

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_upper(unsigned char c) { return c >= 'A' && c <= 'Z'; }
static int is_lower(unsigned char c) { return c >= 'a' && c <= 'z'; }
/* Python's str.isspace() for Latin-1: what \s matches in a str pattern. */
static int is_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f) || c == 0x85 || c == 0xa0;
}

/* Each matcher returns the position after what it matched, or NULL. */
static P digits(P s, P e, int min) {
    P p = s;
    while (p < e && is_digit(*p)) p++;
    return (p - s >= min) ? p : NULL;
}
static P token(P s, P e) { /* [^ \n]+, or NULL */
    P p = s;
    while (p < e && *p != ' ' && *p != '\n') p++;
    return p > s ? p : NULL;
}
static P lit(P s, P e, const char *t) {
    size_t n = strlen(t);
    return ((size_t)(e - s) >= n && memcmp(s, t, n) == 0) ? s + n : NULL;
}
static P ndigits(P s, P e, int n) {
    for (int i = 0; i < n; i++) if (s + i >= e || !is_digit(s[i])) return NULL;
    return s + n;
}
/* \S+ " kernel: " */
static P host_kernel(P s, P e) {
    P p = s;
    while (p < e && !is_space(*p)) p++;
    if (p == s) return NULL;
    return lit(p, e, " kernel: ");
}
/* \d\d:\d\d:\d\d(\.\d+)? */
static P hms(P p, P e) {
    if (!(p = ndigits(p, e, 2)) || !(p = lit(p, e, ":")) || !(p = ndigits(p, e, 2)) || !(p = lit(p, e, ":")) ||
        !(p = ndigits(p, e, 2)))
        return NULL;
    if (p < e && *p == '.' && p + 1 < e && is_digit(p[1])) p = digits(p + 1, e, 1);
    return p;
}
static P wrapper(P s, P e) {
    P p;
    /* /dev/kmsg: \d+,\d+,\d+,[^;\n]*; */
    if ((p = digits(s, e, 1)) && (p = lit(p, e, ",")) && (p = digits(p, e, 1)) && (p = lit(p, e, ",")) &&
        (p = digits(p, e, 1)) && (p = lit(p, e, ","))) {
        while (p < e && *p != ';') p++;
        if (p < e) return p + 1;
    }
    /* BSD syslog: [A-Z][a-z]{2} [ \d]\d hh:mm:ss(.f)? host kernel: */
    if (e - s >= 4 && is_upper(s[0]) && is_lower(s[1]) && is_lower(s[2]) && s[3] == ' ' && s + 5 < e &&
        (s[4] == ' ' || is_digit(s[4])) && is_digit(s[5]) && s + 6 < e && s[6] == ' ') {
        if ((p = hms(s + 7, e)) && (p = lit(p, e, " ")) && (p = host_kernel(p, e))) return p;
    }
    /* ISO: \d{4}-\d\d-\d\d[T ]hh:mm:ss(.f)?(Z|[+-]\d\d:?\d\d)? host kernel: */
    if ((p = ndigits(s, e, 4)) && (p = lit(p, e, "-")) && (p = ndigits(p, e, 2)) && (p = lit(p, e, "-")) &&
        (p = ndigits(p, e, 2)) && p < e && (*p == 'T' || *p == ' ') && (p = hms(p + 1, e))) {
        P q = p;
        if (q < e && *q == 'Z') q++;
        else if (q < e && (*q == '+' || *q == '-')) {
            P r = ndigits(q + 1, e, 2);
            if (r) {
                if (r < e && *r == ':') r++;
                r = ndigits(r, e, 2);
            }
            if (r) q = r;
        }
        if ((q = lit(q, e, " ")) && (q = host_kernel(q, e))) return q;
    }
    return s;
}

static P find(P s, P e, const char *t) {
    size_t n = strlen(t);
    if ((size_t)(e - s) < n) return NULL;
    for (P p = s; p + n <= e; p++) {
        p = memchr(p, t[0], (size_t)(e - p - n + 1));
        if (!p) return NULL;
        if (memcmp(p, t, n) == 0) return p;
    }
    return NULL;
}

/* What follows the wrapper and the stamp: 1 and the four parts when it is a flow line. */
static int parse_rest(P p, P e, P *hs, P *he, P *ss, P *se, P *ps, P *pe, P *ds, P *de) {
    P in = find(p, e, "IN=");
    if (!in) return 0;
    *hs = p; *he = in;
    P q = in + 3;
    while (q < e && *q != ' ') q++;
    if (!(q = lit(q, e, " OUT="))) return 0;
    while (q < e && *q != ' ') q++;
    if (q >= e) return 0;
    q++;
    P l = memchr(q, 'L', (size_t)(e - q));
    if (!l || !lit(l, e, "LEN=")) return 0;
    *ss = in; *se = l;
    P pr = find(l + 4, e, "PROTO=");
    if (!pr) return 0;
    P a = pr + 6, b = a;
    while (b < e && *b != ' ') b++;
    if (b == a) return 0;
    *ps = a; *pe = b;
    *ds = *de = b;
    P r;
    if ((r = lit(b, e, " SPT=")) && (r = digits(r, e, 1)) && (r = lit(r, e, " DPT="))) {
        P d = token(r, e);
        if (d) { *ds = r; *de = d; }
    }
    return 1;
}

static P stamp(P p, P e) { /* dmesg stamp: \[[^\]\n]*\] " ", or NULL */
    if (p < e && *p == '[') {
        P q = memchr(p, ']', (size_t)(e - p));
        if (q && q + 1 < e && q[1] == ' ') return q + 2;
    }
    return NULL;
}

/* One line. The wrapper and the stamp are optional, tried as the regex tries them: with each
 * first, then without, so that a line the regex reads is read the same way here. */
static int parse_line(P s, P e, P *hs, P *he, P *ss, P *se, P *ps, P *pe, P *ds, P *de) {
    P w = wrapper(s, e);
    P starts[2] = {w, s};
    for (int i = 0; i < (w == s ? 1 : 2); i++) {
        P st = stamp(starts[i], e);
        if (st && parse_rest(st, e, hs, he, ss, se, ps, pe, ds, de)) return 1;
        if (parse_rest(starts[i], e, hs, he, ss, se, ps, pe, ds, de)) return 1;
    }
    return 0;
}

/* For a TCP line: the source port, the IP ID and whether it is a bare SYN (SYN without ACK), read
 * as _syn() in kernel_log.py reads it. 1 when the line is a SYN with a port and an ID. */
static int syn_fields(P se, P ps, P pe, P de, P e, P *sp_s, P *sp_e, P *id_s, P *id_e) {
    if (pe - ps != 3 || memcmp(ps, "TCP", 3) != 0 || de == pe) return 0;  /* TCP with SPT and DPT */
    P r = lit(pe, e, " SPT=");
    if (!r) return 0;
    P d = digits(r, e, 1);
    if (!d || !lit(d, e, " DPT=")) return 0;
    *sp_s = r; *sp_e = d;
    P i = find(se, ps, " ID=");  /* between LEN= and PROTO= (IPv6 lines have none) */
    if (!i) return 0;
    P j = digits(i + 4, ps, 1);
    if (!j) return 0;
    *id_s = i + 4; *id_e = j;
    for (P q = de; (q = find(q, e, "RES=0x")) != NULL; q++) {
        P t = q + 6, h = t;
        while (h < e && (is_digit(*h) || (*h >= 'a' && *h <= 'f') || (*h >= 'A' && *h <= 'F'))) h++;
        if (h == t || h >= e || *h != ' ') continue;
        t = h + 1;
        int syn = 0, ack = 0;
        for (;;) {
            P w = t;
            while (w < e && is_upper(*w)) w++;
            if (w == t || w >= e || *w != ' ') break;
            if (w - t == 3 && memcmp(t, "SYN", 3) == 0) syn = 1;
            if (w - t == 3 && memcmp(t, "ACK", 3) == 0) ack = 1;
            t = w + 1;
        }
        if (!lit(t, e, "URGP=")) continue;
        return syn && !ack;
    }
    return 0;
}

/* FNV-1a (64 bit) over head, NUL, span, NUL, source port: one connection attempt's identity,
 * the same number kernel_log.attempt_id() computes. */
static unsigned long long fnv_parts(P a, P ae, P b, P be, P c, P ce) {
    unsigned long long h = 14695981039346656037ULL;
    for (P p = a; p < ae; p++) { h ^= *p; h *= 1099511628211ULL; }
    h *= 1099511628211ULL;  /* the NUL separator: h ^= 0 */
    for (P p = b; p < be; p++) { h ^= *p; h *= 1099511628211ULL; }
    h *= 1099511628211ULL;
    for (P p = c; p < ce; p++) { h ^= *p; h *= 1099511628211ULL; }
    return h;
}

static PyObject *scan(PyObject *self, PyObject *arg) {
    (void)self;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan() takes a str");
        return NULL;
    }
    if (PyUnicode_READY(arg) < 0) return NULL;
    if (PyUnicode_KIND(arg) != PyUnicode_1BYTE_KIND) Py_RETURN_NONE;
    P base = (P)PyUnicode_1BYTE_DATA(arg);
    Py_ssize_t n = PyUnicode_GET_LENGTH(arg);
    P end = base + n;
    PyObject *counts = PyDict_New();
    if (!counts) return NULL;
    PyObject *syns = PyList_New(0);  /* (key, attempt id, ip id) of each bare SYN, in line order */
    if (!syns) { Py_DECREF(counts); return NULL; }
    Py_ssize_t lines = 0, ignored = 0, malformed = 0;
    PyObject *sample = NULL;
    PyObject *empty = PyUnicode_New(0, 0);
    P s = base;
    while (s < end) {
        P nl = memchr(s, '\n', (size_t)(end - s));
        P e = nl ? nl : end;
        lines++;
        P hs, he, ss, se, ps, pe, ds, de;
        if (parse_line(s, e, &hs, &he, &ss, &se, &ps, &pe, &ds, &de)) {
            PyObject *key = Py_BuildValue(
                "(NNNNO)", PyUnicode_Substring(arg, hs - base, he - base), PyUnicode_Substring(arg, ss - base, se - base),
                PyUnicode_Substring(arg, ps - base, pe - base), PyUnicode_Substring(arg, ds - base, de - base), empty);
            if (!key) goto fail;
            PyObject *old = PyDict_GetItemWithError(counts, key);
            if (!old && PyErr_Occurred()) { Py_DECREF(key); goto fail; }
            PyObject *nv = PyLong_FromSsize_t(old ? PyLong_AsSsize_t(old) + 1 : 1);
            if (!nv || PyDict_SetItem(counts, key, nv) < 0) { Py_XDECREF(nv); Py_DECREF(key); goto fail; }
            Py_DECREF(nv);
            P sps, spe, ids, ide;
            if (syn_fields(se, ps, pe, de, e, &sps, &spe, &ids, &ide)) {
                PyObject *digits_s = PyUnicode_Substring(arg, ids - base, ide - base);
                PyObject *ip_id = digits_s ? PyLong_FromUnicodeObject(digits_s, 10) : NULL;
                Py_XDECREF(digits_s);
                PyObject *t = ip_id ? Py_BuildValue("(OKN)", key, fnv_parts(hs, he, ss, se, sps, spe), ip_id) : NULL;
                if (!t || PyList_Append(syns, t) < 0) { Py_XDECREF(t); Py_DECREF(key); goto fail; }
                Py_DECREF(t);
            }
            Py_DECREF(key);
        } else if (find(s, e, " OUT=")) {
            malformed++;
            if (!sample) sample = PyUnicode_Substring(arg, s - base, (e - s > 300 ? s + 300 : e) - base);
        } else {
            ignored++;
        }
        if (!nl) break;
        s = nl + 1;
    }
    PyObject *res = Py_BuildValue("(NnnnON)", counts, lines, ignored, malformed, sample ? sample : empty, syns);
    Py_XDECREF(sample);
    Py_DECREF(empty);
    return res;
fail:
    Py_DECREF(counts);
    Py_DECREF(syns);
    Py_XDECREF(sample);
    Py_DECREF(empty);
    return NULL;
}

/*
 * flow_fields(raw): the fields of a goldmane.FlowUpdate that the record stage needs per record,
 * without building protobuf objects: (key bytes, start, end, packets in/out, bytes in/out,
 * connections started/completed/live). Returns None for anything but a plain, complete message
 * (a field twice, a wire type other than the release shape's, truncation, non-ASCII labels); the
 * caller then decodes with protobuf, which accepts or refuses it. A test holds both paths equal.
 */
static int read_varint(P *p, P end, unsigned long long *out) {
    unsigned long long v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = *(*p)++;
        v |= (unsigned long long)(b & 0x7f) << shift;
        if (b < 0x80) { *out = v; return 1; }
    }
    return 0;
}

static int skip_field(P *p, P end, unsigned wire) {
    unsigned long long n;
    switch (wire) {
    case 0: return read_varint(p, end, &n);
    case 1: if (end - *p < 8) return 0; *p += 8; return 1;
    case 2: if (!read_varint(p, end, &n) || n > (unsigned long long)(end - *p)) return 0; *p += n; return 1;
    case 5: if (end - *p < 4) return 0; *p += 4; return 1;
    default: return 0;
    }
}

static PyObject *flow_fields(PyObject *self, PyObject *arg) {
    char *buf; Py_ssize_t len;
    if (PyBytes_AsStringAndSize(arg, &buf, &len) < 0) return NULL;
    P p = (P)buf, end = p + len, flow = NULL, fend = NULL, key = NULL;
    unsigned long long tag, n, key_len = 0, v[13] = {0};
    while (p < end) {  /* FlowUpdate: field 1 = Flow, once */
        if (!read_varint(&p, end, &tag)) Py_RETURN_NONE;
        if (tag == 0x0a) {
            if (flow || !read_varint(&p, end, &n) || n > (unsigned long long)(end - p)) Py_RETURN_NONE;
            flow = p; fend = p + n; p += n;
        } else if ((tag >> 3) == 1 || !skip_field(&p, end, tag & 7)) {
            Py_RETURN_NONE;
        }
    }
    if (!flow) Py_RETURN_NONE;
    p = flow;
    while (p < fend) {
        if (!read_varint(&p, fend, &tag)) Py_RETURN_NONE;
        unsigned field = (unsigned)(tag >> 3), wire = tag & 7;
        if (field == 1) {
            if (key || wire != 2 || !read_varint(&p, fend, &n) || n > (unsigned long long)(fend - p)) Py_RETURN_NONE;
            key = p; key_len = n; p += n;
        } else if (field == 4 || field == 5) {
            if (wire != 2 || !read_varint(&p, fend, &n) || n > (unsigned long long)(fend - p)) Py_RETURN_NONE;
            for (P q = p; q < p + n; q++) if (*q >= 0x80) Py_RETURN_NONE;  /* labels are ASCII */
            p += n;
        } else if (field >= 2 && field <= 12) {
            if (wire != 0 || !read_varint(&p, fend, &v[field])) Py_RETURN_NONE;
        } else if (field == 0 || !skip_field(&p, fend, wire)) {
            Py_RETURN_NONE;
        }
    }
    if (!key) Py_RETURN_NONE;
    return Py_BuildValue("(y#LLLLLLLLL)", (const char *)key, (Py_ssize_t)key_len,
                         (long long)v[2], (long long)v[3], (long long)v[6], (long long)v[7], (long long)v[8],
                         (long long)v[9], (long long)v[10], (long long)v[11], (long long)v[12]);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O, "scan(text) -> (counts, lines, ignored, malformed, sample, syns) or None"},
    {"flow_fields", flow_fields, METH_O, "flow_fields(raw FlowUpdate) -> (key, start, end, 7 counters) or None"},
    {NULL, NULL, 0, NULL},
};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan", NULL, -1, methods};
PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
