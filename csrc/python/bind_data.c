/* bind_data.c - Python bindings for lade_data.h: CIFAR, JPEG, file lists,
 * transforms and the loader (used by lade/data.py). Transform, FileList and
 * Loader are Python types that own their C objects. */
#include "bind.h"

#include <stddef.h>
#include <string.h>
#include <structmember.h>

#define U8T NPY_UINT8

/* ---- CIFAR ---------------------------------------------------------------- */
/* load_cifar_binary(batches, kind, coarse) -> (images, labels): batches is a list
 * of (name, nbytes, read) with read() giving the bytes, parsed one at a time into
 * one pair of arrays. */
static PyObject *py_load_cifar_binary(PyObject *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {OBJ("batches", &PyList_Type), REQ("kind", 'i'), REQ("coarse", 'p'), END};
    lade_call c;
    PyObject *images = NULL, *labels = NULL;
    if (lade_parse(&c, "lade.data.load_cifar", spec, args, kw)) return lade_call_end(&c, NULL);
    PyObject *batches = lade_obj(&c, "batches");
    Py_ssize_t nb = PyList_GET_SIZE(batches);
    size_t total = 0, counts[64];
    const char *name;
    Py_ssize_t size;
    PyObject *read;
    int kind = (int)lade_int(&c, "kind");
    for (Py_ssize_t i = 0; i < nb; i++) {
        if (i == 64 || !PyArg_ParseTuple(PyList_GET_ITEM(batches, i), "snO", &name, &size, &read)) goto fail;
        snprintf(c.func_buf, sizeof c.func_buf, "lade.data.load_cifar: '%s'", name);
        lade_status st = lade_cifar_count((size_t)(size < 0 ? 0 : size), kind, &counts[i]);
        if (st) {
            lade_py_raise(st, c.func_buf);
            goto fail;
        }
        total += counts[i];
    }
    npy_intp idims[4] = {(npy_intp)total, 3, 32, 32}, ldims[1] = {(npy_intp)total};
    if (!(images = PyArray_EMPTY(4, idims, NPY_UINT8, 0)) || !(labels = PyArray_EMPTY(1, ldims, NPY_INT64, 0)))
        goto fail;
    for (Py_ssize_t i = 0, start = 0; i < nb; start += (Py_ssize_t)counts[i++]) {
        PyArg_ParseTuple(PyList_GET_ITEM(batches, i), "snO", &name, &size, &read);
        snprintf(c.func_buf, sizeof c.func_buf, "lade.data.load_cifar: '%s'", name);
        PyObject *data = PyObject_CallNoArgs(read);
        Py_buffer buf;
        if (!data || PyObject_GetBuffer(data, &buf, PyBUF_SIMPLE)) {
            Py_XDECREF(data);
            goto fail;
        }
        lade_status st;
        uint8_t *img = (uint8_t *)PyArray_DATA((PyArrayObject *)images) + (size_t)start * 3 * 32 * 32;
        int64_t *lab = (int64_t *)PyArray_DATA((PyArrayObject *)labels) + start;
        LADE_NOGIL_BEGIN
        st = lade_cifar_parse(buf.buf, (size_t)buf.len, kind, (int)lade_int(&c, "coarse"), img, lab, counts[i]);
        LADE_NOGIL_END
        PyBuffer_Release(&buf);
        Py_DECREF(data);
        if (st) {
            lade_py_raise(st, c.func_buf);
            goto fail;
        }
    }
    return lade_call_end(&c, Py_BuildValue("NN", images, labels));
fail:
    Py_XDECREF(images);
    Py_XDECREF(labels);
    return lade_call_end(&c, NULL);
}

