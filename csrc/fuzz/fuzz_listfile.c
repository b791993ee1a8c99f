/* fuzz_listfile.c - libFuzzer target for the list-file parser. The first byte
 * picks num_classes (0: any label >= 0); the rest is the list file's text.
 * Every accepted entry must be a non-empty path with a label in range. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lade_data.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int64_t num_classes = data[0] % 64;
    lade_filelist *fl;
    if (lade_filelist_create(&fl, "root", "fuzz.txt")) return 0;
    if (!lade_filelist_parse(fl, (const char *)data + 1, size - 1, num_classes)) {
        char path[256];
        for (size_t i = 0; i < lade_filelist_size(fl); i++) {
            int64_t label = lade_filelist_label(fl, i);
            if (!lade_filelist_path(fl, i)[0] || label < 0 || (num_classes > 0 && label >= num_classes)) abort();
            lade_filelist_full_path(fl, i, path, sizeof path);
        }
    }
    lade_filelist_destroy(fl);
    return 0;
}
