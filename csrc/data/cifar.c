/* cifar.c - the official CIFAR-10/100 binary batches. */
#include "lade_data.h"

#include <string.h>

size_t lade_cifar_record_size(int kind) {
    return kind == 10 ? 1 + LADE_CIFAR_PIXELS : kind == 100 ? 2 + LADE_CIFAR_PIXELS : 0;
}

lade_status lade_cifar_count(size_t len, int kind, size_t *count) {
    size_t record = lade_cifar_record_size(kind);
    if (!record) return lade_fail(LADE_EINVAL, "CIFAR kind must be 10 or 100, got %d", kind);
    if (len == 0) return lade_fail(LADE_EDECODE, "empty CIFAR-%d batch (0 bytes)", kind);
    if (len % record)
        return lade_fail(LADE_EDECODE,
                         "truncated CIFAR-%d batch: %zu bytes is not a whole number of %zu-byte records "
                         "(%zu full records and %zu bytes left over)",
                         kind, len, record, len / record, len % record);
    *count = len / record;
    return LADE_OK;
}

lade_status lade_cifar_parse(const uint8_t *buf, size_t len, int kind, int coarse, uint8_t *images,
                             int64_t *labels, size_t n) {
    size_t count;
    lade_status st = lade_cifar_count(len, kind, &count);
    if (st) return st;
    if (count != n) return lade_fail(LADE_EINVAL, "CIFAR batch holds %zu records, output has room for %zu", count, n);
    if (coarse && kind != 100) return lade_fail(LADE_EINVAL, "coarse labels exist only in CIFAR-100");
    size_t record = lade_cifar_record_size(kind);
    int label_offset = kind == 100 && !coarse ? 1 : 0;
    int num_classes = kind == 10 ? 10 : coarse ? 20 : 100;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *r = buf + i * record;
        if (r[label_offset] >= num_classes)
            return lade_fail(LADE_EDECODE, "CIFAR-%d record %zu has %s label %d, outside [0, %d)", kind, i,
                             kind == 10 ? "a" : coarse ? "coarse" : "fine", r[label_offset], num_classes);
        labels[i] = r[label_offset];
        memcpy(images + i * LADE_CIFAR_PIXELS, r + record - LADE_CIFAR_PIXELS, LADE_CIFAR_PIXELS);
    }
    return LADE_OK;
}

lade_status lade_labels_check(const int64_t *labels, size_t n, int64_t num_classes) {
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= num_classes)
            return lade_fail(LADE_ERANGE, "label[%zu] = %lld is outside [0, %lld)", i, (long long)labels[i],
                             (long long)num_classes);
    return LADE_OK;
}