/* check_labels(labels, num_classes, source): the labels of a pickled CIFAR batch */
static PyObject *py_check_labels(PyObject *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {IN("labels", I64T, "n"), REQ("num_classes", 'i'), REQ("source", 's'), END};
    lade_call c;
    PyObject *result = NULL;
    if (!lade_parse(&c, "lade.data.load_cifar", spec, args, kw)) {
        snprintf(c.func_buf, sizeof c.func_buf, "lade.data.load_cifar: '%s'", lade_str(&c, "source"));
        lade_status st = lade_labels_check(I64(&c, "labels"), (size_t)DIM(&c, 'n'), lade_int(&c, "num_classes"));
        result = st ? lade_py_raise(st, c.func_buf) : Py_NewRef(Py_None);
    }
    return lade_call_end(&c, result);
}

/* ---- file lists -------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    lade_filelist *list;
} FileListObject;

/* FileList(root, text=None, source=None, num_classes=0, paths=None, labels=None):
 * a list file's text, or paths with their labels (a folder tree). */
static int filelist_init(FileListObject *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {
        REQ("root", 's'), OBJ_OPT("text", NULL), OPT("source", 's', 0), OPT("num_classes", 'i', 0),
        OBJ_OPT("paths", &PyList_Type), IN_OPT("labels", I64T, "n"), END,
    };
    lade_call c;
    int from_paths = kw && PyDict_GetItemString(kw, "paths");
    if (lade_parse(&c, from_paths ? "lade.data.ImageFolder" : "lade.data.ListFile", spec, args, kw))
        return lade_call_end(&c, NULL), -1;
    lade_filelist_destroy(self->list);
    self->list = NULL;
    lade_status st = lade_filelist_create(&self->list, lade_str(&c, "root"), lade_str(&c, "source"));
    PyObject *paths = lade_obj(&c, "paths"), *text = lade_obj(&c, "text");
    if (!st && paths) {
        Py_ssize_t n = PyList_GET_SIZE(paths);
        const int64_t *labels = I64(&c, "labels");
        if (!labels || DIM(&c, 'n') != n) {
            lade_py_value_error(c.func, "labels", "must have one entry per path (%zd)", n);
            return lade_call_end(&c, NULL), -1;
        }
        for (Py_ssize_t i = 0; !st && i < n; i++) {
            const char *path = PyUnicode_AsUTF8(PyList_GET_ITEM(paths, i));
            if (!path) return lade_call_end(&c, NULL), -1;
            st = lade_filelist_add(self->list, path, labels[i], 0);
        }
    } else if (!st) {
        Py_buffer buf;
        if (!text || PyObject_GetBuffer(text, &buf, PyBUF_SIMPLE)) {
            if (!text) PyErr_Format(PyExc_TypeError, "%s: argument 'text' (bytes) is required", c.func);
            return lade_call_end(&c, NULL), -1;
        }
        LADE_NOGIL_BEGIN
        st = lade_filelist_parse(self->list, buf.buf, (size_t)buf.len, lade_int(&c, "num_classes"));
        LADE_NOGIL_END
        PyBuffer_Release(&buf);
    }
    if (st) lade_py_raise(st, c.func);
    return lade_call_end(&c, NULL), st ? -1 : 0;
}

