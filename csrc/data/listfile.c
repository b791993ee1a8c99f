/* listfile.c - (path, label) lists: ImageNet-LT / Places-LT / iNaturalist
 * list files, or entries added one by one (class-folder trees). */
#include "lade_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lade_filelist {
    char *root, *source;
    char *text; /* all paths, each NUL-terminated */
    size_t text_len, text_cap;
    size_t *offset;
    int64_t *label, *line;
    size_t n, cap;
};

static char *copy_string(const char *s) {
    size_t len = strlen(s) + 1;
    char *p = malloc(len);
    if (p) memcpy(p, s, len);
    return p;
}

lade_status lade_filelist_create(lade_filelist **out, const char *root, const char *source) {
    *out = NULL;
    lade_filelist *fl = calloc(1, sizeof *fl);
    if (!fl) return lade_fail(LADE_ENOMEM, "file list");
    fl->root = copy_string(root ? root : "");
    fl->source = source ? copy_string(source) : NULL;
    if (!fl->root || (source && !fl->source)) {
        lade_filelist_destroy(fl);
        return lade_fail(LADE_ENOMEM, "file list");
    }
    *out = fl;
    return LADE_OK;
}

void lade_filelist_destroy(lade_filelist *fl) {
    if (!fl) return;
    free(fl->root);
    free(fl->source);
    free(fl->text);
    free(fl->offset);
    free(fl->label);
    free(fl->line);
    free(fl);
}

static lade_status append(lade_filelist *fl, const char *path, size_t len, int64_t label, int64_t line) {
    if (fl->n == fl->cap) {
        size_t cap = fl->cap ? fl->cap * 2 : 1024;
        size_t *offset = realloc(fl->offset, cap * sizeof *offset);
        if (offset) fl->offset = offset;
        int64_t *lab = realloc(fl->label, cap * sizeof *lab);
        if (lab) fl->label = lab;
        int64_t *lin = realloc(fl->line, cap * sizeof *lin);
        if (lin) fl->line = lin;
        if (!offset || !lab || !lin) return lade_fail(LADE_ENOMEM, "file list of %zu entries", cap);
        fl->cap = cap;
    }
    if (fl->text_len + len + 1 > fl->text_cap) {
        size_t cap = (fl->text_len + len + 1) * 2;
        char *text = realloc(fl->text, cap);
        if (!text) return lade_fail(LADE_ENOMEM, "file list text of %zu bytes", cap);
        fl->text = text, fl->text_cap = cap;
    }
    memcpy(fl->text + fl->text_len, path, len);
    fl->text[fl->text_len + len] = '\0';
    fl->offset[fl->n] = fl->text_len;
    fl->label[fl->n] = label;
    fl->line[fl->n] = line;
    fl->text_len += len + 1;
    fl->n++;
    return LADE_OK;
}

lade_status lade_filelist_add(lade_filelist *fl, const char *path, int64_t label, int64_t line) {
    if (!path[0]) return lade_fail(LADE_EINVAL, "empty path");
    if (label < 0) return lade_fail(LADE_ERANGE, "'%s': label %lld is negative", path, (long long)label);
    return append(fl, path, strlen(path), label, line);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

/* A short printable copy of a field, for messages. */
static void quote(char *buf, size_t size, const char *s, size_t len) {
    size_t k = 0, i = 0;
    for (; i < len && k + 8 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127) buf[k++] = (char)c;
        else k += (size_t)snprintf(buf + k, size - k, "\\x%02x", c);
    }
    if (i < len) memcpy(buf + k, "...", 3), k += 3;
    buf[k] = '\0';
}

/* 1 when s[0..len) is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF). */
static int is_utf8(const unsigned char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 0 : (c & 0xE0) == 0xC0 ? 1 : (c & 0xF0) == 0xE0 ? 2 : (c & 0xF8) == 0xF0 ? 3 : 9;
        if (n == 9 || i + n >= len) return 0; /* a bad lead byte, or the sequence runs past the end */
        uint32_t cp = n == 0 ? c : n == 1 ? c & 0x1Fu : n == 2 ? c & 0x0Fu : c & 0x07u;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += n + 1;
    }
    return 1;
}

