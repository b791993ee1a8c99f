/* jpeg.c - JPEG decoding through libjpeg-turbo's TurboJPEG API (2.x calls).
 *
 * One lade_jpeg per thread: it owns a TurboJPEG handle, the file buffer and
 * the pixel buffers, which grow and are reused. Decoding is strict
 * (TJFLAG_STOPONWARNING): truncated or corrupt data is an error rather than
 * an image padded with grey. TJFLAG_LIMITSCANS stops progressive files with
 * absurd scan counts. Grayscale files are expanded to RGB by libjpeg; CMYK and
 * YCCK files are decoded to CMYK and converted as Pillow converts them
 * (Adobe files store inverted CMYK). */
#include "lade_data.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

struct lade_jpeg {
    tjhandle handle;
    uint8_t *file;
    size_t file_cap;
    uint8_t *rgb;
    size_t rgb_cap;
    uint8_t *cmyk;
    size_t cmyk_cap;
};

lade_status lade_jpeg_create(lade_jpeg **out) {
    *out = NULL;
    lade_jpeg *j = calloc(1, sizeof *j);
    if (!j) return lade_fail(LADE_ENOMEM, "JPEG decoder");
    j->handle = tjInitDecompress();
    if (!j->handle) {
        free(j);
        return lade_fail(LADE_ENOMEM, "TurboJPEG decompressor could not be created: %s", tjGetErrorStr2(NULL));
    }
    *out = j;
    return LADE_OK;
}

void lade_jpeg_destroy(lade_jpeg *j) {
    if (!j) return;
    tjDestroy(j->handle);
    free(j->file);
    free(j->rgb);
    free(j->cmyk);
    free(j);
}

static lade_status grow(uint8_t **buf, size_t *cap, size_t need) {
    if (*cap >= need) return LADE_OK;
    size_t size = need + need / 4;
    uint8_t *p = realloc(*buf, size);
    if (!p) return lade_fail(LADE_ENOMEM, "buffer of %zu bytes", size);
    *buf = p, *cap = size;
    return LADE_OK;
}

/* What a file that is not a JPEG looks like, for the message. */
static lade_status not_jpeg(const uint8_t *d, size_t len) {
    static const uint8_t png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && !memcmp(d, png, 8)) return lade_fail(LADE_EDECODE, "not a JPEG: the data is a PNG image");
    if (len >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6)))
        return lade_fail(LADE_EDECODE, "not a JPEG: the data is a GIF image");
    if (len >= 2 && d[0] == 'B' && d[1] == 'M') return lade_fail(LADE_EDECODE, "not a JPEG: the data is a BMP image");
    if (len >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4))
        return lade_fail(LADE_EDECODE, "not a JPEG: the data is a WebP image");
    if (len >= 1 && len < 2) return lade_fail(LADE_EDECODE, "not a JPEG: only 1 byte");
    return lade_fail(LADE_EDECODE, "not a JPEG: starts with bytes %02x %02x, not the JPEG marker ff d8", d[0], d[1]);
}

/* Whether the markers before the first scan include an Adobe APP14 segment,
 * whose CMYK samples are stored inverted. */