static void filelist_dealloc(FileListObject *self) {
    lade_filelist_destroy(self->list);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t filelist_len(FileListObject *self) {
    return self->list ? (Py_ssize_t)lade_filelist_size(self->list) : 0;
}

/* entry(i) -> (path, label, line) */
static PyObject *filelist_entry(FileListObject *self, PyObject *arg) {
    Py_ssize_t i = PyNumber_AsSsize_t(arg, PyExc_IndexError), n = filelist_len(self);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (i < 0 || i >= n) return PyErr_Format(PyExc_IndexError, "lade.data.FileList: index %zd is outside [0, %zd)", i,
                                             n);
    return Py_BuildValue("(sLL)", lade_filelist_path(self->list, (size_t)i),
                         (long long)lade_filelist_label(self->list, (size_t)i),
                         (long long)lade_filelist_line(self->list, (size_t)i));
}

static PyObject *filelist_labels(FileListObject *self, void *unused) {
    npy_intp n = filelist_len(self);
    PyObject *a = PyArray_EMPTY(1, &n, NPY_INT64, 0);
    for (npy_intp i = 0; a && i < n; i++)
        ((int64_t *)PyArray_DATA((PyArrayObject *)a))[i] = lade_filelist_label(self->list, (size_t)i);
    return a;
}

static PyMethodDef filelist_methods[] = {
    {"entry", (PyCFunction)filelist_entry, METH_O, "entry(i) -> (path relative to root, label, line)"},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef filelist_getset[] = {
    {"labels", (getter)filelist_labels, NULL, "int64 (N,), a fresh array", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PySequenceMethods filelist_sequence = {.sq_length = (lenfunc)filelist_len};
static PyTypeObject FileListType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lade._C.FileList",
    .tp_basicsize = sizeof(FileListObject),
    .tp_dealloc = (destructor)filelist_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "FileList(root, text=None, source=None, num_classes=0, paths=None, labels=None): (path, label) entries",
    .tp_methods = filelist_methods,
    .tp_getset = filelist_getset,
    .tp_as_sequence = &filelist_sequence,
    .tp_init = (initproc)filelist_init,
    .tp_new = PyType_GenericNew,
};

/* ---- JPEG -------------------------------------------------------------------- */

/* decode_jpeg(data: bytes-like) or read_jpeg(path: str) -> uint8 (H, W, 3) */
static PyObject *jpeg(PyObject *args, PyObject *kw, int from_file) {
    static const lade_arg path_spec[] = {OBJ("path", &PyUnicode_Type), END}, data_spec[] = {OBJ("data", NULL), END};
    lade_call c;
    Py_buffer data = {0};
    PyObject *path = NULL, *out = NULL;
    if (lade_parse(&c, from_file ? "lade.data.read_jpeg" : "lade.data.decode_jpeg", from_file ? path_spec : data_spec,
                   args, kw))
        return lade_call_end(&c, NULL);
    if (from_file ? !(path = PyUnicode_EncodeFSDefault(c.value[0].o))
                  : PyObject_GetBuffer(c.value[0].o, &data, PyBUF_SIMPLE) < 0) {
        if (!from_file) PyErr_Format(PyExc_TypeError, "%s: argument 'data' must be bytes-like, got %s", c.func,
                                     Py_TYPE(c.value[0].o)->tp_name);
        return lade_call_end(&c, NULL);
    }
    lade_jpeg *j = NULL;
    lade_status st = lade_jpeg_create(&j);
    const uint8_t *rgb = NULL;
    int w = 0, h = 0;
    if (!st) {
        LADE_NOGIL_BEGIN
        st = from_file ? lade_jpeg_read(j, PyBytes_AS_STRING(path), &rgb, &w, &h)
                       : lade_jpeg_decode(j, data.buf, (size_t)data.len, &rgb, &w, &h);
        LADE_NOGIL_END
    }
    if (from_file) Py_DECREF(path);
    else PyBuffer_Release(&data);
    npy_intp dims[3] = {h, w, 3};
    if (st) lade_py_raise(st, c.func);
    else if ((out = PyArray_SimpleNew(3, dims, NPY_UINT8)))
        memcpy(PyArray_DATA((PyArrayObject *)out), rgb, (size_t)w * h * 3);
    lade_jpeg_destroy(j);
    return lade_call_end(&c, out);
}
static PyObject *py_decode_jpeg(PyObject *self, PyObject *args, PyObject *kw) { return jpeg(args, kw, 0); }
static PyObject *py_read_jpeg(PyObject *self, PyObject *args, PyObject *kw) { return jpeg(args, kw, 1); }

/* jpeg_max_pixels(n=None) -> the limit in force, after setting it to n when given */
static lade_status jpeg_max_pixels(lade_call *c) {
    lade_status st = lade_given(c, "n") ? lade_jpeg_set_max_pixels((size_t)lade_int(c, "n")) : LADE_OK;
    c->ret[0] = (double)lade_jpeg_max_pixels();
    return st;
}

/* ---- transforms ------------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    lade_transform t;
} TransformObject;

/* scale and ratio: 2 numbers (lo, hi); mean and std: 3 (r, g, b) */
static int read_numbers(const lade_call *c, const char *arg, int n, double *v) {
    PyObject *o = lade_obj(c, arg);
    if (o && !PyArg_ParseTuple(o, n == 2 ? "dd" : "ddd", &v[0], &v[1], &v[2])) {
        PyErr_Clear();
        return lade_py_value_error(c->func, arg, "must be %d numbers, got %R", n, o), -1;
    }
    return 0;
}

/* Transform(preset, size=0, resize=0, pad=None, flip=None, scale=None, ratio=None, brightness=None,
 *           contrast=None, saturation=None, mean=None, std=None): a preset with the fields given changed */
static int transform_init(TransformObject *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {
        REQ("preset", 's'), OPT("size", 'i', 0), OPT("resize", 'i', 0), OPT("pad", 'i', 0), OPT("flip", 'p', 0),
        OBJ_OPT("scale", NULL), OBJ_OPT("ratio", NULL), OPT("brightness", 'f', 0), OPT("contrast", 'f', 0),
        OPT("saturation", 'f', 0), OBJ_OPT("mean", NULL), OBJ_OPT("std", NULL), END,
    };
    char func[128]; /* the class called: lade.data.CifarTrain, ... */
    snprintf(func, sizeof func, "lade.data.%s", _PyType_Name(Py_TYPE(self)));
    lade_call c;
    if (lade_parse(&c, func, spec, args, kw)) return lade_call_end(&c, NULL), -1;
    lade_transform *t = &self->t;
    const char *preset = lade_str(&c, "preset");
    int size = (int)lade_int(&c, "size"), ok = 1;
    if (!strcmp(preset, "cifar_train")) lade_transform_cifar_train(t);
    else if (!strcmp(preset, "cifar_test")) lade_transform_cifar_test(t);
    else if (!strcmp(preset, "imagenet_train")) lade_transform_imagenet_train(t, size);
    else if (!strcmp(preset, "imagenet_eval")) lade_transform_imagenet_eval(t, (int)lade_int(&c, "resize"), size);
    else ok = !lade_py_value_error(c.func, "preset", "must name a preset, got '%s'", preset);
    if (lade_given(&c, "pad")) t->pad = (int)lade_int(&c, "pad");
    if (lade_given(&c, "flip")) t->flip = (int)lade_int(&c, "flip");
    if (lade_given(&c, "brightness")) t->brightness = lade_num(&c, "brightness");
    if (lade_given(&c, "contrast")) t->contrast = lade_num(&c, "contrast");
    if (lade_given(&c, "saturation")) t->saturation = lade_num(&c, "saturation");
    double scale[3] = {t->scale_min, t->scale_max}, ratio[3] = {t->ratio_min, t->ratio_max};
    double mean[3] = {t->mean[0], t->mean[1], t->mean[2]}, std[3] = {t->std[0], t->std[1], t->std[2]};
    if (!ok || read_numbers(&c, "scale", 2, scale) || read_numbers(&c, "ratio", 2, ratio) ||
        read_numbers(&c, "mean", 3, mean) || read_numbers(&c, "std", 3, std))
        return lade_call_end(&c, NULL), -1;
    t->scale_min = scale[0], t->scale_max = scale[1], t->ratio_min = ratio[0], t->ratio_max = ratio[1];
    for (int i = 0; i < 3; i++) t->mean[i] = (float)mean[i], t->std[i] = (float)std[i];
    lade_status st = lade_transform_check(t);
    if (st) lade_py_raise(st, c.func);
    return lade_call_end(&c, NULL), st ? -1 : 0;
}

static PyObject *triple(const float v[3]) { return Py_BuildValue("(fff)", v[0], v[1], v[2]); }
static PyObject *transform_mean(TransformObject *self, void *unused) { return triple(self->t.mean); }
static PyObject *transform_std(TransformObject *self, void *unused) { return triple(self->t.std); }
static PyObject *transform_output_shape(TransformObject *self, void *unused) {
    return Py_BuildValue("(iii)", 3, self->t.out_h, self->t.out_w);
}

/* params(height, width, seed=0, stream=0) -> dict of the random choices */
static PyObject *transform_params(TransformObject *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {REQ("height", 'i'), REQ("width", 'i'), OPT("seed", 'K', 0), OPT("stream", 'K', 0),
                                    END};
    lade_call c;
    if (lade_parse(&c, "lade.data.Transform.params", spec, args, kw))
        return lade_call_end(&c, NULL);
    lade_rng rng;
    lade_rng_seed(&rng, lade_u64(&c, "seed"), lade_u64(&c, "stream"));
    lade_aug_params p;
    lade_status st = lade_transform_params(&self->t, (int)lade_int(&c, "height"), (int)lade_int(&c, "width"), &rng, &p);
    if (st) return lade_call_end(&c, lade_py_raise(st, c.func));
    return lade_call_end(&c, Py_BuildValue("{s:(iiii),s:(ii),s:O,s:d,s:d,s:d,s:(iii)}", "box", p.top, p.left,
                                           p.height, p.width, "resized", p.resized_h, p.resized_w, "flip",
                                           p.flip ? Py_True : Py_False, "brightness", p.brightness, "contrast",
                                           p.contrast, "saturation", p.saturation, "jitter_order", p.jitter_order[0],
                                           p.jitter_order[1], p.jitter_order[2]));
}

#define FIELD(name, type) {#name, type, offsetof(TransformObject, t.name), READONLY, NULL}
static PyMemberDef transform_members[] = {
    FIELD(kind, T_INT), FIELD(out_h, T_INT), FIELD(out_w, T_INT), FIELD(pad, T_INT), FIELD(resize, T_INT),
    FIELD(scale_min, T_DOUBLE), FIELD(scale_max, T_DOUBLE), FIELD(ratio_min, T_DOUBLE), FIELD(ratio_max, T_DOUBLE),
    FIELD(brightness, T_DOUBLE), FIELD(contrast, T_DOUBLE), FIELD(saturation, T_DOUBLE), FIELD(flip, T_INT),
    {NULL, 0, 0, 0, NULL},
};
static PyGetSetDef transform_getset[] = {
    {"mean", (getter)transform_mean, NULL, "per-channel mean (r, g, b)", NULL},
    {"std", (getter)transform_std, NULL, "per-channel std (r, g, b)", NULL},
    {"output_shape", (getter)transform_output_shape, NULL, "(3, out_h, out_w)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyMethodDef transform_methods[] = {
    {"params", (PyCFunction)(void (*)(void))transform_params, METH_VARARGS | METH_KEYWORDS,
     "params(height, width, seed=0, stream=0) -> the random choices for a height x width image"},
    {NULL, NULL, 0, NULL},
};
static PyTypeObject TransformType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lade.data.Transform",
    .tp_basicsize = sizeof(TransformObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "Transform(preset, ...): per-sample augmentation to normalised float32 (3, out_h, out_w)",
    .tp_members = transform_members,
    .tp_getset = transform_getset,
    .tp_methods = transform_methods,
    .tp_init = (initproc)transform_init,
    .tp_new = PyType_GenericNew,
};
static const lade_transform *transform_of(const lade_call *c) {
    return &((TransformObject *)lade_obj(c, "transform"))->t;
}

/* the output size of the call's transform */
static int bind_transform_size(lade_call *c) {
    LADE_BIND(c, 'p', transform_of(c)->out_h);
    LADE_BIND(c, 'q', transform_of(c)->out_w);
    return 0;
}

static const lade_arg augment_args[] = {
    IN("images", U8T, "n3hw"), OBJ("transform", &TransformType), OUT("out", F32T, "n3pq"), OPT("seed", 'K', 0),
    OPT("stream", 'K', 0), END,
};
static lade_status augment(lade_call *c) {
    return lade_transform_batch(transform_of(c), lade_data(c, "images"), (size_t)DIM(c, 'n'), DIM(c, 'h'), DIM(c, 'w'),
                                lade_u64(c, "seed"), lade_u64(c, "stream"), F32(c, "out"));
}

static const lade_arg augment_image_args[] = {
    IN("image", U8T, "hw3"), OBJ("transform", &TransformType), OUT("out", F32T, "3pq"), OPT("seed", 'K', 0),
    OPT("stream", 'K', 0), END,
};
static lade_status augment_image(lade_call *c) {
    int h = DIM(c, 'h'), w = DIM(c, 'w');
    lade_image img = {lade_data(c, "image"), h, w, 1, (ptrdiff_t)w * 3, 3};
    lade_rng rng;
    lade_rng_seed(&rng, lade_u64(c, "seed"), lade_u64(c, "stream"));
    lade_aug_params p;
    void *scratch = NULL;
    size_t scratch_size = 0;
    lade_status st = lade_transform_params(transform_of(c), h, w, &rng, &p);
    if (!st) st = lade_transform_apply(transform_of(c), &img, &p, F32(c, "out"), &scratch, &scratch_size);
    lade_free(scratch);
    return st;
}

/* ---- the loader ---------------------------------------------------------------- */
typedef struct {
    LADE_OBJECT_HEAD     /* core: the lade_loader */
    PyObject *source[3]; /* images, labels, files: the loader reads them until it is closed */
    size_t batch_size;
    int out_h, out_w;
    size_t skipped;      /* kept at close, with the last reason */
    char skip_reason[600];
} LoaderObject;
#define LOADER(obj) ((lade_loader *)(obj)->core)
static PyTypeObject LoaderType;

static int loader_init(LoaderObject *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {
        OBJ("transform", &TransformType), REQ("batch_size", 'n'), IN_OPT("images", U8T, "N3HW"),
        IN_OPT("labels", I64T, "N"), OBJ_OPT("files", &FileListType), OPT("drop_last", 'p', 1),
        OPT("skip_bad", 'p', 0), REQ("num_workers", 'i'), REQ("prefetch", 'i'), OPT("seed", 'K', 0), END,
    };
    lade_call c;
    if (lade_parse(&c, "lade.data.Loader", spec, args, kw)) return lade_call_end(&c, NULL), -1;
    PyObject *files = lade_obj(&c, "files");
    if (!files && !(lade_array(&c, "images") && lade_array(&c, "labels"))) {
        PyErr_Format(PyExc_TypeError, "%s: give images and labels, or files", c.func);
        return lade_call_end(&c, NULL), -1;
    }
    lade_loader_config cfg = {.transform = *transform_of(&c), .batch_size = (size_t)lade_int(&c, "batch_size"),
                              .drop_last = (int)lade_int(&c, "drop_last"), .skip_bad = (int)lade_int(&c, "skip_bad"),
                              .num_workers = (int)lade_int(&c, "num_workers"), .prefetch = (int)lade_int(&c, "prefetch"),
                              .seed = lade_u64(&c, "seed")};
    lade_status st = self->core ? lade_fail(LADE_ESTATE, "already initialised") : LADE_OK;
    if (files) {
        cfg.files = ((FileListObject *)files)->list;
    } else if (!st) {
        cfg.images = lade_data(&c, "images"), cfg.labels = I64(&c, "labels");
        cfg.num_images = (size_t)DIM(&c, 'N'), cfg.image_height = DIM(&c, 'H'), cfg.image_width = DIM(&c, 'W');
        st = lade_labels_check(cfg.labels, cfg.num_images, INT64_MAX); /* no negative label */
    }
    lade_loader *loader = NULL;
    if (!st) {
        LADE_NOGIL_BEGIN
        st = lade_loader_create(&loader, &cfg);
        LADE_NOGIL_END
    }
    if (st) return lade_py_raise(st, c.func), lade_call_end(&c, NULL), -1;
    self->core = loader;
    self->source[0] = Py_XNewRef((PyObject *)lade_array(&c, "images"));
    self->source[1] = Py_XNewRef((PyObject *)lade_array(&c, "labels"));
    self->source[2] = Py_XNewRef(files);
    self->batch_size = cfg.batch_size, self->out_h = cfg.transform.out_h, self->out_w = cfg.transform.out_w;
    return lade_call_end(&c, NULL), 0;
}

/* Stops and joins the workers (they never take the GIL), then lets go of the sources. */
static void loader_release(LoaderObject *self) {
    lade_loader *l = LOADER(self);
    if (l) self->skipped = lade_loader_skipped(l, self->skip_reason, sizeof self->skip_reason);
    self->core = NULL;
    LADE_NOGIL_BEGIN
    lade_loader_destroy(l);
    LADE_NOGIL_END
    for (int i = 0; i < 3; i++) Py_CLEAR(self->source[i]);
}

static void loader_dealloc(LoaderObject *self) {
    loader_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* begin(epoch, indices=None) -> number of batches */
static lade_status loader_begin(lade_call *c) {
    const int64_t *indices = I64(c, "indices");
    lade_status st = lade_loader_begin_epoch(LOADER(c->self), (int64_t)lade_u64(c, "epoch"), indices,
                                             indices ? (size_t)DIM(c, 'n') : 0);
    c->ret[0] = (double)lade_loader_num_batches(LOADER(c->self));
    return st;
}

/* next(images=None, labels=None) -> (images, labels) cut to the batch's size, or None at the end of
 * the epoch. The outputs must hold a whole batch. Waits in short slices so that Ctrl-C
 * (KeyboardInterrupt) gets through. */
static PyObject *loader_next(LoaderObject *self, PyObject *args, PyObject *kw) {
    static const lade_arg spec[] = {OUT("images", F32T, "b3hw"), OUT("labels", I64T, "b"), END};
    lade_call c;
    if (lade_parse(&c, "lade.data.Loader", spec, args, kw)) return lade_call_end(&c, NULL);
    LADE_BIND(&c, 'b', (npy_intp)self->batch_size);
    LADE_BIND(&c, 'h', self->out_h);
    LADE_BIND(&c, 'w', self->out_w);
    if (lade_outputs(&c) || lade_object_ready((lade_object *)self, c.func)) return lade_call_end(&c, NULL);
    lade_batch_info info;
    lade_status st;
    self->busy = 1;
    for (;;) {
        LADE_NOGIL_BEGIN
        st = lade_loader_next(LOADER(self), F32(&c, "images"), I64(&c, "labels"), 100, &info);
        LADE_NOGIL_END
        if (st || info.ready || PyErr_CheckSignals()) break;
    }
    self->busy = 0;
    if (PyErr_Occurred()) return lade_call_end(&c, NULL);
    if (st) return lade_call_end(&c, lade_py_raise(st, c.func));
    if (info.end_of_epoch) return lade_call_end(&c, Py_NewRef(Py_None));
    PyObject *count = PyLong_FromSize_t(info.count), *slice = count ? PySlice_New(NULL, count, NULL) : NULL;
    PyObject *result = slice ? Py_BuildValue("NN", PyObject_GetItem((PyObject *)lade_array(&c, "images"), slice),
                                             PyObject_GetItem((PyObject *)lade_array(&c, "labels"), slice)) : NULL;
    Py_XDECREF(count);
    Py_XDECREF(slice);
    return lade_call_end(&c, result);
}

static PyObject *loader_skipped(LoaderObject *self, void *unused) {
    if (self->core) self->skipped = lade_loader_skipped(LOADER(self), self->skip_reason, sizeof self->skip_reason);
    return Py_BuildValue("(ns)", (Py_ssize_t)self->skipped, self->skip_reason);
}

static PyObject *loader_close(LoaderObject *self, PyObject *unused) {
    if (self->busy) return lade_object_ready((lade_object *)self, "lade.data.Loader.close"), NULL;
    loader_release(self);
    Py_RETURN_NONE;
}

static PyObject *loader_sample_count(LoaderObject *self, void *unused) {
    return PyLong_FromSize_t(self->core ? lade_loader_sample_count(LOADER(self)) : 0);
}

static const lade_binding loader_bindings[] = {
    {"begin", "lade.data.Loader", ARGS(SELF(&LoaderType), REQ("epoch", 'K'), IN_OPT("indices", I64T, "n")),
     NULL, loader_begin, "i", "-> batches: start an epoch"},
    {NULL},
};
static PyMethodDef loader_methods[] = {
    {"next", (PyCFunction)(void (*)(void))loader_next, METH_VARARGS | METH_KEYWORDS,
     "next(images=None, labels=None) -> (images, labels), or None at the end of the epoch"},
    {"close", (PyCFunction)loader_close, METH_NOARGS, "stop and join the workers; idempotent"},
    {NULL, NULL, 0, NULL},
};
static PyGetSetDef loader_getset[] = {
    {"skipped", (getter)loader_skipped, NULL, "(samples skipped, the last reason)", NULL},
    {"sample_count", (getter)loader_sample_count, NULL, "samples in the source", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static PyTypeObject LoaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "lade._C.Loader",
    .tp_basicsize = sizeof(LoaderObject),
    .tp_dealloc = (destructor)loader_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Loader(transform, batch_size, images=None, labels=None, files=None, drop_last=True, skip_bad=False,"
              " num_workers, prefetch, seed=0): the C batch loader",
    .tp_methods = loader_methods,
    .tp_getset = loader_getset,
    .tp_init = (initproc)loader_init,
    .tp_new = PyType_GenericNew,
};

static const lade_binding bindings[] = {
    {"jpeg_max_pixels", "lade.data.set_jpeg_max_pixels", ARGS(OPT("n", 'n', 0)), NULL, jpeg_max_pixels, "i"},
    {"augment", "lade.data.augment", augment_args, bind_transform_size, augment, NULL,
     "augment(images, transform, out=None, seed=0, stream=0) -> out"},
    {"augment_image", "lade.data.augment_image", augment_image_args, bind_transform_size, augment_image, NULL,
     "augment_image(image, transform, out=None, seed=0, stream=0) -> out"},
    {NULL},
};

#define KW(name, fn, doc) {name, (PyCFunction)(void (*)(void))fn, METH_VARARGS | METH_KEYWORDS, doc}
static PyMethodDef methods[] = {
    KW("load_cifar_binary", py_load_cifar_binary, "load_cifar_binary(batches, kind, coarse) -> (images, labels)"),
    KW("check_labels", py_check_labels, "check_labels(labels, num_classes, source)"),
    KW("decode_jpeg", py_decode_jpeg, "decode_jpeg(data) -> uint8 (H, W, 3)"),
    KW("read_jpeg", py_read_jpeg, "read_jpeg(path) -> uint8 (H, W, 3)"),
    {NULL, NULL, 0, NULL},
};

int lade_register_data(PyObject *module) {
    PyTypeObject *types[] = {&FileListType, &TransformType, &LoaderType};
    const char *names[] = {"FileList", "Transform", "Loader"};
    for (int i = 0; i < 3; i++)
        if (PyType_Ready(types[i]) < 0 || PyModule_AddObjectRef(module, names[i], (PyObject *)types[i]) < 0) return -1;
    if (lade_add_methods(&LoaderType, loader_bindings) < 0) return -1;
    return PyModule_AddFunctions(module, methods) < 0 ? -1 : lade_add_bindings(module, bindings);
}
