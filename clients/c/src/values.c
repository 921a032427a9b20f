/* Values a caller hands over as msgpack bytes, checked against what the
 * daemon accepts (docs/protocol.md, "Values"), so that a bad value fails at
 * the call instead of being counted as a rejection at the daemon. */
#include <stdio.h>

#include "internal.h"

static const char *type_name(msgpack_object_type type)
{
    switch (type) {
    case MSGPACK_OBJECT_NIL: return "nil";
    case MSGPACK_OBJECT_BOOLEAN: return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return "int";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return "float";
    case MSGPACK_OBJECT_STR: return "str";
    case MSGPACK_OBJECT_BIN: return "bin";
    case MSGPACK_OBJECT_ARRAY: return "array";
    case MSGPACK_OBJECT_MAP: return "map";
    case MSGPACK_OBJECT_EXT: return "ext";
    default: return "unknown";
    }
}

static int check(const msgpack_object *value, int depth, char *why, size_t why_size)
{
    uint32_t index;
    switch (value->type) {
    case MSGPACK_OBJECT_STR:
        if (cd_check_utf8(value->via.str.ptr, value->via.str.size) != 0) {
            snprintf(why, why_size, "a str is not valid UTF-8");
            return -1;
        }
        return 0;
    case MSGPACK_OBJECT_EXT:
        if (value->via.ext.type != 1 && value->via.ext.type != 2 && value->via.ext.type != -1) {
            snprintf(why, why_size, "unknown msgpack ext type %d", (int)value->via.ext.type);
            return -1;
        }
        return 0;
    case MSGPACK_OBJECT_ARRAY:
    case MSGPACK_OBJECT_MAP:
        if (depth == 0) {
            snprintf(why, why_size, "the value is nested too deep");
            return -1;
        }
        break;
    default:
        return 0;
    }
    if (value->type == MSGPACK_OBJECT_ARRAY) {
        for (index = 0; index < value->via.array.size; index++)
            if (check(&value->via.array.ptr[index], depth - 1, why, why_size) != 0) return -1;
        return 0;
    }
    for (index = 0; index < value->via.map.size; index++) {
        const msgpack_object *key = &value->via.map.ptr[index].key;
        if (key->type != MSGPACK_OBJECT_STR) {
            snprintf(why, why_size, "map keys must be str, not %s", type_name(key->type));
            return -1;
        }
        if (check(key, depth, why, why_size) != 0) return -1;
        if (key->via.str.size > 0 && key->via.str.ptr[0] == '$') {
            snprintf(why, why_size, "map key '%.*s' starts with '$', kept for collectord's tags",
                     (int)(key->via.str.size > 60 ? 60 : key->via.str.size), key->via.str.ptr);
            return -1;
        }
        if (check(&value->via.map.ptr[index].val, depth - 1, why, why_size) != 0) return -1;
    }
    return 0;
}

int cd_check_value(const char *bytes, size_t length, int depth, char *why, size_t why_size)
{
    msgpack_unpacked unpacked;
    size_t offset = 0;
    msgpack_unpack_return status;
    int result;
    if (bytes == NULL || length == 0) {
        snprintf(why, why_size, "no msgpack bytes");
        return -1;
    }
    msgpack_unpacked_init(&unpacked);
    status = msgpack_unpack_next(&unpacked, bytes, length, &offset);
    if (status != MSGPACK_UNPACK_SUCCESS) {
        snprintf(why, why_size,
                 status == MSGPACK_UNPACK_CONTINUE
                     ? "the msgpack value is cut short (%zu bytes)"
                     : "the %zu bytes are not msgpack (or nest deeper than msgpack-c reads, 32 levels)",
                 length);
        result = -1;
    } else if (offset != length) {
        snprintf(why, why_size, "%zu bytes follow the msgpack value: pass exactly one value",
                 length - offset);
        result = -1;
    } else {
        result = check(&unpacked.data, depth, why, why_size);
    }
    msgpack_unpacked_destroy(&unpacked);
    return result;
}
