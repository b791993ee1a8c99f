/* lade_data.h - CIFAR and list-file readers, JPEG decoding, augmentation and
 * the threaded batch loader.
 *
 * The pieces, bottom up:
 *   - lade_cifar_*: parse the official CIFAR-10/100 binary records.
 *   - lade_filelist: "relative/path label" list files (ImageNet-LT, Places-LT,
 *     iNaturalist) or any (path, label) pairs under a root folder.
 *   - lade_jpeg: a TurboJPEG decoder, one per thread, giving RGB pixels
 *     (grayscale and CMYK files are converted).
 *   - lade_transform: per-sample augmentation of a uint8 image into float32
 *     CHW, drawing its randomness from a lade_rng.
 *   - lade_loader: worker threads that read, decode and augment the batches of
 *     an epoch ahead of the consumer, into a bounded ring of batch slots.
 *
 * Determinism: sample p of epoch e (position p in the epoch's index list)
 * draws from lade_rng_seed(&r, seed, e * n + p), n the epoch length, so the
 * batches depend on (seed, epoch, indices) only, never on thread timing.
 *
 * Example (one CIFAR training epoch):
 *     lade_loader_config c = {0};
 *     c.images = pixels; c.num_images = 50000; c.image_height = c.image_width = 32;
 *     c.labels = labels; lade_transform_cifar_train(&c.transform);
 *     c.batch_size = 256; c.drop_last = 1; c.num_workers = 2; c.prefetch = 4;
 *     lade_loader *l; lade_loader_create(&l, &c);
 *     lade_loader_begin_epoch(l, 0, NULL, 0);          (NULL: seeded shuffle)
 *     for (;;) { lade_batch_info b;
 *         lade_loader_next(l, images, labels, -1, &b);
 *         if (b.end_of_epoch) break; ... }
 *     lade_loader_destroy(l);
 */
#ifndef LADE_DATA_H
#define LADE_DATA_H
#include "lade_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- CIFAR binary batches ---------------------------------------------------
 * A CIFAR-10 record is 1 label byte + 3072 pixel bytes; a CIFAR-100 record is
 * 1 coarse + 1 fine label byte + 3072 pixel bytes. Pixels are the red, green
 * and blue 32x32 planes, so a record is already one CHW image. */
enum { LADE_CIFAR_PIXELS = 3 * 32 * 32 };

/* bytes per record for kind 10 or 100; 0 for any other kind */
LADE_API size_t lade_cifar_record_size(int kind);
/* Number of records in a batch of len bytes; LADE_EDECODE when len is not a
 * whole number of records (a truncated file). */
LADE_API lade_status lade_cifar_count(size_t len, int kind, size_t *count);
/* Parses n records of buf (len bytes, n = lade_cifar_count) into images
 * (n, 3, 32, 32) and labels (n,). coarse selects CIFAR-100's coarse label.
 * Labels outside [0, 10), [0, 100) or [0, 20) give LADE_EDECODE. */
LADE_API lade_status lade_cifar_parse(const uint8_t *buf, size_t len, int kind, int coarse,
                                      uint8_t *images, int64_t *labels, size_t n);
/* LADE_ERANGE naming the first label outside [0, num_classes). */
LADE_API lade_status lade_labels_check(const int64_t *labels, size_t n, int64_t num_classes);

/* ---- list files ---------------------------------------------------------- */
typedef struct lade_filelist lade_filelist;

/* root: folder the paths are relative to ("" for paths used as given);
 * source: the list file's name, used in messages (NULL when the entries do
 * not come from a list file, e.g. a class-folder tree). */
LADE_API lade_status lade_filelist_create(lade_filelist **out, const char *root, const char *source);
LADE_API void lade_filelist_destroy(lade_filelist *fl);
/* Appends the entries of a list file's text: one "path label" a line, the
 * label being the last whitespace-separated field and the path the text
 * before it (so paths may hold spaces); blank lines are skipped. A line with
 * a missing or non-integer label gives LADE_EDECODE, a label outside
 * [0, num_classes) LADE_ERANGE (num_classes <= 0: only label >= 0 is
 * required), both naming the source and the line number. */
LADE_API lade_status lade_filelist_parse(lade_filelist *fl, const char *text, size_t len,
                                         int64_t num_classes);
/* Appends one entry; line is its line number in the source (0: none). */
LADE_API lade_status lade_filelist_add(lade_filelist *fl, const char *path, int64_t label, int64_t line);
LADE_API size_t lade_filelist_size(const lade_filelist *fl);
LADE_API const char *lade_filelist_path(const lade_filelist *fl, size_t i);
LADE_API int64_t lade_filelist_label(const lade_filelist *fl, size_t i);
LADE_API int64_t lade_filelist_line(const lade_filelist *fl, size_t i);
LADE_API const char *lade_filelist_root(const lade_filelist *fl);
LADE_API const char *lade_filelist_source(const lade_filelist *fl);
/* Writes "root/path" (or path when root is empty) into buf. */
LADE_API lade_status lade_filelist_full_path(const lade_filelist *fl, size_t i, char *buf, size_t size);

