/* test_data.c - CIFAR records, list files, JPEG decoding, augmentation and
 * the loader, in C alone (JPEGs are made with TurboJPEG's compressor). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include "lade_data.h"
#include "check.h"

static uint8_t *make_jpeg(int w, int h, int gray, unsigned long *size) {
    uint8_t *pixels = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) pixels[i] = (uint8_t)((i * 7) % 251);
    tjhandle c = tjInitCompress();
    uint8_t *jpeg = NULL;
    *size = 0;
    int bad = tjCompress2(c, pixels, w, w * 3, h, TJPF_RGB, &jpeg, size, gray ? TJSAMP_GRAY : TJSAMP_420, 90, 0);
    tjDestroy(c);
    free(pixels);
    return bad ? NULL : jpeg;
}

TEST(cifar_records_parse_and_truncation) {
    size_t rec = lade_cifar_record_size(100);
    CHECK(rec == 3074 && lade_cifar_record_size(10) == 3073 && lade_cifar_record_size(7) == 0);
    uint8_t *buf = calloc(3, rec);
    for (int i = 0; i < 3; i++) {
        buf[i * rec] = (uint8_t)(i + 1);          /* coarse */
        buf[i * rec + 1] = (uint8_t)(50 + i);     /* fine */
        buf[i * rec + 2 + 5] = (uint8_t)(9 + i);  /* red pixel (0, 5) */
    }
    uint8_t images[3 * LADE_CIFAR_PIXELS];
    int64_t labels[3];
    size_t n = 0;
    CHECK_OK(lade_cifar_count(3 * rec, 100, &n));
    CHECK(n == 3);
    CHECK_OK(lade_cifar_parse(buf, 3 * rec, 100, 0, images, labels, 3));
    CHECK(labels[0] == 50 && labels[2] == 52 && images[LADE_CIFAR_PIXELS + 5] == 10);
    CHECK_OK(lade_cifar_parse(buf, 3 * rec, 100, 1, images, labels, 3));
    CHECK(labels[0] == 1 && labels[2] == 3);
    CHECK(lade_cifar_count(3 * rec - 1, 100, &n) == LADE_EDECODE);
    CHECK(strstr(lade_error_detail(), "truncated CIFAR-100 batch") != NULL);
    CHECK(lade_cifar_count(0, 10, &n) == LADE_EDECODE);
    buf[rec + 1] = 100;
    CHECK(lade_cifar_parse(buf, 3 * rec, 100, 0, images, labels, 3) == LADE_EDECODE);
    CHECK(strstr(lade_error_detail(), "record 1 has fine label 100") != NULL);
    free(buf);
}

TEST(filelist_parse_lines) {
    lade_filelist *fl;
    CHECK_OK(lade_filelist_create(&fl, "/root", "l.txt"));
    const char *text = "a.jpg 3\n\n b c.jpg\t 0 \r\n";
    CHECK_OK(lade_filelist_parse(fl, text, strlen(text), 4));
    CHECK(lade_filelist_size(fl) == 2);
    CHECK(!strcmp(lade_filelist_path(fl, 1), "b c.jpg") && lade_filelist_label(fl, 1) == 0 &&
          lade_filelist_line(fl, 1) == 3);
    char path[64];
    CHECK_OK(lade_filelist_full_path(fl, 0, path, sizeof path));
    CHECK(!strcmp(path, "/root/a.jpg"));
    CHECK(lade_filelist_parse(fl, "x 4\n", 4, 4) == LADE_ERANGE);
    CHECK(strstr(lade_error_detail(), "l.txt line 1: label 4 of 'x' is outside [0, 4)") != NULL);
    CHECK(lade_filelist_parse(fl, "ok 1\nx\n", 7, 4) == LADE_EDECODE);
    CHECK(strstr(lade_error_detail(), "line 2") != NULL);
    CHECK(lade_filelist_parse(fl, "x 1\0 2\n", 7, 4) == LADE_EDECODE);
    lade_filelist_destroy(fl);
}

TEST(filelist_bom_cr_only_lines_and_utf8_paths) {
    lade_filelist *fl;
    CHECK_OK(lade_filelist_create(&fl, "", "l.txt"));
    const char *text = "\xEF\xBB\xBF" "a.jpg 1\rb.jpg 2\r\nc\xC3\xA9.jpg 0";
    CHECK_OK(lade_filelist_parse(fl, text, strlen(text), 3));
    CHECK(lade_filelist_size(fl) == 3);
    CHECK(!strcmp(lade_filelist_path(fl, 0), "a.jpg") && lade_filelist_label(fl, 0) == 1);
    CHECK(!strcmp(lade_filelist_path(fl, 1), "b.jpg") && lade_filelist_line(fl, 1) == 2);
    CHECK(lade_filelist_line(fl, 2) == 3);
    const char *latin1 = "ok.jpg 1\nbad\xE9.jpg 1\n";
    CHECK(lade_filelist_parse(fl, latin1, strlen(latin1), 3) == LADE_EDECODE);
    CHECK(strstr(lade_error_detail(), "l.txt line 2: expected a UTF-8 path, got 'bad\\xe9.jpg'") != NULL);
    const char *overlong = "\xC0\xAF.jpg 1\n";
    CHECK(lade_filelist_parse(fl, overlong, strlen(overlong), 3) == LADE_EDECODE);
    lade_filelist_destroy(fl);
}

