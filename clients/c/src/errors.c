/* Return codes and their messages: per thread, and per client handle. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

static CD_THREAD_LOCAL char thread_error[CD_ERROR_BYTES];

const char *collectord_strerror(int code)
{
    switch (code) {
    case COLLECTORD_OK: return "success";
    case COLLECTORD_E_ARGUMENT: return "invalid argument";
    case COLLECTORD_E_JSON: return "invalid JSON";
    case COLLECTORD_E_MSGPACK: return "invalid msgpack value";
    case COLLECTORD_E_TOO_LARGE: return "message larger than the daemon accepts";
    case COLLECTORD_E_CLOSED: return "client closed";
    case COLLECTORD_E_TIMEOUT: return "no answer from the daemon in time";
    case COLLECTORD_E_REFUSED: return "the daemon refused the request";
    case COLLECTORD_E_TRANSPORT: return "ZeroMQ socket error";
    case COLLECTORD_E_MEMORY: return "out of memory";
    case COLLECTORD_E_BUFFER: return "output buffer too small";
    case COLLECTORD_E_INTERNAL: return "internal error";
    default: return "unknown return code";
    }
}

const char *collectord_last_error(void) { return thread_error; }

int cd_fail(collectord_client *client, int code, const char *format, ...)
{
    va_list arguments;
    va_start(arguments, format);
    vsnprintf(thread_error, sizeof thread_error, format, arguments);
    va_end(arguments);
    if (client != NULL) {
        cd_mutex_lock(&client->lock);
        memcpy(client->error, thread_error, sizeof client->error);
        cd_mutex_unlock(&client->lock);
    }
    return code;
}

int collectord_client_error(collectord_client *client, char *buffer, size_t size)
{
    size_t length;
    if (client == NULL) return cd_fail(NULL, COLLECTORD_E_ARGUMENT, "client is NULL");
    cd_mutex_lock(&client->lock);
    length = strlen(client->error);
    if (buffer != NULL && size > 0) {
        size_t copied = length < size - 1 ? length : size - 1;
        memcpy(buffer, client->error, copied);
        buffer[copied] = '\0';
    }
    cd_mutex_unlock(&client->lock);
    return (int)length;
}