/* Lines end with \n, \r\n or a lone \r; a UTF-8 byte-order mark at the start is skipped. */
lade_status lade_filelist_parse(lade_filelist *fl, const char *text, size_t len, int64_t num_classes) {
    const char *name = fl->source ? fl->source : "list file";
    int64_t line = 0;
    size_t pos = len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    while (pos < len) {
        line++;
        size_t end = pos;
        while (end < len && text[end] != '\n' && text[end] != '\r') end++;
        size_t next = end + (end + 1 < len && text[end] == '\r' && text[end + 1] == '\n' ? 2 : 1);
        /* trim the line */
        while (pos < end && is_space(text[pos])) pos++;
        while (end > pos && is_space(text[end - 1])) end--;
        if (pos == end) {
            pos = next;
            continue;
        }
        for (size_t i = pos; i < end; i++)
            if (text[i] == '\0')
                return lade_fail(LADE_EDECODE, "%s line %lld: contains a NUL byte", name, (long long)line);
        /* the label is the last field, the path everything before it */
        size_t label_start = end;
        while (label_start > pos && !is_space(text[label_start - 1])) label_start--;
        size_t path_end = label_start;
        while (path_end > pos && is_space(text[path_end - 1])) path_end--;
        char shown[96];
        if (path_end == pos) {
            quote(shown, sizeof shown, text + pos, end - pos);
            return lade_fail(LADE_EDECODE, "%s line %lld: expected 'path label', got '%s' (missing label)", name,
                             (long long)line, shown);
        }
        size_t i = label_start;
        int negative = 0;
        if (text[i] == '-' || text[i] == '+') negative = text[i++] == '-';
        int64_t label = 0;
        int digits = 0, overflow = 0;
        for (; i < end && text[i] >= '0' && text[i] <= '9'; i++, digits++) {
            if (label > (INT64_MAX - 9) / 10) overflow = 1;
            else label = label * 10 + (text[i] - '0');
        }
        if (!digits || i != end || overflow) {
            quote(shown, sizeof shown, text + label_start, end - label_start);
            char path[96];
            quote(path, sizeof path, text + pos, path_end - pos);
            return lade_fail(LADE_EDECODE, "%s line %lld: label '%s' of '%s' is not an integer%s", name,
                             (long long)line, shown, path, overflow ? " in range" : "");
        }
        if (negative) label = -label;
        if (label < 0 || (num_classes > 0 && label >= num_classes)) {
            char path[96];
            quote(path, sizeof path, text + pos, path_end - pos);
            if (num_classes > 0)
                return lade_fail(LADE_ERANGE, "%s line %lld: label %lld of '%s' is outside [0, %lld)", name,
                                 (long long)line, (long long)label, path, (long long)num_classes);
            return lade_fail(LADE_ERANGE, "%s line %lld: label %lld of '%s' is negative", name, (long long)line,
                             (long long)label, path);
        }
        if (!is_utf8((const unsigned char *)text + pos, path_end - pos)) {
            char path[96];
            quote(path, sizeof path, text + pos, path_end - pos);
            return lade_fail(LADE_EDECODE, "%s line %lld: expected a UTF-8 path, got '%s'", name, (long long)line, path);
        }
        lade_status st = append(fl, text + pos, path_end - pos, label, line);
        if (st) return st;
        pos = next;
    }
    return LADE_OK;
}

size_t lade_filelist_size(const lade_filelist *fl) { return fl->n; }
const char *lade_filelist_path(const lade_filelist *fl, size_t i) { return fl->text + fl->offset[i]; }
int64_t lade_filelist_label(const lade_filelist *fl, size_t i) { return fl->label[i]; }
int64_t lade_filelist_line(const lade_filelist *fl, size_t i) { return fl->line[i]; }
const char *lade_filelist_root(const lade_filelist *fl) { return fl->root; }
const char *lade_filelist_source(const lade_filelist *fl) { return fl->source; }

lade_status lade_filelist_full_path(const lade_filelist *fl, size_t i, char *buf, size_t size) {
    const char *path = lade_filelist_path(fl, i);
    int len = fl->root[0] && path[0] != '/' ? snprintf(buf, size, "%s/%s", fl->root, path) : snprintf(buf, size, "%s", path);
    if (len < 0 || (size_t)len >= size) return lade_fail(LADE_EINVAL, "path '%s' is too long", path);
    return LADE_OK;
}