TEST(jpeg_pixel_limit_is_settable_within_bounds) {
    CHECK(lade_jpeg_max_pixels() == LADE_JPEG_DEFAULT_MAX_PIXELS);
    CHECK(lade_jpeg_set_max_pixels(0) == LADE_EINVAL);
    CHECK(lade_jpeg_set_max_pixels(LADE_JPEG_MAX_PIXELS + 1) == LADE_EINVAL);
    CHECK_OK(lade_jpeg_set_max_pixels(100));
    CHECK(lade_jpeg_max_pixels() == 100);
    CHECK_OK(lade_jpeg_set_max_pixels(LADE_JPEG_DEFAULT_MAX_PIXELS));
}

TEST(jpeg_decode_rgb_gray_and_bad_data) {
    lade_jpeg *j;
    CHECK_OK(lade_jpeg_create(&j));
    for (int gray = 0; gray < 2; gray++) {
        unsigned long size;
        uint8_t *jpeg = make_jpeg(37, 21, gray, &size);
        CHECK(jpeg != NULL);
        if (!jpeg) continue;
        const uint8_t *rgb;
        int w, h;
        CHECK_OK(lade_jpeg_decode(j, jpeg, size, &rgb, &w, &h));
        CHECK(w == 37 && h == 21);
        if (gray) CHECK(rgb[0] == rgb[1] && rgb[1] == rgb[2] && rgb[300] == rgb[301]);
        CHECK(lade_jpeg_decode(j, jpeg, size / 2, &rgb, &w, &h) == LADE_EDECODE);
        CHECK(lade_jpeg_decode(j, jpeg, 3, &rgb, &w, &h) == LADE_EDECODE);
        tjFree(jpeg);
    }
    const uint8_t png[12] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 0};
    const uint8_t *rgb;
    int w, h;
    CHECK(lade_jpeg_decode(j, png, sizeof png, &rgb, &w, &h) == LADE_EDECODE);
    CHECK(strstr(lade_error_detail(), "PNG") != NULL);
    CHECK(lade_jpeg_decode(j, png, 0, &rgb, &w, &h) == LADE_EDECODE);
    CHECK(lade_jpeg_read(j, "/nonexistent/file.jpg", &rgb, &w, &h) == LADE_EIO);
    CHECK(strstr(lade_error_detail(), "/nonexistent/file.jpg") != NULL);
    lade_jpeg_destroy(j);
}

/* lade_jpeg_decode_new: the same pixels in a buffer of the caller's; NULL on failure */
TEST(jpeg_decode_new_gives_a_buffer_of_the_callers) {
    unsigned long size;
    uint8_t *jpeg = make_jpeg(37, 21, 0, &size);
    CHECK(jpeg != NULL);
    if (!jpeg) return;
    lade_jpeg *j;
    CHECK_OK(lade_jpeg_create(&j));
    const uint8_t *rgb;
    uint8_t *mine = NULL;
    int w, h, w2 = 0, h2 = 0;
    CHECK_OK(lade_jpeg_decode(j, jpeg, size, &rgb, &w, &h));
    CHECK_OK(lade_jpeg_decode_new(NULL, jpeg, size, &mine, &w2, &h2));
    CHECK(mine != NULL && w2 == w && h2 == h && !memcmp(mine, rgb, (size_t)w * h * 3));
    lade_free(mine);
    CHECK(lade_jpeg_decode_new(NULL, jpeg, size / 2, &mine, &w2, &h2) == LADE_EDECODE && mine == NULL);
    CHECK(lade_jpeg_decode_new("/nonexistent/file.jpg", NULL, 0, &mine, &w2, &h2) == LADE_EIO && mine == NULL);
    lade_clear_error();
    lade_jpeg_destroy(j);
    tjFree(jpeg);
}

/* A FIFO without a writer, a directory and a device are refused by name, at once;
 * alarm() ends the test run if the read blocks, as fopen on the FIFO did. */