/* ---- JPEG decoding -----------------------------------------------------------
 * A lade_jpeg owns one TurboJPEG handle and its buffers: use one per thread.
 * Decoding is strict: a libjpeg warning (truncated data, corrupt entropy
 * data) is an error, so a damaged file never yields silent grey pixels. */
typedef struct lade_jpeg lade_jpeg;

/* Largest accepted image, per side and in pixels (the ceiling of the settable limit). */
enum { LADE_JPEG_MAX_SIDE = 32768 };
#define LADE_JPEG_MAX_PIXELS ((size_t)1 << 28)
/* The default pixel limit of lade_jpeg_decode: 2^26 = 67 Mpx (a 200 MB RGB buffer), far above the
 * datasets' images, so a hostile or mistaken file cannot ask for gigabytes. */
#define LADE_JPEG_DEFAULT_MAX_PIXELS ((size_t)1 << 26)

/* Sets the pixel limit for all later decodes, in [1, LADE_JPEG_MAX_PIXELS] (process-wide). */
LADE_API lade_status lade_jpeg_set_max_pixels(size_t max_pixels);
LADE_API size_t lade_jpeg_max_pixels(void);

LADE_API lade_status lade_jpeg_create(lade_jpeg **out);
LADE_API void lade_jpeg_destroy(lade_jpeg *j);
/* Decodes a JPEG held in memory to RGB, (height, width, 3) row-major in a
 * buffer owned by j and valid until its next call. */
LADE_API lade_status lade_jpeg_decode(lade_jpeg *j, const uint8_t *data, size_t len,
                                      const uint8_t **rgb, int *width, int *height);
/* Reads a file into j's buffer and decodes it. Messages name the file. */
LADE_API lade_status lade_jpeg_read(lade_jpeg *j, const char *path, const uint8_t **rgb,
                                    int *width, int *height);
/* One image with a decoder of its own: the file at path (when not NULL) or the len bytes at data,
 * decoded to RGB (height, width, 3) row-major in a new buffer *rgb that the caller frees with lade_free
 * (NULL on failure). */
LADE_API lade_status lade_jpeg_decode_new(const char *path, const uint8_t *data, size_t len, uint8_t **rgb,
                                          int *width, int *height);

/* ---- augmentation -------------------------------------------------------- */
/* A uint8 RGB image of any layout: pixel (c, y, x) sits at
 * data[c*stride_c + y*stride_y + x*stride_x]. */
typedef struct {
    const uint8_t *data;
    int height, width;
    ptrdiff_t stride_c, stride_y, stride_x;
} lade_image;

typedef enum {
    LADE_TF_CIFAR_CROP,     /* zero-pad by `pad`, random crop out_h x out_w, flip */
    LADE_TF_NORMALIZE,      /* scale + normalise only (image must be out_h x out_w) */
    LADE_TF_RESIZED_CROP,   /* RandomResizedCrop + flip + colour jitter */
    LADE_TF_RESIZE_CENTER,  /* resize shorter side to `resize`, centre crop */
} lade_transform_kind;

typedef struct {
    lade_transform_kind kind;
    int out_h, out_w;
    int pad;                                  /* LADE_TF_CIFAR_CROP */
    int resize;                               /* LADE_TF_RESIZE_CENTER */
    double scale_min, scale_max;              /* LADE_TF_RESIZED_CROP: area fraction */
    double ratio_min, ratio_max;              /* LADE_TF_RESIZED_CROP: aspect w/h */
    double brightness, contrast, saturation;  /* jitter strength, 0 = off */
    int flip;                                 /* horizontal flip with p = 0.5 */
    float mean[3], std[3];                    /* applied to pixels scaled to [0, 1] */
} lade_transform;

/* Presets of spec sections 3.2 and 3.4. */
LADE_API void lade_transform_cifar_train(lade_transform *t);
LADE_API void lade_transform_cifar_test(lade_transform *t);
LADE_API void lade_transform_imagenet_train(lade_transform *t, int size);
LADE_API void lade_transform_imagenet_eval(lade_transform *t, int resize, int crop);
/* The preset of that name ("cifar_train", "cifar_test", "imagenet_train" of size, "imagenet_eval"
 * resizing to resize and cropping size), else LADE_EINVAL naming argument 'preset'. */
LADE_API lade_status lade_transform_preset(lade_transform *t, const char *name, int size, int resize);
LADE_API lade_status lade_transform_check(const lade_transform *t);

