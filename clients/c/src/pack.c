/* Small msgpack-c helpers: strings, and reading fields of received maps. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void cd_pack_text(msgpack_packer *packer, const char *text, size_t length)
{
    msgpack_pack_str(packer, length);
    msgpack_pack_str_body(packer, text, length);
}

void cd_pack_cstr(msgpack_packer *packer, const char *text)
{
    cd_pack_text(packer, text, strlen(text));
}

const msgpack_object *cd_map_get(const msgpack_object *map, const char *key)
{
    size_t length = strlen(key);
    uint32_t index;
    if (map == NULL || map->type != MSGPACK_OBJECT_MAP) return NULL;
    for (index = 0; index < map->via.map.size; index++) {
        const msgpack_object_kv *pair = &map->via.map.ptr[index];
        if (pair->key.type == MSGPACK_OBJECT_STR && pair->key.via.str.size == length
            && memcmp(pair->key.via.str.ptr, key, length) == 0)
            return &pair->val;
    }
    return NULL;
}

uint64_t cd_map_uint(const msgpack_object *map, const char *key, uint64_t fallback)
{
    const msgpack_object *value = cd_map_get(map, key);
    if (value == NULL || value->type != MSGPACK_OBJECT_POSITIVE_INTEGER) return fallback;
    return value->via.u64;
}

void cd_buf_init(cd_buf *buffer)
{
    buffer->data = buffer->local;
    buffer->size = 0;
    buffer->alloc = sizeof buffer->local;
    buffer->failed = 0;
}

int cd_buf_write(void *raw, const char *bytes, size_t length)
{
    cd_buf *buffer = raw;
    if (buffer->failed) return -1;
    if (length == 0) return 0;
    if (length > buffer->alloc - buffer->size) {
        size_t alloc = buffer->alloc * 2;
        char *data;
        while (alloc - buffer->size < length) alloc *= 2;
        data = malloc(alloc);
        if (data == NULL) {
            buffer->failed = 1;
            return -1;
        }
        memcpy(data, buffer->data, buffer->size);
        if (buffer->data != buffer->local) free(buffer->data);
        buffer->data = data;
        buffer->alloc = alloc;
    }
    memcpy(buffer->data + buffer->size, bytes, length);
    buffer->size += length;
    return 0;
}

void cd_buf_free(cd_buf *buffer)
{
    if (buffer->data != buffer->local) free(buffer->data);
    cd_buf_init(buffer);
}