TEST(jpeg_read_refuses_fifo_directory_and_device_without_blocking) {
    lade_jpeg *j;
    CHECK_OK(lade_jpeg_create(&j));
    char dir[] = "/tmp/lade_fifo_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char fifo[64];
    snprintf(fifo, sizeof fifo, "%s/image.jpg", dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    const char *paths[3] = {fifo, dir, "/dev/null"};
    const char *kinds[3] = {"is a FIFO", "is a directory", "is a character device"};
    const uint8_t *rgb;
    int w, h;
    for (int i = 0; i < 3; i++) {
        alarm(10);
        CHECK(lade_jpeg_read(j, paths[i], &rgb, &w, &h) == LADE_EIO);
        alarm(0);
        CHECK(strstr(lade_error_detail(), kinds[i]) != NULL && strstr(lade_error_detail(), paths[i]) != NULL);
    }
    unlink(fifo);
    rmdir(dir);
    lade_jpeg_destroy(j);
}

TEST(cifar_crop_geometry) {
    lade_transform t;
    lade_transform_cifar_train(&t);
    for (int c = 0; c < 3; c++) t.mean[c] = 0, t.std[c] = 1.0f / 255; /* output = pixel value */
    uint8_t img[3 * 32 * 32];
    for (int i = 0; i < 3 * 32 * 32; i++) img[i] = (uint8_t)(i % 200 + 1);
    lade_image src = {img, 32, 32, 32 * 32, 32, 1};
    float out[3 * 32 * 32];
    lade_aug_params p = {.top = 0, .left = 8, .height = 32, .width = 32, .flip = 1};
    CHECK_OK(lade_transform_apply(&t, &src, &p, out, NULL, NULL));
    /* top 0: the first 4 rows are padding; left 8 + flip: out x reads source x' = 8 + 31 - x - 4 */
    CHECK_CLOSE(out[0 * 32 + 5], 0, 1e-4);
    CHECK_CLOSE(out[4 * 32 + 10], img[0 * 32 + (8 + 31 - 10 - 4)], 1e-3);
    CHECK_CLOSE(out[32 * 32 + 9 * 32 + 5], img[32 * 32 + 5 * 32 + (8 + 31 - 5 - 4)], 1e-3);
    CHECK_CLOSE(out[4 * 32 + 0], 0, 1e-4); /* source x 35 lies in the right padding */
}

TEST(loader_in_memory_deterministic_across_workers) {
    enum { N = 100, B = 16 };
    uint8_t *images = malloc((size_t)N * 3 * 32 * 32);
    int64_t labels[N];
    for (size_t i = 0; i < (size_t)N * 3 * 32 * 32; i++) images[i] = (uint8_t)(i * 31 % 256);
    for (int i = 0; i < N; i++) labels[i] = i % 10;
    float *first = malloc(sizeof(float) * 6 * B * 3 * 32 * 32), *batch = malloc(sizeof(float) * B * 3 * 32 * 32);
    int64_t first_labels[6 * B], batch_labels[B];
    for (int workers = 1; workers <= 3; workers++) {
        lade_loader_config c = {0};
        c.images = images, c.labels = labels, c.num_images = N, c.image_height = c.image_width = 32;
        lade_transform_cifar_train(&c.transform);
        c.batch_size = B, c.drop_last = 1, c.num_workers = workers, c.prefetch = workers, c.seed = 42;
        lade_loader *l;
        CHECK_OK(lade_loader_create(&l, &c));
        CHECK_OK(lade_loader_begin_epoch(l, 1, NULL, 0));
        CHECK(lade_loader_num_batches(l) == 6);
        for (int b = 0;; b++) {
            lade_batch_info info;
            CHECK_OK(lade_loader_next(l, batch, batch_labels, -1, &info));
            if (info.end_of_epoch || b > 6) break;
            CHECK(info.count == B && info.batch == (size_t)b);
            size_t floats = (size_t)B * 3 * 32 * 32;
            if (workers == 1) {
                memcpy(first + b * floats, batch, floats * sizeof(float));
                memcpy(first_labels + b * B, batch_labels, sizeof batch_labels);
            } else {
                CHECK(!memcmp(first + b * floats, batch, floats * sizeof(float)));
                CHECK(!memcmp(first_labels + b * B, batch_labels, sizeof batch_labels));
            }
        }
        int64_t bad[2] = {0, N};
        CHECK(lade_loader_begin_epoch(l, 0, bad, 2) == LADE_ERANGE);
        lade_loader_destroy(l);
    }
    free(images), free(first), free(batch);
}

TEST(loader_missing_file_names_line) {
    lade_filelist *fl;
    CHECK_OK(lade_filelist_create(&fl, "/nonexistent", "list.txt"));
    CHECK_OK(lade_filelist_parse(fl, "a.jpg 0\nb.jpg 1\n", 16, 2));
    lade_loader_config c = {0};
    c.files = fl;
    lade_transform_imagenet_eval(&c.transform, 40, 32);
    c.batch_size = 2, c.num_workers = 2, c.prefetch = 2;
    lade_loader *l;
    CHECK_OK(lade_loader_create(&l, &c));
    int64_t order[2] = {1, 0};
    CHECK_OK(lade_loader_begin_epoch(l, 0, order, 2));
    float images[2 * 3 * 32 * 32];
    int64_t labels[2];
    lade_batch_info info;
    CHECK(lade_loader_next(l, images, labels, -1, &info) == LADE_EIO);
    /* the lowest position fails first: b.jpg on line 2 */
    CHECK(strstr(lade_error_detail(), "list.txt line 2: cannot open '/nonexistent/b.jpg'") != NULL);
    CHECK_OK(lade_loader_next(l, images, labels, -1, &info));
    CHECK(info.end_of_epoch);
    lade_loader_destroy(l);
    lade_filelist_destroy(fl);
}