static int has_adobe_marker(const uint8_t *d, size_t len) {
    size_t pos = 2;
    while (pos + 4 <= len) {
        if (d[pos] != 0xFF) return 0;
        uint8_t marker = d[pos + 1];
        if (marker == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (marker == 0xDA || marker == 0xD9) return 0; /* start of scan, end of image */
        size_t seg = ((size_t)d[pos + 2] << 8) | d[pos + 3];
        if (seg < 2) return 0;
        if (marker == 0xEE && seg >= 7 && pos + 9 <= len && !memcmp(d + pos + 4, "Adobe", 5)) return 1;
        pos += 2 + seg;
    }
    return 0;
}

static lade_status tj_error(lade_jpeg *j, const char *what) {
    int warning = tjGetErrorCode(j->handle) == TJERR_WARNING;
    return lade_fail(LADE_EDECODE, "corrupt or truncated JPEG (%s%s: %s)", what, warning ? ", libjpeg warning" : "",
                     tjGetErrorStr2(j->handle));
}

static _Atomic size_t max_pixels = LADE_JPEG_DEFAULT_MAX_PIXELS;

lade_status lade_jpeg_set_max_pixels(size_t n) {
    if (n < 1 || n > LADE_JPEG_MAX_PIXELS)
        return lade_fail(LADE_EINVAL, "jpeg_set_max_pixels: argument 'max_pixels' must be in [1, %zu], got %zu",
                         LADE_JPEG_MAX_PIXELS, n);
    atomic_store(&max_pixels, n);
    return LADE_OK;
}

size_t lade_jpeg_max_pixels(void) { return atomic_load(&max_pixels); }

lade_status lade_jpeg_decode(lade_jpeg *j, const uint8_t *data, size_t len, const uint8_t **rgb, int *width,
                             int *height) {
    if (len == 0) return lade_fail(LADE_EDECODE, "empty file (0 bytes)");
    if (len < 2 || data[0] != 0xFF || data[1] != 0xD8) return not_jpeg(data, len);
    if (len > (unsigned long)-1 >> 1) return lade_fail(LADE_EDECODE, "JPEG of %zu bytes is too large", len);
    int w = 0, h = 0, subsamp = -1, colorspace = -1;
    if (tjDecompressHeader3(j->handle, data, (unsigned long)len, &w, &h, &subsamp, &colorspace))
        return tj_error(j, "header");
    /* TurboJPEG 2.1 reports success, leaving the outputs alone, when the data
     * ends inside the header */
    if (w == 0 || h == 0 || colorspace < 0)
        return lade_fail(LADE_EDECODE, "truncated JPEG: the data (%zu bytes) ends inside the header", len);
    size_t limit = atomic_load_explicit(&max_pixels, memory_order_relaxed);
    if (w < 1 || h < 1 || w > LADE_JPEG_MAX_SIDE || h > LADE_JPEG_MAX_SIDE || (size_t)w * (size_t)h > limit)
        return lade_fail(LADE_EDECODE, "JPEG of %d x %d pixels is outside the accepted size (%d per side, %zu pixels; "
                         "the pixel limit is set by lade.data.set_jpeg_max_pixels)", w, h, LADE_JPEG_MAX_SIDE, limit);
    size_t pixels = (size_t)w * (size_t)h;
    lade_status st = grow(&j->rgb, &j->rgb_cap, pixels * 3);
    if (st) return st;
    const int flags = TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS | TJFLAG_ACCURATEDCT;
    if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
        if ((st = grow(&j->cmyk, &j->cmyk_cap, pixels * 4))) return st;
        if (tjDecompress2(j->handle, data, (unsigned long)len, j->cmyk, w, w * 4, h, TJPF_CMYK, flags))
            return tj_error(j, "CMYK scan data");
        /* Pillow: un-invert Adobe samples, then R = (255 - C)(255 - K) / 255 */
        int invert = has_adobe_marker(data, len);
        for (size_t i = 0; i < pixels; i++) {
            const uint8_t *s = j->cmyk + 4 * i;
            int k = invert ? s[3] : 255 - s[3];
            for (int c = 0; c < 3; c++) {
                int v = invert ? s[c] : 255 - s[c];
                int t = v * k + 128; /* rounded v * k / 255 */
                j->rgb[3 * i + c] = (uint8_t)((t + (t >> 8)) >> 8);
            }
        }
    } else if (tjDecompress2(j->handle, data, (unsigned long)len, j->rgb, w, w * 3, h, TJPF_RGB, flags)) {
        return tj_error(j, "scan data");
    }
    *rgb = j->rgb, *width = w, *height = h;
    return LADE_OK;
}

/* What a path that is not a regular file is, for the message. */
static const char *file_kind(mode_t mode) {
    return S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO" : S_ISSOCK(mode) ? "a socket"
           : S_ISCHR(mode) ? "a character device" : S_ISBLK(mode) ? "a block device" : "a special file";
}

lade_status lade_jpeg_read(lade_jpeg *j, const char *path, const uint8_t **rgb, int *width, int *height) {
    /* O_NONBLOCK: opening a FIFO without a writer would otherwise wait for good;
     * fstat on the open file then refuses all but regular files, with no race */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return lade_fail(LADE_EIO, "cannot open '%s': %s", path, strerror(errno));
    struct stat info;
    lade_status st = LADE_OK;
    if (fstat(fd, &info)) {
        st = lade_fail(LADE_EIO, "'%s': %s", path, strerror(errno));
    } else if (!S_ISREG(info.st_mode)) {
        st = lade_fail(LADE_EIO, "'%s' is %s, not a regular file (a JPEG image)", path, file_kind(info.st_mode));
    } else if ((size_t)info.st_size > ((size_t)1 << 31)) {
        st = lade_fail(LADE_EDECODE, "%lld bytes is too large for a JPEG", (long long)info.st_size);
    } else if (!(st = grow(&j->file, &j->file_cap, (size_t)info.st_size + 1))) {
        size_t got = 0;
        while (got < (size_t)info.st_size) {
            ssize_t r = read(fd, j->file + got, (size_t)info.st_size - got);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) break;
            got += (size_t)r;
        }
        if (got != (size_t)info.st_size)
            st = lade_fail(LADE_EIO, "'%s': read %zu of %lld bytes", path, got, (long long)info.st_size);
    }
    close(fd);
    if (!st) st = lade_jpeg_decode(j, j->file, (size_t)info.st_size, rgb, width, height);
    if (st && st != LADE_EIO) {
        char detail[400];
        snprintf(detail, sizeof detail, "%s", lade_error_detail());
        return lade_fail(st, "'%s': %s", path, detail);
    }
    return st;
}

lade_status lade_jpeg_decode_new(const char *path, const uint8_t *data, size_t len, uint8_t **rgb, int *width,
                                 int *height) {
    *rgb = NULL;
    lade_jpeg *j = NULL;
    const uint8_t *pixels = NULL;
    lade_status st = lade_jpeg_create(&j);
    if (!st) st = path ? lade_jpeg_read(j, path, &pixels, width, height)
                       : lade_jpeg_decode(j, data, len, &pixels, width, height);
    if (!st) { /* the decoder's buffer, cut to the image (malloc'd, as lade_alloc's), is the caller's */
        uint8_t *fit = realloc(j->rgb, (size_t)*width * (size_t)*height * 3);
        *rgb = fit ? fit : j->rgb, j->rgb = NULL;
    }
    lade_jpeg_destroy(j);
    return st;
}
