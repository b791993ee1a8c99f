/* fuzz_cifar.c - libFuzzer target for the CIFAR binary reader. The first
 * byte picks CIFAR-10 or -100 and fine or coarse labels; the rest is the
 * batch. Accepted batches must give labels in range. */
#include <stdint.h>
#include <stdlib.h>

#include "lade_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int kind = data[0] & 1 ? 100 : 10, coarse = kind == 100 && (data[0] & 2);
    size_t n;
    if (lade_cifar_count(size - 1, kind, &n)) return 0;
    uint8_t *images = malloc(n * LADE_CIFAR_PIXELS);
    int64_t *labels = malloc(n * sizeof *labels);
    if (images && labels && !lade_cifar_parse(data + 1, size - 1, kind, coarse, images, labels, n)) {
        int64_t classes = kind == 10 ? 10 : coarse ? 20 : 100;
        if (lade_labels_check(labels, n, classes)) abort();
    }
    free(images);
    free(labels);
    return 0;
}
