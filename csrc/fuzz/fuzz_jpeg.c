/* fuzz_jpeg.c - libFuzzer target for the JPEG path: decode arbitrary bytes,
 * then run the training and eval transforms on whatever decoded. Any crash,
 * sanitizer report, leak or hang is a bug; a status is an accepted outcome. */
#include <stddef.h>
#include <stdint.h>

#include "lade_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static lade_jpeg *jpeg;
    if (!jpeg && lade_jpeg_create(&jpeg)) return 0;
    const uint8_t *rgb;
    int width, height;
    if (lade_jpeg_decode(jpeg, data, size, &rgb, &width, &height)) return 0;
    if ((size_t)width * height > ((size_t)1 << 22)) return 0; /* keep each run fast */
    lade_image img = {rgb, height, width, 1, (ptrdiff_t)width * 3, 3};
    float out[3 * 24 * 24];
    void *scratch = NULL;
    size_t scratch_size = 0;
    lade_transform t[2];
    lade_transform_imagenet_train(&t[0], 24);
    lade_transform_imagenet_eval(&t[1], 28, 24);
    for (int k = 0; k < 2; k++) {
        lade_rng rng;
        lade_rng_seed(&rng, size, (uint64_t)k);
        lade_aug_params p;
        if (!lade_transform_params(&t[k], height, width, &rng, &p))
            lade_transform_apply(&t[k], &img, &p, out, &scratch, &scratch_size);
    }
    lade_free(scratch);
    return 0;
}
