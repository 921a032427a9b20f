/* The name and path rules of docs/protocol.md ("Paths and names"), checked
 * at the call so that a bad path fails there, not silently at the daemon. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define MAX_NAME_BYTES 200
#define MAX_PATH_NAMES 32

/* Length of the UTF-8 sequence at `text` (0 if invalid); its code point in *point. */
static size_t utf8_char(const unsigned char *text, size_t left, uint32_t *point)
{
    size_t length, index;
    uint32_t value;
    if (text[0] < 0x80) { *point = text[0]; return 1; }
    if (text[0] >= 0xC2 && text[0] <= 0xDF) { length = 2; value = text[0] & 0x1F; }
    else if (text[0] >= 0xE0 && text[0] <= 0xEF) { length = 3; value = text[0] & 0x0F; }
    else if (text[0] >= 0xF0 && text[0] <= 0xF4) { length = 4; value = text[0] & 0x07; }
    else return 0;
    if (left < length) return 0;
    for (index = 1; index < length; index++) {
        if ((text[index] & 0xC0) != 0x80) return 0;
        value = (value << 6) | (text[index] & 0x3F);
    }
    if ((length == 3 && value < 0x800) || (length == 4 && (value < 0x10000 || value > 0x10FFFF))
        || (value >= 0xD800 && value <= 0xDFFF))
        return 0;
    *point = value;
    return length;
}

int cd_check_utf8(const char *text, size_t length)
{
    size_t at = 0;
    uint32_t point;
    while (at < length) {
        size_t step = utf8_char((const unsigned char *)text + at, length - at, &point);
        if (step == 0) return -1;
        at += step;
    }
    return 0;
}

int cd_check_name(const char *text, size_t length, char *why, size_t why_size)
{
    size_t at = 0;
    uint32_t point;
    if (length == 0) { snprintf(why, why_size, "a name is empty"); return -1; }
    if (length > MAX_NAME_BYTES) {
        snprintf(why, why_size, "name '%.40s...' is %zu bytes; at most %d", text, length,
                 MAX_NAME_BYTES);
        return -1;
    }
    if ((length == 1 && text[0] == '.') || (length == 2 && text[0] == '.' && text[1] == '.')) {
        snprintf(why, why_size, "name '%.*s' is not allowed", (int)length, text);
        return -1;
    }
    if (text[0] == '$') {
        snprintf(why, why_size, "name '%.*s' starts with '$'", (int)length, text);
        return -1;
    }
    while (at < length) {
        size_t step = utf8_char((const unsigned char *)text + at, length - at, &point);
        if (step == 0) {
            snprintf(why, why_size, "name is not valid UTF-8 (byte %zu)", at);
            return -1;
        }
        if (point == '/' || point == '\\') {
            snprintf(why, why_size, "name '%.*s' contains '%c'", (int)length, text, (char)point);
            return -1;
        }
        if (point < 0x20 || (point >= 0x7F && point <= 0x9F)) {
            snprintf(why, why_size, "name contains the control character U+%04X", (unsigned)point);
            return -1;
        }
        at += step;
    }
    return 0;
}

/* Whether the `length` bytes at `text` equal `word`, ignoring ASCII case. */
static int same_word(const char *text, size_t length, const char *word)
{
    size_t index;
    if (strlen(word) != length) return 0;
    for (index = 0; index < length; index++)
        if (toupper((unsigned char)text[index]) != toupper((unsigned char)word[index])) return 0;
    return 1;
}

/* Whether the `length` bytes at `text` are one of Windows's device names;
 * the digits of COM and LPT include superscript one to three (UTF-8). */
static int is_device_name(const char *text, size_t length)
{
    static const char *const devices[] = {"CON", "PRN", "AUX", "NUL"};
    static const char *const digits[] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
                                         "\xC2\xB9", "\xC2\xB2", "\xC2\xB3"};
    char device[8];
    size_t index;
    for (index = 0; index < sizeof devices / sizeof devices[0]; index++)
        if (same_word(text, length, devices[index])) return 1;
    for (index = 0; index < 2 * (sizeof digits / sizeof digits[0]); index++) {
        snprintf(device, sizeof device, "%s%s", index % 2 ? "LPT" : "COM", digits[index / 2]);
        if (same_word(text, length, device)) return 1;
    }
    return 0;
}

int cd_check_file_name(const char *text, size_t length, char *why, size_t why_size)
{
    size_t index, stem = 0;
    if (cd_check_name(text, length, why, why_size) != 0) return -1;
    for (index = 0; index < length; index++)
        if (strchr("<>:\"|?*", text[index]) != NULL) {
            snprintf(why, why_size, "name '%.*s' holds '%c', which Windows allows in no file name",
                     (int)length, text, text[index]);
            return -1;
        }
    if (text[length - 1] == '.' || text[length - 1] == ' ') {
        snprintf(why, why_size, "name '%.*s' ends with a dot or a space, which Windows drops",
                 (int)length, text);
        return -1;
    }
    /* A device name is one also before an extension: con.npy is the console. */
    while (stem < length && text[stem] != '.') stem++;
    while (stem > 0 && text[stem - 1] == ' ') stem--;
    if (is_device_name(text, stem)) {
        snprintf(why, why_size, "name '%.*s' is a device name on Windows", (int)length, text);
        return -1;
    }
    return 0;
}

int cd_check_path(const char *path, char *why, size_t why_size)
{
    const char *start = path;
    size_t names = 0;
    char reason[CD_ERROR_BYTES];
    if (path == NULL) { snprintf(why, why_size, "path is NULL"); return -1; }
    for (;;) {
        const char *end = strchr(start, '/');
        size_t length = end ? (size_t)(end - start) : strlen(start);
        if (cd_check_name(start, length, reason, sizeof reason) != 0) {
            snprintf(why, why_size, "path '%.200s': %s", path, reason);
            return -1;
        }
        if (names == 0 && length == 10 && memcmp(start, "collectord", 10) == 0) {
            snprintf(why, why_size, "path '%.200s': 'collectord' is the daemon's own key", path);
            return -1;
        }
        if (++names > MAX_PATH_NAMES) {
            snprintf(why, why_size, "path '%.200s' has more than %d names", path, MAX_PATH_NAMES);
            return -1;
        }
        if (end == NULL) return 0;
        start = end + 1;
    }
}
