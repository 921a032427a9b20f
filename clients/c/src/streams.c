/* Streams: declarations (checked as the daemon checks them, so a bad one
 * fails at the call) and blocks of raw rows, as protocol.md describes. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BLOCK_BYTES (8u * 1024u * 1024u) /* most rows bytes one block carries */
#define MAX_COLUMNS 4096

/* The dtype's canonical numpy string and item size; -1 if not a stream dtype. */
static int stream_dtype(const char *dtype, const char **canonical, size_t *itemsize)
{
    static const char *const names[] = {"|b1", "|i1", "|u1", "<i2", "<i4", "<i8",
                                        "<u2", "<u4", "<u8", "<f2", "<f4", "<f8"};
    static const size_t sizes[] = {1, 1, 1, 2, 4, 8, 2, 4, 8, 2, 4, 8};
    size_t index;
    if (dtype == NULL) return -1;
    for (index = 0; index < sizeof sizes / sizeof sizes[0]; index++) {
        const char *name = names[index];
        /* One-byte types may be written with '<' too, as numpy accepts them. */
        if (strcmp(dtype, name) == 0 || (name[0] == '|' && dtype[0] == '<' && strcmp(dtype + 1, name + 1) == 0)) {
            *canonical = name;
            *itemsize = sizes[index];
            return 0;
        }
    }
    return -1;
}

/* Whether `text` ends with `suffix`, ignoring ASCII case (as Windows and macOS do). */
static int ends_with(const char *text, size_t length, const char *suffix)
{
    size_t suffix_length = strlen(suffix), index;
    if (length < suffix_length) return 0;
    for (index = 0; index < suffix_length; index++)
        if (tolower((unsigned char)text[length - suffix_length + index]) != suffix[index]) return 0;
    return 1;
}

/* Each name of a stream's path names a folder or its file. */
static int check_stream_path(collectord_client *c, const char *path)
{
    static const char *const suffixes[] = {".npy", ".csv", ".h5", ".parquet", ".feather"};
    const char *start = path, *end;
    char why[CD_ERROR_BYTES];
    size_t index, length;
    for (;;) {
        end = strchr(start, '/');
        length = end ? (size_t)(end - start) : strlen(start);
        if (cd_check_file_name(start, length, why, sizeof why) != 0)
            return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream path '%s': %s", path, why);
        if (end == NULL) return COLLECTORD_OK;
        for (index = 0; index < sizeof suffixes / sizeof suffixes[0]; index++)
            if (ends_with(start, length, suffixes[index]))
                return cd_fail(c, COLLECTORD_E_ARGUMENT,
                               "stream path '%s': the folder name '%.*s' ends like a stream file",
                               path, (int)length, start);
        start = end + 1;
    }
}