/* What one sample's randomness chose. The crop box (top, left, height,
 * width) is in source pixels; for LADE_TF_CIFAR_CROP it is in the padded
 * frame, i.e. top and left in [0, 2*pad]. For LADE_TF_RESIZE_CENTER it is
 * the window of the resized image (resized_h x resized_w) that is kept. */
typedef struct {
    int top, left, height, width;
    int resized_h, resized_w;
    int flip;
    double brightness, contrast, saturation; /* factors (1 = unchanged) */
    int jitter_order[3];                     /* 0 brightness, 1 contrast, 2 saturation */
} lade_aug_params;

/* Draws the parameters for a source of height x width, in torchvision's
 * order: crop, flip, then the jitter permutation and factors. */
LADE_API lade_status lade_transform_params(const lade_transform *t, int height, int width,
                                           lade_rng *rng, lade_aug_params *p);
/* Applies parameters to src, writing out (3, out_h, out_w) float32.
 * scratch/scratch_size: a growable work buffer (may start NULL/0), freed by
 * the caller with lade_free. */
LADE_API lade_status lade_transform_apply(const lade_transform *t, const lade_image *src,
                                          const lade_aug_params *p, float *out,
                                          void **scratch, size_t *scratch_size);
/* Augments n images laid out (n, 3, h, w) into out (n, 3, out_h, out_w):
 * image i draws from lade_rng_seed(&r, seed, stream + i). Runs on the
 * lade_parallel_for pool. */
LADE_API lade_status lade_transform_batch(const lade_transform *t, const uint8_t *images, size_t n,
                                          int height, int width, uint64_t seed, uint64_t stream,
                                          float *out);
/* One image laid out (height, width, 3) into out (3, out_h, out_w), drawing
 * from lade_rng_seed(&r, seed, stream). */
LADE_API lade_status lade_transform_image(const lade_transform *t, const uint8_t *image, int height, int width,
                                          uint64_t seed, uint64_t stream, float *out);

/* ---- the batch loader ---------------------------------------------------- */
/* (lade/app/config.py MAX_WORKERS: held to it by a test) */
#define LADE_MAX_LOADER_WORKERS 256
typedef struct lade_loader lade_loader;

typedef struct {
    /* the source: in-memory images (num_images, 3, image_height, image_width)
     * with labels, or a file list of JPEGs. Both are borrowed and must
     * outlive the loader. */
    const uint8_t *images;
    const int64_t *labels;
    size_t num_images;
    int image_height, image_width;
    const lade_filelist *files;

    lade_transform transform;
    size_t batch_size;
    int drop_last;   /* drop the partial last batch of an epoch */
    int skip_bad;    /* skip (and count) unreadable samples instead of failing */
    int num_workers; /* worker threads, in [1, LADE_MAX_LOADER_WORKERS] */
    int prefetch;    /* batches in flight, >= 1 */
    uint64_t seed;
} lade_loader_config;

typedef struct {
    int ready;        /* 0: timed out, call again */
    int end_of_epoch; /* 1: the epoch is over, nothing was written */
    size_t count;     /* samples written (< batch_size after skips or a last partial batch) */
    size_t batch;     /* index of the batch in its epoch */
} lade_batch_info;

LADE_API lade_status lade_loader_create(lade_loader **out, const lade_loader_config *cfg);
/* Stops the workers and frees everything; safe on NULL. */
LADE_API void lade_loader_destroy(lade_loader *l);
LADE_API size_t lade_loader_sample_count(const lade_loader *l);
/* Starts epoch `epoch` over indices[0..n) (positions into the source),
 * cancelling any epoch in progress. indices NULL: a shuffle of all samples
 * seeded by (seed, epoch). Indices are checked against the source size. */
LADE_API lade_status lade_loader_begin_epoch(lade_loader *l, int64_t epoch, const int64_t *indices, size_t n);
/* Stops the epoch in progress (workers finish their current sample). */
LADE_API void lade_loader_cancel(lade_loader *l);
LADE_API size_t lade_loader_num_batches(const lade_loader *l);
/* Waits up to timeout_ms (< 0: forever) for the next batch of the epoch and
 * copies it to images (batch_size, 3, out_h, out_w) and labels (batch_size,).
 * A sample that failed (without skip_bad) makes this return its status and
 * message; the batch is consumed and the epoch goes on. */
LADE_API lade_status lade_loader_next(lade_loader *l, float *images, int64_t *labels, int timeout_ms,
                                      lade_batch_info *info);
/* Samples skipped (skip_bad) in the batches handed out so far, and the
 * message of the last one. */
LADE_API size_t lade_loader_skipped(const lade_loader *l, char *last_message, size_t size);

#ifdef __cplusplus
}
#endif
#endif