static int check_column(collectord_client *c, const char *path, const char *column, size_t length)
{
    size_t index;
    if (length == 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': a column name is empty", path);
    if (cd_check_utf8(column, length) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': a column name is not UTF-8", path);
    for (index = 0; index < length; index++) {
        unsigned char byte = (unsigned char)column[index];
        /* Control characters (Cc): C0, DEL, and C1 (U+0080..U+009F = C2 80..C2 9F). */
        if (byte < 0x20 || byte == 0x7F
            || (byte == 0xC2 && index + 1 < length && (unsigned char)column[index + 1] <= 0x9F))
            return cd_fail(c, COLLECTORD_E_ARGUMENT,
                           "stream '%s': column name '%.*s' holds a control character", path,
                           (int)length, column);
    }
    return COLLECTORD_OK;
}

/* Declare from a msgpack array of columns (and units): checked, recorded, queued. */
static int declare(collectord_client *c, const char *path, const msgpack_object *columns,
                   const char *dtype, const msgpack_object *units)
{
    const char *canonical;
    size_t itemsize, index, other;
    cd_buf body;
    msgpack_packer packer;
    cd_stream *streams;
    char *copy;
    int code;
    if ((code = cd_check_call(c, path)) != COLLECTORD_OK) return code;
    if ((code = check_stream_path(c, path)) != COLLECTORD_OK) return code;
    if (stream_dtype(dtype, &canonical, &itemsize) != 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT,
                       "stream '%s': dtype '%s' is not a little-endian bool, int, uint or float "
                       "of 1 to 8 bytes",
                       path, dtype ? dtype : "(NULL)");
    if (columns->type != MSGPACK_OBJECT_ARRAY || columns->via.array.size == 0
        || columns->via.array.size > MAX_COLUMNS)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': 1 to %d columns are needed", path,
                       MAX_COLUMNS);
    for (index = 0; index < columns->via.array.size; index++) {
        const msgpack_object *column = &columns->via.array.ptr[index];
        if (column->type != MSGPACK_OBJECT_STR)
            return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': column names must be text", path);
        if ((code = check_column(c, path, column->via.str.ptr, column->via.str.size)) != 0) return code;
        for (other = 0; other < index; other++) {
            const msgpack_object *before = &columns->via.array.ptr[other];
            if (before->via.str.size == column->via.str.size
                && memcmp(before->via.str.ptr, column->via.str.ptr, column->via.str.size) == 0)
                return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': column '%.*s' appears twice",
                               path, (int)column->via.str.size, column->via.str.ptr);
        }
    }
    if (units != NULL) {
        if (units->type != MSGPACK_OBJECT_ARRAY || units->via.array.size != columns->via.array.size)
            return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': give one unit per column", path);
        for (index = 0; index < units->via.array.size; index++)
            if (units->via.array.ptr[index].type != MSGPACK_OBJECT_STR)
                return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': units must be text", path);
    }
    copy = malloc(strlen(path) + 1);
    if (copy == NULL) return cd_fail(c, COLLECTORD_E_MEMORY, "out of memory");
    strcpy(copy, path);
    cd_buf_init(&body);
    msgpack_packer_init(&packer, &body, cd_buf_write);
    msgpack_pack_map(&packer, units != NULL ? 4 : 3);
    cd_pack_cstr(&packer, "path");
    cd_pack_cstr(&packer, path);
    cd_pack_cstr(&packer, "columns");
    msgpack_pack_object(&packer, *columns);
    cd_pack_cstr(&packer, "dtype");
    cd_pack_cstr(&packer, canonical);
    if (units != NULL) {
        cd_pack_cstr(&packer, "units");
        msgpack_pack_object(&packer, *units);
    }
    /* Record the stream (or its new shape) before the declaration goes out. */
    cd_mutex_lock(&c->lock);
    for (index = 0; index < c->stream_count; index++)
        if (strcmp(c->streams[index].path, path) == 0) break;
    if (index == c->stream_count) {
        streams = realloc(c->streams, (c->stream_count + 1) * sizeof *streams);
        if (streams == NULL) {
            cd_mutex_unlock(&c->lock);
            free(copy);
            cd_buf_free(&body);
            return cd_fail(c, COLLECTORD_E_MEMORY, "out of memory");
        }
        c->streams = streams;
        c->stream_count++;
    } else {
        free(c->streams[index].path);
    }
    c->streams[index].path = copy;
    c->streams[index].columns = columns->via.array.size;
    c->streams[index].itemsize = itemsize;
    cd_mutex_unlock(&c->lock);
    return cd_publish(c, CD_STREAM, &body);
}

/* Strings as a msgpack array, unpacked into `unpacked`. */
static int strings_object(collectord_client *c, const char *const *texts, size_t count,
                          const char *what, msgpack_sbuffer *buffer, msgpack_unpacked *unpacked)
{
    msgpack_packer packer;
    size_t index, offset = 0;
    msgpack_packer_init(&packer, buffer, msgpack_sbuffer_write);
    msgpack_pack_array(&packer, count);
    for (index = 0; index < count; index++) {
        if (texts[index] == NULL) return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s %zu is NULL", what, index);
        if (cd_check_utf8(texts[index], strlen(texts[index])) != 0)
            return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s %zu is not UTF-8", what, index);
        cd_pack_cstr(&packer, texts[index]);
    }
    if (msgpack_unpack_next(unpacked, buffer->data, buffer->size, &offset) != MSGPACK_UNPACK_SUCCESS)
        return cd_fail(c, COLLECTORD_E_INTERNAL, "cannot read back the %s", what);
    return COLLECTORD_OK;
}

int collectord_declare_stream(collectord_client *c, const char *path, const char *const *columns,
                              size_t column_count, const char *dtype, const char *const *units)
{
    msgpack_sbuffer column_buffer, unit_buffer;
    msgpack_unpacked column_object, unit_object;
    int code;
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    if (columns == NULL) return cd_fail(c, COLLECTORD_E_ARGUMENT, "columns is NULL");
    if (column_count == 0 || column_count > MAX_COLUMNS)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': 1 to %d columns are needed",
                       path ? path : "", MAX_COLUMNS);
    msgpack_sbuffer_init(&column_buffer);
    msgpack_sbuffer_init(&unit_buffer);
    msgpack_unpacked_init(&column_object);
    msgpack_unpacked_init(&unit_object);
    code = strings_object(c, columns, column_count, "column", &column_buffer, &column_object);
    if (code == COLLECTORD_OK && units != NULL)
        code = strings_object(c, units, column_count, "unit", &unit_buffer, &unit_object);
    if (code == COLLECTORD_OK)
        code = declare(c, path, &column_object.data, dtype, units ? &unit_object.data : NULL);
    msgpack_unpacked_destroy(&column_object);
    msgpack_unpacked_destroy(&unit_object);
    msgpack_sbuffer_destroy(&column_buffer);
    msgpack_sbuffer_destroy(&unit_buffer);
    return code;
}

static int json_array(collectord_client *c, const char *json, const char *what,
                      msgpack_sbuffer *buffer, msgpack_unpacked *unpacked)
{
    char why[CD_ERROR_BYTES];
    size_t offset = 0;
    if (json == NULL) return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s is NULL", what);
    msgpack_packer packer;
    msgpack_packer_init(&packer, buffer, msgpack_sbuffer_write);
    if (cd_json_to_msgpack(json, strlen(json), 2, &packer, why, sizeof why) != 0)
        return cd_fail(c, COLLECTORD_E_JSON, "%s: %s", what, why);
    msgpack_unpack_next(unpacked, buffer->data, buffer->size, &offset);
    if (unpacked->data.type != MSGPACK_OBJECT_ARRAY)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "%s must be a JSON array of strings", what);
    return COLLECTORD_OK;
}

int collectord_declare_stream_json(collectord_client *c, const char *path,
                                   const char *columns_json, const char *dtype,
                                   const char *units_json)
{
    msgpack_sbuffer column_buffer, unit_buffer;
    msgpack_unpacked column_object, unit_object;
    int code;
    if (c == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    msgpack_sbuffer_init(&column_buffer);
    msgpack_sbuffer_init(&unit_buffer);
    msgpack_unpacked_init(&column_object);
    msgpack_unpacked_init(&unit_object);
    code = json_array(c, columns_json, "columns", &column_buffer, &column_object);
    if (code == COLLECTORD_OK && units_json != NULL)
        code = json_array(c, units_json, "units", &unit_buffer, &unit_object);
    if (code == COLLECTORD_OK)
        code = declare(c, path, &column_object.data, dtype, units_json ? &unit_object.data : NULL);
    msgpack_unpacked_destroy(&column_object);
    msgpack_unpacked_destroy(&unit_object);
    msgpack_sbuffer_destroy(&column_buffer);
    msgpack_sbuffer_destroy(&unit_buffer);
    return code;
}

int collectord_append_rows(collectord_client *c, const char *path, const void *rows,
                           uint64_t row_count, size_t length)
{
    size_t index, row_bytes = 0, per_block;
    uint64_t limit, done;
    cd_message *head = NULL, *tail = NULL;
    size_t count = 0;
    int code;
    if ((code = cd_check_call(c, path)) != COLLECTORD_OK) return code;
    if (rows == NULL || row_count == 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s': no rows given", path);
    cd_mutex_lock(&c->lock);
    for (index = 0; index < c->stream_count; index++)
        if (strcmp(c->streams[index].path, path) == 0) {
            row_bytes = c->streams[index].columns * c->streams[index].itemsize;
            break;
        }
    limit = c->body_limit;
    cd_mutex_unlock(&c->lock);
    if (row_bytes == 0)
        return cd_fail(c, COLLECTORD_E_ARGUMENT, "stream '%s' was not declared by this client", path);
    if (row_count > SIZE_MAX / row_bytes || (uint64_t)length != row_count * row_bytes)
        return cd_fail(c, COLLECTORD_E_ARGUMENT,
                       "stream '%s': %llu rows of %zu bytes are %llu bytes, not %zu", path,
                       (unsigned long long)row_count, row_bytes,
                       (unsigned long long)(row_count * row_bytes), length);
    /* A block's body is {"path", "rows"}: room for it beside the rows. */
    per_block = (size_t)((limit > BLOCK_BYTES ? BLOCK_BYTES : (limit > 512 + strlen(path) ? limit - 512 - strlen(path) : 0)) / row_bytes);
    if (per_block == 0)
        return cd_fail(c, COLLECTORD_E_TOO_LARGE, "stream '%s': one row is larger than the daemon accepts", path);
    for (done = 0; done < row_count;) {
        uint64_t take = row_count - done < per_block ? row_count - done : per_block;
        cd_buf body;
        msgpack_packer packer;
        cd_message *message;
        cd_buf_init(&body);
        msgpack_packer_init(&packer, &body, cd_buf_write);
        msgpack_pack_map(&packer, 2);
        cd_pack_cstr(&packer, "path");
        cd_pack_cstr(&packer, path);
        cd_pack_cstr(&packer, "rows");
        msgpack_pack_uint64(&packer, take);
        code = body.failed ? cd_fail(c, COLLECTORD_E_MEMORY, "out of memory")
                           : cd_new_message(c, CD_BLOCK, &body, (const char *)rows + done * row_bytes,
                                         (size_t)take * row_bytes, &message);
        cd_buf_free(&body);
        if (code != COLLECTORD_OK) {
            while ((message = head) != NULL) {
                head = message->next;
                cd_message_free(message);
            }
            return code;
        }
        if (tail) tail->next = message;
        else head = message;
        tail = message;
        count++;
        done += take;
    }
    return cd_enqueue(c, head, count);
}
